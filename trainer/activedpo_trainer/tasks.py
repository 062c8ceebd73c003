"""Tasks: a prompt pool, an SFT corpus and a hidden oracle reward that plays the annotator.

A task is what an alignment run is *about*. activedpo never looks inside the oracle while
selecting: only annotators (the oracle annotator in the toy world, people in production)
see r*(x, y). Preferences are drawn from Bradley-Terry on the oracle reward,

    P(y1 > y2 | x) = sigma(r*(x, y1) - r*(x, y2)),

or, with ``deterministic=True``, the response with the higher reward wins (ties to y1).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np


@runtime_checkable
class Task(Protocol):
    """What a task provides. Prompts are plain strings; responses are what follows them."""

    name: str

    def train_prompts(self) -> list[str]:
        """Prompts the loop may sample candidates from."""
        ...

    def heldout_prompts(self) -> list[str]:
        """Prompts reserved for evaluation; never used for selection or training."""
        ...

    def sft_corpus(self, n: int, seed: int) -> list[tuple[str, str]]:
        """``n`` (prompt, response) demonstrations for supervised fine-tuning of pi_ref."""
        ...

    def reward(self, prompt: str, response: str) -> float:
        """The hidden oracle reward r*(x, y)."""
        ...


def sigmoid(x: float) -> float:
    """Numerically stable logistic function."""
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    z = math.exp(x)
    return z / (1.0 + z)


@dataclass(frozen=True)
class Preference:
    """One oracle judgement of a pair: ``chosen`` is 0 when y1 is preferred, 1 when y2 is."""

    chosen: int
    p_first: float  # P(y1 > y2) under Bradley-Terry
    reward_first: float
    reward_second: float


def bradley_terry_preference(
    task: Task,
    prompt: str,
    first: str,
    second: str,
    rng: np.random.Generator | None = None,
    deterministic: bool = False,
) -> Preference:
    """Judge a pair with the task's oracle.

    With ``deterministic`` the higher reward wins (ties go to ``first``); otherwise the
    winner is drawn from Bradley-Terry with ``rng`` (required then, so draws are seeded).
    """
    r1, r2 = task.reward(prompt, first), task.reward(prompt, second)
    p = sigmoid(r1 - r2)
    if deterministic:
        chosen = 0 if r1 >= r2 else 1
    else:
        if rng is None:
            raise ValueError("a Bradley-Terry draw needs an rng; pass rng=np.random.default_rng(seed)")
        chosen = 0 if rng.random() < p else 1
    return Preference(chosen=chosen, p_first=p, reward_first=r1, reward_second=r2)


def label_pairs(
    task: Task,
    prompts: list[str],
    pairs: list[tuple[str, str]],
    rng: np.random.Generator | None = None,
    deterministic: bool = False,
) -> list[dict]:
    """Oracle-label ``pairs[i]`` for ``prompts[i]``: ``{"prompt", "chosen", "rejected"}`` rows for DPO."""
    if len(prompts) != len(pairs):
        raise ValueError(f"{len(prompts)} prompts but {len(pairs)} pairs")
    rows = []
    for prompt, (a, b) in zip(prompts, pairs, strict=True):
        pref = bradley_terry_preference(task, prompt, a, b, rng, deterministic)
        chosen, rejected = (a, b) if pref.chosen == 0 else (b, a)
        rows.append({"prompt": prompt, "chosen": chosen, "rejected": rejected})
    return rows
