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


def evaluate_policy(
    model,
    tokenizer,
    task: Task,
    prompts: Sequence[str],
    seed: int = 0,
    max_new_tokens: int = 128,
    temperature: float = 1.0,
    with_reference: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> EvalReport:
    """Sample one response per prompt, score it with the task's oracle, and average.

    With ``with_reference`` (a PEFT model), pi_ref's responses come from the same model with
    its adapter disabled, and the win-rate counts prompts where the policy's reward is higher.
    """
    if not prompts:
        raise ValueError("no prompts to evaluate on")
    if with_reference and not hasattr(model, "disable_adapter"):
        raise ValueError("a win-rate against pi_ref needs a model with a LoRA adapter")
    settings = GenerationSettings(temperature=temperature, max_new_tokens=max_new_tokens)
    responses = [g[0] for g in generate(model, tokenizer, prompts, 1, settings, seed=seed, progress=progress)]
    rewards = [task.reward(p, r) for p, r in zip(prompts, responses, strict=True)]
    mean, se = mean_and_se(rewards)
    if not with_reference:
        return EvalReport(mean=mean, se=se, n=len(rewards))
    with model.disable_adapter():
        ref = [g[0] for g in generate(model, tokenizer, prompts, 1, settings, seed=seed)]
    ref_rewards = [task.reward(p, r) for p, r in zip(prompts, ref, strict=True)]
    ref_mean, ref_se = mean_and_se(ref_rewards)
    wins = [1.0 if a > b else 0.5 if a == b else 0.0 for a, b in zip(rewards, ref_rewards, strict=True)]
    return EvalReport(mean, se, len(rewards), win_rate=float(np.mean(wins)), ref_mean=ref_mean, ref_se=ref_se)
