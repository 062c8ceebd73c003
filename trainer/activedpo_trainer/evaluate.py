"""Evaluation on held-out prompts: the mean oracle (or reward-model) reward of a policy's responses, its
win-rate against pi_ref, and the preference accuracy of its implicit reward on judged held-out pairs.

Preference accuracy is the lower-noise metric: DPO's implicit reward β·log π_θ(y|x)/π_ref(y|x) (the
quantity ActiveDPO's uncertainty is about) ranks the two responses of each held-out pair, and the
judge (the task's oracle, or a reward model) says which is better. It needs log-probabilities only
(no sampling from the trained policy), so its run-to-run noise is that of the training, not of the
evaluation. β > 0 does not change a sign, so it does not enter. At π_ref every margin is zero and a
tie counts ½: the accuracy of π_ref is exactly 0.5.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import numpy as np

from activedpo_trainer.generation import GenerationSettings, generate
from activedpo_trainer.tasks import Task


@dataclass(frozen=True)
class EvalReport:
    """Mean reward ± standard error over ``n`` prompts (``samples`` sampled responses each; the standard
    error is over prompts, each prompt's mean being one observation)."""

    reward: float  # the mean reward (the name every run artifact gives it: eval.json, metrics.jsonl, reports)
    se: float
    n: int
    win_rate: float | None = None  # vs pi_ref (adapter disabled) on the same prompts; ties count 1/2
    ref_reward: float | None = None
    ref_se: float | None = None
    samples: int = 1

    def to_dict(self) -> dict:
        return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict) -> EvalReport:
        """Also reads what earlier versions wrote (``mean``, ``ref_mean``), e.g. a cached world's SFT evaluation."""
        legacy = {"mean": "reward", "ref_mean": "ref_reward"}
        return cls(**{legacy.get(k, k): v for k, v in data.items()})

    def __str__(self) -> str:
        s = f"mean reward {self.reward:.3f} ± {self.se:.3f} (n={self.n})"
        if self.win_rate is not None:
            s += f", win-rate vs pi_ref {self.win_rate:.1%} (pi_ref {self.ref_reward:.3f} ± {self.ref_se:.3f})"
        return s


def mean_and_se(values: Sequence[float]) -> tuple[float, float]:
    """Mean and standard error of the mean (sample std / sqrt n; 0 for a single value)."""
    a = np.asarray(values, dtype=np.float64)
    if a.size == 0:
        raise ValueError("no values to average")
    se = float(a.std(ddof=1) / math.sqrt(a.size)) if a.size > 1 else 0.0
    return float(a.mean()), se


Scorer = Callable[[Sequence[str], Sequence[str]], Sequence[float]]  # (prompts, responses) -> one reward each


def task_scorer(task: Task) -> Scorer:
    """A task's hidden oracle as a scorer."""
    return lambda prompts, responses: [task.reward(p, r) for p, r in zip(prompts, responses, strict=True)]


def evaluate_policy(
    model,
    tokenizer,
    scorer: Scorer | Task,
    prompts: Sequence[str],
    seed: int = 0,
    max_new_tokens: int = 128,
    temperature: float = 1.0,
    with_reference: bool = False,
    progress: Callable[[int, int], None] | None = None,
    top_p: float = 1.0,
    samples: int = 1,
) -> EvalReport:
    """Sample ``samples`` responses per prompt, score them (a task's oracle or a reward model), and average
    (per prompt first, so the standard error is over prompts).

    With ``with_reference`` (a PEFT model), pi_ref's responses come from the same model with
    its adapter disabled, and the win-rate counts prompts where the policy's mean reward is higher.
    """
    if not prompts:
        raise ValueError("no prompts to evaluate on")
    if samples < 1:
        raise ValueError(f"samples must be at least 1, got {samples}")
    if with_reference and not hasattr(model, "disable_adapter"):
        raise ValueError("a win-rate against pi_ref needs a model with a LoRA adapter")
    score = task_scorer(scorer) if isinstance(scorer, Task) else scorer
    settings = GenerationSettings(temperature=temperature, top_p=top_p, max_new_tokens=max_new_tokens)

    def per_prompt(groups: list[list[str]]) -> np.ndarray:
        flat_p = [p for p, g in zip(prompts, groups, strict=True) for _ in g]
        flat_r = [r for g in groups for r in g]
        return np.asarray([float(x) for x in score(flat_p, flat_r)]).reshape(len(prompts), samples).mean(axis=1)

    rewards = per_prompt(generate(model, tokenizer, prompts, samples, settings, seed=seed, progress=progress))
    mean, se = mean_and_se(rewards)
    if not with_reference:
        return EvalReport(reward=mean, se=se, n=len(rewards), samples=samples)
    with model.disable_adapter():
        ref_rewards = per_prompt(generate(model, tokenizer, prompts, samples, settings, seed=seed))
    ref_mean, ref_se = mean_and_se(ref_rewards)
    wins = [1.0 if a > b else 0.5 if a == b else 0.0 for a, b in zip(rewards, ref_rewards, strict=True)]
    return EvalReport(mean, se, len(rewards), win_rate=float(np.mean(wins)), ref_reward=ref_mean, ref_se=ref_se,
                      samples=samples)  # fmt: skip


@dataclass(frozen=True)
class JudgedPairs:
    """Held-out pairs (distinct responses to one prompt), each with the judge's verdict and, once
    scored, π_ref's log-probabilities of both responses (they never change, so they are kept)."""

    prompts: list[str]
    a: list[str]
    b: list[str]
    a_better: list[bool]  # the judge's reward of a is higher (pairs the judge ties are left out)
    ref_a: list[float] | None = None
    ref_b: list[float] | None = None

    def __len__(self) -> int:
        return len(self.prompts)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> JudgedPairs:
        return cls(**{k: d.get(k) for k in ("prompts", "a", "b", "a_better", "ref_a", "ref_b")})


def judged_pairs(model, tokenizer, scorer: Scorer | Task, prompts: Sequence[str], samples: int, seed: int,
                 settings: GenerationSettings, max_pairs: int | None = None,
                 progress: Callable[[int, int], None] | None = None) -> JudgedPairs:  # fmt: skip
    """``samples`` responses per prompt from ``model`` (as it is: disable a policy's adapter for π_ref
    pairs), every two distinct ones a pair, judged by ``scorer``; pairs the judge ties are dropped.
    At most ``max_pairs`` pairs, drawn evenly over prompts with ``seed``."""
    if samples < 2:
        raise ValueError(f"judged pairs need at least 2 samples per prompt, got {samples}")
    score = task_scorer(scorer) if isinstance(scorer, Task) else scorer
    groups = generate(model, tokenizer, prompts, samples, settings, seed=seed, progress=progress)
    per_prompt = [list(dict.fromkeys(g)) for g in groups]
    flat = [(p, r) for p, d in zip(prompts, per_prompt, strict=True) if len(d) >= 2 for r in d]
    scored = iter(float(x) for x in score([p for p, _ in flat], [r for _, r in flat]))  # one call: the judge batches
    out: tuple[list, list, list, list] = ([], [], [], [])
    for prompt, distinct in zip(prompts, per_prompt, strict=True):
        if len(distinct) < 2:
            continue
        rewards = [next(scored) for _ in distinct]
        for i in range(len(distinct)):
            for j in range(i + 1, len(distinct)):
                if rewards[i] != rewards[j]:
                    for lst, v in zip(out, (prompt, distinct[i], distinct[j], rewards[i] > rewards[j]), strict=True):
                        lst.append(v)
    keep = np.arange(len(out[0]))
    if max_pairs is not None and len(keep) > max_pairs:
        keep = np.sort(np.random.default_rng([seed, 11]).choice(len(keep), size=max_pairs, replace=False))
    return JudgedPairs(*([lst[i] for i in keep] for lst in out))


def _logprobs_of(model, tokenizer, prompts: Sequence[str], responses: Sequence[str]) -> np.ndarray:
    """log π(y|x) of each (prompt, response), each distinct pair scored once."""
    from activedpo_core.sequences import sequence_logprobs

    keys = list(dict.fromkeys(zip(prompts, responses, strict=True)))
    values = sequence_logprobs(model, tokenizer, [k[0] for k in keys], [k[1] for k in keys])
    index = {k: v for k, v in zip(keys, values, strict=True)}
    return np.asarray([index[k] for k in zip(prompts, responses, strict=True)], dtype=np.float64)


def with_reference_logprobs(model, tokenizer, pairs: JudgedPairs) -> JudgedPairs:
    """``pairs`` with π_ref's log-probabilities filled in (``model`` is π_ref, or a policy whose adapter is
    disabled by the caller)."""
    from dataclasses import replace

    ref_a = _logprobs_of(model, tokenizer, pairs.prompts, pairs.a)
    ref_b = _logprobs_of(model, tokenizer, pairs.prompts, pairs.b)
    return replace(pairs, ref_a=ref_a.tolist(), ref_b=ref_b.tolist())


def preference_accuracy(model, tokenizer, pairs: JudgedPairs) -> tuple[float, float]:
    """(accuracy, its standard error over prompts) of the implicit reward log π_θ/π_ref on judged pairs:
    a pair counts 1 when the response the judge prefers has the larger implicit reward, ½ on a tie.

    ``model`` is the policy π_θ; π_ref's log-probabilities come from ``pairs`` (see
    :func:`with_reference_logprobs`), or, when absent, from ``model`` with its adapter disabled."""
    if len(pairs) == 0:
        raise ValueError("no judged pairs to score")
    if pairs.ref_a is None or pairs.ref_b is None:
        with model.disable_adapter():
            pairs = with_reference_logprobs(model, tokenizer, pairs)
    margin = (_logprobs_of(model, tokenizer, pairs.prompts, pairs.a) - np.asarray(pairs.ref_a)) - (
        _logprobs_of(model, tokenizer, pairs.prompts, pairs.b) - np.asarray(pairs.ref_b)
    )
    signed = np.where(np.asarray(pairs.a_better), margin, -margin)
    correct = np.where(signed > 0, 1.0, np.where(signed == 0, 0.5, 0.0))
    by_prompt: dict[str, list[float]] = {}
    for p, c in zip(pairs.prompts, correct, strict=True):
        by_prompt.setdefault(p, []).append(float(c))
    accuracy = float(correct.mean())
    if len(by_prompt) < 2:
        return accuracy, 0.0
    per = np.asarray([np.mean(v) for v in by_prompt.values()])  # clustered by prompt: pairs share responses
    weights = np.asarray([len(v) for v in by_prompt.values()], dtype=float)
    n = len(per)
    resid = weights * (per - accuracy)
    se = float(np.sqrt(n / (n - 1) * np.sum(resid**2)) / weights.sum())
    return accuracy, se
