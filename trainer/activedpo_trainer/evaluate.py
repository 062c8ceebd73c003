"""Evaluation: mean oracle reward of a policy's responses to held-out prompts, and win-rate vs pi_ref."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import numpy as np

from activedpo_trainer.generation import GenerationSettings, generate
from activedpo_trainer.tasks import Task


@dataclass(frozen=True)
class EvalReport:
    """Mean reward ± standard error over ``n`` prompts (one sampled response each)."""

    mean: float
    se: float
    n: int
    win_rate: float | None = None  # vs pi_ref (adapter disabled) on the same prompts; ties count 1/2
    ref_mean: float | None = None
    ref_se: float | None = None

    def to_dict(self) -> dict:
        return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in asdict(self).items()}

    def __str__(self) -> str:
        s = f"mean reward {self.mean:.3f} ± {self.se:.3f} (n={self.n})"
        if self.win_rate is not None:
            s += f", win-rate vs pi_ref {self.win_rate:.1%} (pi_ref {self.ref_mean:.3f} ± {self.ref_se:.3f})"
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
) -> EvalReport:
    """Sample one response per prompt, score it (a task's oracle or a reward model), and average.

    With ``with_reference`` (a PEFT model), pi_ref's responses come from the same model with
    its adapter disabled, and the win-rate counts prompts where the policy's reward is higher.
    """
    if not prompts:
        raise ValueError("no prompts to evaluate on")
    if with_reference and not hasattr(model, "disable_adapter"):
        raise ValueError("a win-rate against pi_ref needs a model with a LoRA adapter")
    score = task_scorer(scorer) if isinstance(scorer, Task) else scorer
    settings = GenerationSettings(temperature=temperature, top_p=top_p, max_new_tokens=max_new_tokens)
    responses = [g[0] for g in generate(model, tokenizer, prompts, 1, settings, seed=seed, progress=progress)]
    rewards = [float(x) for x in score(prompts, responses)]
    mean, se = mean_and_se(rewards)
    if not with_reference:
        return EvalReport(mean=mean, se=se, n=len(rewards))
    with model.disable_adapter():
        ref = [g[0] for g in generate(model, tokenizer, prompts, 1, settings, seed=seed)]
    ref_rewards = [float(x) for x in score(prompts, ref)]
    ref_mean, ref_se = mean_and_se(ref_rewards)
    wins = [1.0 if a > b else 0.5 if a == b else 0.0 for a, b in zip(rewards, ref_rewards, strict=True)]
    return EvalReport(mean, se, len(rewards), win_rate=float(np.mean(wins)), ref_mean=ref_mean, ref_se=ref_se)
