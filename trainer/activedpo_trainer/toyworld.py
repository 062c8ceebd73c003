"""The embedded toy world: a synthetic instruction task, its hidden oracle and a tiny SFT model.

No network exists at run time, yet the main job has to run out of the box. So activedpo
builds its own small world, locally and deterministically from a seed:

* a prompt pool, ``write a <form> about <topic> for <audience> in <n> words :``, split into
  train and held-out prompts;
* a hidden oracle reward r*(x, y) over several independent attributes of the response: words
  on the prompt's topic, sentiment, length against the asked length, repetition (see
  :meth:`ToyTask.reward`). Two depend on the prompt, two do not;
* a word-level tokenizer trained with ``tokenizers`` and a tiny Llama-architecture causal LM
  SFT-trained from scratch on noisy demonstrations, saved in Hugging Face format. That model
  is pi_ref, and it is loaded through exactly the checkpoint code that loads a real 7B model.

The demonstrations are deliberately mediocre (some off-topic words, negative words, wrong
lengths, repeats), so the SFT policy has a mediocre mean reward and a wide spread between its
own samples: pairs of its responses carry signal, and different pairs teach different things.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from activedpo_trainer.checkpoint import CheckpointManifest
from activedpo_trainer.evaluate import EvalReport

WORLD_FORMAT = 1  # bump when a change to this module changes what a given config builds

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
MAX_POSITIONS = 64  # tokens a toy-world model holds: prompt, response and end of sequence
PROMPT_WORDS = ("write", "a", "about", "for", "in", "words", ":")

PAD, EOS, UNK = "<pad>", "<eos>", "<unk>"

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


BUILTIN_TASKS: dict[str, type[ToyTask]] = {"toy": ToyTask, "signoff": SignoffTask}


def load_task(spec: str, seed: int = 0, n_heldout: int = 200):
    """The task named ``spec``: a built-in (``toy``, ``signoff``) or ``package.module:factory``.

    A factory is called as ``factory(seed=seed)`` and must return an object with the
    :class:`~activedpo_trainer.tasks.Task` methods; the current directory is importable, as
    with ``python -m``. Errors name what is wrong with ``spec``.
    """
    import importlib
    import sys

    from activedpo_trainer.tasks import Task

    if spec in BUILTIN_TASKS:
        return BUILTIN_TASKS[spec](seed=seed, n_heldout=n_heldout)
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise ValueError(
            f"unknown task {spec!r}: use a built-in ({', '.join(BUILTIN_TASKS)}) or package.module:factory"
        )
    if "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise ValueError(f"task {spec!r}: cannot import module {module_name!r} ({e})") from None
    factory = getattr(module, attr, None)
    if not callable(factory):
        raise ValueError(f"task {spec!r}: module {module_name!r} has no callable {attr!r}")
    try:
        task = factory(seed=seed)
    except TypeError as e:
        raise ValueError(f"task {spec!r}: calling the factory as factory(seed={seed}) failed: {e}") from None
    if not isinstance(task, Task):
        missing = [
            m for m in ("name", "train_prompts", "heldout_prompts", "sft_corpus", "reward") if not hasattr(task, m)
        ]
        raise ValueError(f"task {spec!r}: the factory returned {type(task).__name__}, which lacks {', '.join(missing)}")
    return task


def task_slug(spec: str) -> str:
    """A task spec as a file-name part: ``pkg.mod:make`` → ``pkg_mod_make``."""
    return "".join(c if c.isalnum() else "_" for c in spec)


def task_vocabulary(task, corpus: list[tuple[str, str]]) -> list[str]:
    """The task's own ``vocabulary()`` when it has one, else every word of its prompts and corpus."""
    if hasattr(task, "vocabulary"):
        return list(task.vocabulary())
    words = [w for p in task.train_prompts() + task.heldout_prompts() for w in p.split()]
    words += [w for p, r in corpus for w in (p + r).split()]
    return list(dict.fromkeys(words))


@dataclass(frozen=True)
class ToyWorldConfig:
    """Everything that determines a toy world; its hash names the cache directory."""

    name: str = "default"
    seed: int = 0
    n_heldout: int = 200
    task: str = "toy"  # a built-in task or package.module:factory (see load_task)
    # model: a 2-layer Llama, ~0.35 M parameters; big enough to learn the task, small enough for CPUs
    hidden_size: int = 128
    intermediate_size: int = 256
    num_layers: int = 2
    num_heads: int = 4
    # SFT from scratch on the noisy demonstrations
    sft_examples: int = 20_000
    sft_steps: int = 1_200
    sft_batch_size: int = 64
    sft_lr: float = 3e-3
    # evaluation of pi_ref recorded at build time
    eval_prompts: int = 100
    max_new_tokens: int = MAX_RESPONSE_WORDS + 2

    @classmethod
    def preset(cls, name: str, seed: int = 0, task: str = "toy") -> ToyWorldConfig:
        """``default``: the world the quickstart uses. ``tiny``: builds in seconds, for tests."""
        if name == "default":
            return cls(name="default", seed=seed, task=task)
        if name == "tiny":
            return cls(
                name="tiny",
                seed=seed,
                task=task,
                hidden_size=32,
                intermediate_size=64,
                num_layers=1,
                num_heads=2,
                sft_examples=2_000,
                sft_steps=150,
                sft_batch_size=32,
                eval_prompts=20,
            )
        raise ValueError(f"unknown toy world preset {name!r}; choose 'default' or 'tiny'")

    def make_task(self):
        return load_task(self.task, seed=self.seed, n_heldout=self.n_heldout)

    def key(self) -> str:
        fields = dataclasses.asdict(self)
        if fields["task"] == "toy":  # worlds built before tasks were pluggable keep their key
            del fields["task"]
        payload = json.dumps({"format": WORLD_FORMAT, **fields}, sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()[:12]


@dataclass
class ToyWorld:
    """A built world on disk: ``root/world.json`` and the SFT checkpoint in ``root/sft``."""

    root: Path
    config: ToyWorldConfig
    info: dict
    _task: object = field(default=None, repr=False)

    @property
    def task(self):
        if self._task is None:
            self._task = self.config.make_task()
        return self._task

    @property
    def sft_dir(self) -> Path:
        return self.root / "sft"

    @property
    def sft_checkpoint(self) -> CheckpointManifest:
        return CheckpointManifest.load(self.sft_dir)


def default_cache_dir() -> Path:
    """``$ACTIVEDPO_CACHE``, else ``$XDG_CACHE_HOME/activedpo``, else ``~/.cache/activedpo``."""
    if os.environ.get("ACTIVEDPO_CACHE"):
        return Path(os.environ["ACTIVEDPO_CACHE"]).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "activedpo"


def world_dir(config: ToyWorldConfig, cache_dir: Path | None = None) -> Path:
    slug = "" if config.task == "toy" else task_slug(config.task) + "-"
    return Path(cache_dir or default_cache_dir()) / "toyworld" / f"{config.name}-{slug}{config.key()}"


def load_toyworld(path: str | Path) -> ToyWorld:
    """Open a built world from its directory; a clear error when it is missing or incomplete."""
    root = Path(path)
    info_path = root / "world.json"
    if not info_path.is_file():
        raise FileNotFoundError(
            f"no toy world at {root}: {info_path} is missing; build one with `activedpo-client toyworld build`"
        )
    try:
        info = json.loads(info_path.read_text())
        config = ToyWorldConfig(**info["config"])
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise ValueError(f"corrupt toy world description {info_path}: {e}") from e
    return ToyWorld(root=root, config=config, info=info)


def build_toyworld(
    config: ToyWorldConfig | None = None,
    cache_dir: Path | None = None,
    force: bool = False,
    progress: Callable[[str, int, int], None] | None = None,
) -> ToyWorld:
    """Build the world for ``config`` (or reuse the cached one) and return it.

    The build is written to a temporary directory next to the cache entry and renamed into
    place at the end, so an interrupted build never leaves a half-world that looks complete.
    ``progress(stage, done, total)`` is called during SFT and evaluation.
    """
    import torch

    from activedpo_trainer.checkpoint import load_model
    from activedpo_trainer.sft import SFTSettings, train_sft

    config = config or ToyWorldConfig()
    root = world_dir(config, cache_dir)
    if (root / "world.json").is_file() and not force:
        return load_toyworld(root)

    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}.", dir=root.parent))
    try:
        t0 = time.perf_counter()
        task = config.make_task()
        longest = max(len(p.split()) for p in task.train_prompts() + task.heldout_prompts())
        if longest + config.max_new_tokens + 1 > MAX_POSITIONS:
            raise ValueError(f"task {config.task!r} has a prompt of {longest} words; a toy-world model holds "
                             f"{MAX_POSITIONS} tokens, {config.max_new_tokens} of them for the response")  # fmt: skip
        torch.manual_seed(config.seed)
        corpus = task.sft_corpus(config.sft_examples, seed=config.seed)
        tokenizer = build_tokenizer(task_vocabulary(task, corpus))
        model = _new_model(config, tokenizer)
        settings = SFTSettings(
            steps=config.sft_steps, batch_size=config.sft_batch_size, lr=config.sft_lr, seed=config.seed
        )
        losses = train_sft(model, tokenizer, corpus, settings, progress=progress)
        sft_dir = tmp / "sft"
        model.generation_config.max_new_tokens = config.max_new_tokens
        model.save_pretrained(sft_dir)
        tokenizer.save_pretrained(sft_dir)
        # base "." = this directory: the world stays loadable wherever the cache is moved
        manifest = CheckpointManifest.new(base=".", adapter=None, parent_id=None, id=f"toyworld-{config.key()}-sft")
        manifest.save(sft_dir)
        build_seconds = time.perf_counter() - t0

        # pi_ref's figures, through the same loading path every checkpoint takes
        n_eval = min(config.eval_prompts, len(task.heldout_prompts()))  # a small task may hold out fewer
        report = heldout_eval(load_model(sft_dir), config, n_eval, config.seed, progress=progress)
        info = {
            "format": WORLD_FORMAT,
            "config": dataclasses.asdict(config),
            "key": config.key(),
            "build_seconds": round(build_seconds, 2),
            "sft_final_loss": round(float(np.mean(losses[-20:])), 4),
            "sft_eval": report.to_dict(),
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        (tmp / "world.json").write_text(json.dumps(info, indent=2) + "\n")
        if root.exists() and force:  # replace the old world only once the new one is complete
            shutil.rmtree(root)
        try:
            os.replace(tmp, root)
        except OSError:
            if not (root / "world.json").is_file():
                raise
            shutil.rmtree(tmp)  # another process finished the same world first: same config, same world
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return load_toyworld(root)


def heldout_eval(
    loaded,
    config: ToyWorldConfig,
    n_prompts: int,
    seed: int,
    with_reference: bool = False,
    progress: Callable[[str, int, int], None] | None = None,
    temperature: float = 1.0,
) -> EvalReport:
    """Evaluate a loaded checkpoint on the world's first ``n_prompts`` held-out prompts."""
    from activedpo_trainer.evaluate import evaluate_policy

    task = config.make_task()
    held = task.heldout_prompts()
    if n_prompts > len(held):
        raise ValueError(f"{n_prompts} held-out prompts asked for, but this world holds out {len(held)}")
    return evaluate_policy(
        loaded.model,
        loaded.tokenizer,
        task,
        held[:n_prompts],
        seed=seed,
        max_new_tokens=config.max_new_tokens,
        temperature=temperature,
        with_reference=with_reference,
        progress=(lambda d, t: progress("evaluate", d, t)) if progress else None,
    )


def build_tokenizer(vocabulary: list[str]):
    """A word-level tokenizer over ``vocabulary`` (trained with ``tokenizers``), wrapped for transformers."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel(unk_token=UNK))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.decoder = decoders.WordPiece(prefix="##", cleanup=False)  # joins words with single spaces
    trainer = trainers.WordLevelTrainer(special_tokens=[PAD, EOS, UNK], min_frequency=1)
    tok.train_from_iterator([" ".join(vocabulary)], trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token=PAD,
        eos_token=EOS,
        unk_token=UNK,
        model_max_length=MAX_POSITIONS,
        padding_side="left",  # generation pads on the left; training code sets what it needs
    )


def _new_model(config: ToyWorldConfig, tokenizer):
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=config.hidden_size,
        intermediate_size=config.intermediate_size,
        num_hidden_layers=config.num_layers,
        num_attention_heads=config.num_heads,
        num_key_value_heads=config.num_heads,
        max_position_embeddings=MAX_POSITIONS,
        tie_word_embeddings=True,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=None,
    )
    return LlamaForCausalLM(cfg)


@dataclass(frozen=True)
class DPOCheck:
    """Does DPO on the SFT policy's own oracle-labeled samples improve it? (See :func:`dpo_check`.)"""

    pairs: int
    pair_reward_gap: float  # mean |r*(y1) − r*(y2)| over the labeled pairs: how much signal a pair carries
    train_seconds: float
    report: EvalReport  # the DPO checkpoint, with pi_ref (SFT) on the same prompts as reference

    def to_dict(self) -> dict:
        return {
            "pairs": self.pairs,
            "pair_reward_gap": round(self.pair_reward_gap, 4),
            "train_seconds": round(self.train_seconds, 2),
            **self.report.to_dict(),
        }


def dpo_check(
    world: ToyWorld,
    out_dir: str | Path,
    n_pairs: int = 200,
    seed: int = 0,
    eval_prompts: int = 100,
    settings=None,
    progress: Callable[[str, int, int], None] | None = None,
) -> DPOCheck:
    """Sample two responses from pi_ref for ``n_pairs`` train prompts, label each pair with the
    oracle (Bradley-Terry draws), train one DPO round (fresh LoRA, ``settings`` or the paper's
    defaults) into ``out_dir``, and evaluate it against pi_ref on ``eval_prompts`` held-out prompts.
    """
    from activedpo_trainer.checkpoint import load_model
    from activedpo_trainer.dpo import train_dpo
    from activedpo_trainer.generation import GenerationSettings, generate
    from activedpo_trainer.tasks import label_pairs

    task = world.task
    train = task.train_prompts()
    if not 0 < n_pairs <= len(train):
        raise ValueError(f"n_pairs must be in 1..{len(train)}, got {n_pairs}")
    rng = np.random.default_rng([seed, 3])
    prompts = [train[i] for i in rng.choice(len(train), size=n_pairs, replace=False)]
    sft = load_model(world.sft_dir)
    responses = generate(
        sft.model,
        sft.tokenizer,
        prompts,
        2,
        GenerationSettings(max_new_tokens=world.config.max_new_tokens),
        seed=seed,
        progress=(lambda d, t: progress("generate", d, t)) if progress else None,
    )
    pairs = [(g[0], g[1]) for g in responses]
    gap = float(np.mean([abs(task.reward(p, a) - task.reward(p, b)) for p, (a, b) in zip(prompts, pairs, strict=True)]))
    rows = label_pairs(task, prompts, pairs, rng)
    t0 = time.perf_counter()
    manifest = train_dpo(
        world.sft_checkpoint,
        rows,
        out_dir,
        settings,
        progress=(lambda d, t: progress("dpo", d, t)) if progress else None,
    )
    seconds = time.perf_counter() - t0
    report = heldout_eval(load_model(manifest), world.config, eval_prompts, seed, True, progress)
    return DPOCheck(pairs=n_pairs, pair_reward_gap=gap, train_seconds=seconds, report=report)
