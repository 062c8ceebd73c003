"""Held-out evaluation of a toy world's checkpoints, and the world's DPO sanity check."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from activedpo_trainer.evaluate import EvalReport

if TYPE_CHECKING:  # types only: toyworld imports this module to evaluate the world it builds
    from activedpo_trainer.toyworld import ToyWorld, ToyWorldConfig


def heldout_eval(
    loaded,
    config: ToyWorldConfig,
    n_prompts: int,
    seed: int,
    with_reference: bool = False,
    progress: Callable[[str, int, int], None] | None = None,
    temperature: float = 1.0,
    samples: int = 1,
) -> EvalReport:
    """Evaluate a loaded checkpoint on the world's first ``n_prompts`` held-out prompts (``samples`` each)."""
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
        samples=samples,
    )


@dataclass(frozen=True)
class DPOCheck:
    """Does DPO on the SFT policy's own oracle-labeled samples improve it? (See :func:`dpo_check`.)"""

    pairs: int
    pair_reward_gap: float  # mean |r*(y1) − r*(y2)| over the labeled pairs: how much signal a pair carries
    train_seconds: float
    report: EvalReport  # the DPO checkpoint, with pi_ref (SFT) on the same prompts as reference
    pref_acc: float | None = None  # its implicit reward's accuracy on judged held-out pairs of pi_ref's samples
    pref_acc_se: float | None = None
    pref_pairs: int = 0

    def to_dict(self) -> dict:
        return {
            "pairs": self.pairs,
            "pair_reward_gap": round(self.pair_reward_gap, 4),
            "train_seconds": round(self.train_seconds, 2),
            **self.report.to_dict(),
            "pref_acc": None if self.pref_acc is None else round(self.pref_acc, 4),
            "pref_acc_se": None if self.pref_acc_se is None else round(self.pref_acc_se, 4),
            "pref_pairs": self.pref_pairs,
        }


def dpo_check(
    world: ToyWorld,
    out_dir: str | Path,
    n_pairs: int = 200,
    seed: int = 0,
    eval_prompts: int = 100,
    settings=None,
    progress: Callable[[str, int, int], None] | None = None,
    eval_samples: int = 1,
    pair_samples: int = 0,
) -> DPOCheck:
    """Sample two responses from pi_ref for ``n_pairs`` train prompts, label each pair with the
    oracle (Bradley-Terry draws), train one DPO round (fresh LoRA, ``settings`` or the paper's
    defaults) into ``out_dir``, and evaluate it against pi_ref on ``eval_prompts`` held-out prompts
    (``eval_samples`` each); with ``pair_samples`` ≥ 2, also the preference accuracy of its implicit
    reward on judged pairs of that many pi_ref samples per held-out prompt.
    """
    from activedpo_core.checkpoint import load_model
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
    policy = load_model(manifest)
    report = heldout_eval(policy, world.config, eval_prompts, seed, True, progress, samples=eval_samples)
    if pair_samples < 2:
        return DPOCheck(pairs=n_pairs, pair_reward_gap=gap, train_seconds=seconds, report=report)
    from activedpo_trainer.evaluate import judged_pairs, preference_accuracy

    held = task.heldout_prompts()[:eval_prompts]
    settings_ = GenerationSettings(max_new_tokens=world.config.max_new_tokens)
    with policy.model.disable_adapter():
        pairs = judged_pairs(policy.model, policy.tokenizer, task, held, pair_samples, seed + 7919, settings_)
    acc, se = preference_accuracy(policy.model, policy.tokenizer, pairs)
    return DPOCheck(pairs=n_pairs, pair_reward_gap=gap, train_seconds=seconds, report=report, pref_acc=acc,
                    pref_acc_se=se, pref_pairs=len(pairs))  # fmt: skip
