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

from activedpo_trainer.dpo import DPOSettings


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


def load_task(spec: str, seed: int = 0, n_heldout: int = 200):
    """The task named ``spec``: a built-in (``toy``, ``signoff``) or ``package.module:factory``.

    A factory is called as ``factory(seed=seed)`` and must return an object with the
    :class:`~activedpo_trainer.tasks.Task` methods; the current directory is importable, as
    with ``python -m``. Errors name what is wrong with ``spec``.
    """
    import importlib
    import os
    import sys

    from activedpo_trainer.toytasks import BUILTIN_TASKS

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


PAPER_DPO = {k: getattr(DPOSettings, k) for k in ("lr", "epochs", "beta")}  # the paper's: DPOSettings' defaults


def recorded_dpo_settings(task) -> dict:
    """DPO's ``lr``, ``epochs`` and ``beta`` recorded in ``task`` (its ``dpo_settings`` attribute, for the
    built-in tasks chosen by ``benchmarks/dpo_sweep.py`` on random labels only), else the paper's."""
    recorded = dict(getattr(task, "dpo_settings", None) or {})
    unknown = set(recorded) - set(PAPER_DPO)
    if unknown:
        raise ValueError(f"task {getattr(task, 'name', task)!r}: unknown DPO settings {sorted(unknown)}")
    return PAPER_DPO | recorded


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
