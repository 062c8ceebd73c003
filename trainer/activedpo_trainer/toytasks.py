"""The built-in toy tasks: a synthetic instruction task (``toy``), a sparse-behaviour one (``signoff``) and
one whose pool is mostly uninformative (``mixed``).

Prompts look like ``write a <form> about <topic> for <audience> in <n> words :``. The hidden
oracle reward r*(x, y) scores independent attributes of the response (see
:meth:`ToyTask.reward`); the SFT corpus comes from deliberately mediocre writers, so pi_ref's
own samples spread widely in reward and different pairs teach different things.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np

TOPICS: dict[str, tuple[str, ...]] = {
    "ocean": ("wave", "tide", "reef", "coral", "shell", "salt"),
    "forest": ("tree", "moss", "fern", "oak", "pine", "leaf"),
    "city": ("street", "tower", "bridge", "traffic", "subway", "market"),
    "desert": ("sand", "dune", "cactus", "camel", "mirage", "oasis"),
    "space": ("star", "planet", "comet", "orbit", "rocket", "galaxy"),
    "music": ("melody", "rhythm", "drum", "guitar", "chord", "song"),
    "kitchen": ("bread", "spice", "oven", "soup", "knife", "pepper"),
    "garden": ("rose", "tulip", "soil", "seed", "bloom", "hedge"),
    "winter": ("snow", "frost", "ice", "sled", "scarf", "blizzard"),
    "school": ("teacher", "lesson", "chalk", "pencil", "exam", "library"),
    "river": ("stream", "bank", "canoe", "current", "delta", "rapids"),
    "mountain": ("peak", "summit", "cliff", "ridge", "glacier", "boulder"),
}
POSITIVE = ("bright", "warm", "kind", "gentle", "lovely", "joyful", "calm", "sunny")
NEGATIVE = ("dull", "cold", "harsh", "grim", "bleak", "sour", "dreary", "gray")
FILLER = ("the", "a", "and", "with", "very", "some", "many", "near", "under", "over", "its", "our")
FORMS = ("note", "poem", "story", "line", "verse")
AUDIENCES = ("kids", "friends", "sailors", "travelers")
LENGTHS = tuple(range(4, 11))
MAX_RESPONSE_WORDS = 14
PROMPT_WORDS = ("write", "a", "about", "for", "in", "words", ":")

_TOPIC_OF_WORD = {w: t for t, words in TOPICS.items() for w in words}
_POSITIVE, _NEGATIVE = frozenset(POSITIVE), frozenset(NEGATIVE)


def format_prompt(form: str, topic: str, audience: str, n: int) -> str:
    return f"write a {form} about {topic} for {audience} in {n} words :"


def parse_prompt(prompt: str) -> tuple[str, int]:
    """(topic, n) of a toy-world prompt; ``ValueError`` naming the prompt otherwise."""
    w = prompt.split()
    if len(w) != 11 or w[:2] != ["write", "a"] or w[3] != "about" or w[7] != "in" or w[9:] != ["words", ":"]:
        raise ValueError(f"not a toy-world prompt: {prompt!r}")
    topic, n = w[4], w[8]
    if topic not in TOPICS or not n.isdigit():
        raise ValueError(f"not a toy-world prompt: {prompt!r}")
    return topic, int(n)


@dataclass(frozen=True)
class RewardWeights:
    """Weights of the oracle's attributes; each one is a separate thing a pair can teach."""

    on_topic: float = 0.5  # per distinct word of the prompt's topic
    off_topic: float = 0.5  # per word of another topic (penalty)
    sentiment: float = 0.5  # per positive word, minus per negative word
    length: float = 0.3  # per word away from the asked length (penalty)
    repeat: float = 0.5  # per repeated word (penalty)


@dataclass(frozen=True)
class ToyTask:
    """The toy world's task (implements :class:`activedpo_trainer.tasks.Task`).

    The prompt pool is every combination of form, topic, audience and length (1,680
    prompts; form and audience do not matter to the oracle); ``n_heldout`` of them, chosen
    by ``seed``, are held out for evaluation.
    """

    seed: int = 0
    n_heldout: int = 200
    weights: RewardWeights = field(default_factory=RewardWeights)
    name: str = "toy"
    # DPO settings chosen on random labels only by benchmarks/dpo_sweep.py (results/dpo_sweep.md)
    dpo_settings: ClassVar[dict] = {"lr": 3e-4, "epochs": 4.0, "beta": 0.3}

    def _split(self) -> tuple[list[str], list[str]]:
        prompts = [
            format_prompt(form, topic, aud, n)
            for form in FORMS
            for topic in TOPICS
            for aud in AUDIENCES
            for n in LENGTHS
        ]
        order = np.random.default_rng([self.seed, 1]).permutation(len(prompts))
        heldout = [prompts[i] for i in order[: self.n_heldout]]
        train = [prompts[i] for i in order[self.n_heldout :]]
        return train, heldout

    def train_prompts(self) -> list[str]:
        return self._split()[0]

    def heldout_prompts(self) -> list[str]:
        return self._split()[1]

    def reward(self, prompt: str, response: str) -> float:
        """r*(x, y) = w_on·|distinct on-topic| − w_off·#other-topic + w_sent·(#positive − #negative)
        − w_len·|#words − n| − w_rep·#repeats, rounded to 6 decimals."""
        topic, n = parse_prompt(prompt)
        words = response.split()
        on = len({w for w in words if _TOPIC_OF_WORD.get(w) == topic})
        off = sum(1 for w in words if w in _TOPIC_OF_WORD and _TOPIC_OF_WORD[w] != topic)
        pos = sum(1 for w in words if w in _POSITIVE)
        neg = sum(1 for w in words if w in _NEGATIVE)
        repeats = len(words) - len(set(words))
        w = self.weights
        r = (
            w.on_topic * on
            - w.off_topic * off
            + w.sentiment * (pos - neg)
            - w.length * abs(len(words) - n)
            - w.repeat * repeats
        )
        return round(r, 6)

    def sft_corpus(self, n: int, seed: int) -> list[tuple[str, str]]:
        """Demonstrations by a crowd of mediocre writers (responses continue their prompts).

        Each demonstration comes from a writer with four independent binary traits, each a
        coin flip: *focused* (50% of words on the topic and 5% on other topics, against 20%
        and 30%), *upbeat* (its sentiment words, 20% of all, are all positive, else all
        negative), *careful* (never repeats a word; careless writers draw with replacement)
        and *precise* (length n ± 1, against n ± 4). The SFT policy learns this mixture, so
        its own samples differ along each trait (a wide reward spread), and each trait is a
        separate thing a preference can teach.
        """
        rng = np.random.default_rng([seed, 2])
        train = self.train_prompts()
        other_topics = {t: [w for u, ws in TOPICS.items() if u != t for w in ws] for t in TOPICS}
        out = []
        for i in rng.integers(0, len(train), size=n):
            prompt = train[i]
            topic, length = parse_prompt(prompt)
            focused, upbeat, careful, precise = rng.random(4) < 0.5
            p_on, p_off = (0.5, 0.05) if focused else (0.2, 0.3)
            p_pos, p_neg = (0.2, 0.0) if upbeat else (0.0, 0.2)
            kinds = np.array([p_on, p_off, p_pos, p_neg, 1.0 - p_on - p_off - p_pos - p_neg])
            pools = (TOPICS[topic], other_topics[topic], POSITIVE, NEGATIVE, FILLER)
            spread = 1 if precise else 4
            k = int(np.clip(length + rng.integers(-spread, spread + 1), 1, MAX_RESPONSE_WORDS))
            words: list[str] = []
            while len(words) < k:
                pool = pools[rng.choice(len(pools), p=kinds)]
                word = pool[rng.integers(0, len(pool))]
                if careful and word in words:
                    continue
                words.append(word)
            out.append((prompt, " " + " ".join(words)))  # a response continues its prompt
        return out

    def vocabulary(self) -> list[str]:
        words = list(PROMPT_WORDS) + list(FORMS) + list(TOPICS) + list(AUDIENCES)
        words += [str(n) for n in LENGTHS]
        words += [w for ws in TOPICS.values() for w in ws] + list(POSITIVE) + list(NEGATIVE)
        words += list(FILLER)
        return list(dict.fromkeys(words))  # dedupe, keep order


SIGNOFFS: dict[str, str] = {"kids": "byebye", "friends": "cheers", "sailors": "ahoy", "travelers": "farewell"}
_SIGNOFF_WORDS = frozenset(SIGNOFFS.values())


@dataclass(frozen=True)
class SignoffTask(ToyTask):
    """A task whose best behaviour the SFT data rarely shows, so the policy has to discover it.

    Same prompts as :class:`ToyTask`, another oracle: a response should end with the sign-off
    of the prompt's *audience* (kids ``byebye``, friends ``cheers``, sailors ``ahoy``,
    travelers ``farewell``), worth far more than anything else::

        r* = 1.5·[last word is the audience's sign-off] − 0.5·#other sign-offs
             + 0.3·|distinct on-topic| − 0.3·#other-topic − 0.2·|#words − n| − 0.3·#repeats

    (sign-offs do not count towards the length; sentiment does not matter here). The toy
    oracle ignores the audience; this one keys its largest term on it, a sparse, prompt-
    dependent, position-dependent property. The demonstrations sign off only
    ``signoff_rate`` of the time and with a sign-off drawn at random, so about one SFT
    sample in 27 ends with the right one: pairs that show it are rare in any pool.
    """

    name: str = "signoff"
    signoff_rate: float = 0.15
    dpo_settings: ClassVar[dict] = {"lr": 1e-4, "epochs": 4.0, "beta": 0.3}

    def reward(self, prompt: str, response: str) -> float:
        topic, n = parse_prompt(prompt)
        right = SIGNOFFS[prompt.split()[6]]
        words = response.split()
        body = [w for w in words if w not in _SIGNOFF_WORDS]
        signed = 1.5 if words and words[-1] == right else 0.0
        wrong = sum(1 for w in words if w in _SIGNOFF_WORDS and w != right)
        on = len({w for w in body if _TOPIC_OF_WORD.get(w) == topic})
        off = sum(1 for w in body if w in _TOPIC_OF_WORD and _TOPIC_OF_WORD[w] != topic)
        repeats = len(words) - len(set(words))
        r = signed - 0.5 * wrong + 0.3 * on - 0.3 * off - 0.2 * abs(len(body) - n) - 0.3 * repeats
        return round(r, 6)

    def sft_corpus(self, n: int, seed: int) -> list[tuple[str, str]]:
        """The toy task's mediocre writers; ``signoff_rate`` of them append a random sign-off."""
        rng = np.random.default_rng([seed, 5])
        out = []
        for prompt, response in super().sft_corpus(n, seed):
            if rng.random() < self.signoff_rate:
                response += " " + list(SIGNOFFS.values())[rng.integers(0, len(SIGNOFFS))]
            out.append((prompt, response))
        return out

    def vocabulary(self) -> list[str]:
        return super().vocabulary() + list(SIGNOFFS.values())


SOLVED_TOPICS = ("ocean", "forest", "city", "space", "kitchen", "garden", "river", "mountain", "school")


@dataclass(frozen=True)
class MixedTask(ToyTask):
    """A pool with heterogeneous informativeness, as real on-policy pools are: most pairs teach nothing.

    The toy task's prompts and oracle. On the ``solved_topics`` (9 of 12 by default, three quarters
    of the prompts) the demonstrations come from one expert who already writes the best response:
    exactly ``n`` words, no repeats, ``min(3, n − 1)`` distinct on-topic words and one positive word,
    the rest filler. π_ref's samples there are near-duplicates of equal reward (they differ in which
    on-topic and filler words, and their order), so a pair from a solved prompt is a near-tie: its
    Bradley–Terry label is a coin flip, noise to DPO. The other topics keep the toy task's mediocre
    writers, whose samples differ widely in reward: the minority of pairs that teach. A selector
    that finds them spends the budget where it pays; random selection spends three quarters of it
    on noise.
    """

    name: str = "mixed"
    solved_topics: tuple[str, ...] = SOLVED_TOPICS
    dpo_settings: ClassVar[dict] = {"lr": 1e-4, "epochs": 4.0, "beta": 0.3}

    def is_solved(self, prompt: str) -> bool:
        return parse_prompt(prompt)[0] in self.solved_topics

    def sft_corpus(self, n: int, seed: int) -> list[tuple[str, str]]:
        rng = np.random.default_rng([seed, 7])
        out = []
        for prompt, response in super().sft_corpus(n, seed):
            if self.is_solved(prompt):
                topic, length = parse_prompt(prompt)
                k_on = min(3, length - 1)
                words = list(rng.choice(TOPICS[topic], size=k_on, replace=False))
                words.append(POSITIVE[rng.integers(0, len(POSITIVE))])
                words += list(rng.choice(FILLER, size=length - len(words), replace=False))
                response = " " + " ".join(words[i] for i in rng.permutation(len(words)))
            out.append((prompt, response))
        return out


def mixed_task(solved: int, seed: int = 0, n_heldout: int = 200) -> MixedTask:
    """``mixed`` with ``solved`` of the 12 topics solved (the regime study's fraction of uninformative pairs:
    0 is the toy task's pool, 9 the built-in ``mixed``, 11 leaves one topic in twelve to learn from)."""
    if not 0 <= solved < len(TOPICS):
        raise ValueError(f"solved must be 0..{len(TOPICS) - 1} topics, got {solved}")
    order = [*SOLVED_TOPICS, *(t for t in TOPICS if t not in SOLVED_TOPICS)]
    return MixedTask(seed=seed, n_heldout=n_heldout, name=f"mixed-{solved}", solved_topics=tuple(order[:solved]))


def mixed_6(seed: int = 0) -> MixedTask:
    """Half the topics solved: ``--task activedpo_trainer.toytasks:mixed_6``."""
    return mixed_task(6, seed)


def mixed_11(seed: int = 0) -> MixedTask:
    """Eleven topics in twelve solved: ``--task activedpo_trainer.toytasks:mixed_11``."""
    return mixed_task(11, seed)


BUILTIN_TASKS: dict[str, type[ToyTask]] = {"toy": ToyTask, "signoff": SignoffTask, "mixed": MixedTask}
