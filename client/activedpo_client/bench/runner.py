"""Running the benchmark's grid: every (task, pool size, arm, seed) is one run of the real loop in its own run
directory, claimed with a lock file so that several processes (``--jobs N`` starts N − 1 helpers) share the
work and each waits for the others' runs before it reports."""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

from activedpo_client.artifacts import RoundMetrics
from activedpo_client.bench.arms import ABLATION_ARMS, DEFAULT_ARMS, Arm
from activedpo_client.settings import RoundConfig
from activedpo_core.lora import LoraSpec
from activedpo_core.settings import ProjectionSpec
from activedpo_trainer.dpo import DPOSettings

# the study's d: its committed results ran at d = 2048 (the demo's), which keeps a 5-arm × 5-seed grid to hours on
# two CPU cores; --paper runs the paper's d (the product's default) over 10 rounds
BENCH_PROJ_DIM = 2048

Results = dict[tuple[str, int], dict[str, dict[int, list[RoundMetrics]]]]  # (task, prompts) → arm → seed → rounds


@dataclass(frozen=True)
class BenchSettings:
    """One benchmark invocation; the command's options map one to one onto these fields."""

    tasks: tuple[str, ...] = ("toy", "signoff")  # built-in tasks or package.module:factory
    arms: tuple[str, ...] = ()  # strategy[@settings]; () = DEFAULT_ARMS (or ABLATION_ARMS with ablations)
    ablations: bool = False  # ActiveDPO's ablation arms on the first task
    seeds: tuple[int, ...] = (0, 1, 2, 3, 4)
    rounds: int = 3
    budget: int = RoundConfig.budget
    prompts: tuple[int, ...] = (RoundConfig.prompts,)  # several: a pool-size study
    responses: int = RoundConfig.responses
    proj_dim: int = BENCH_PROJ_DIM  # arms may override: @d=N
    lora_r: int = LoraSpec.r  # the fresh adapter's rank; α = 4r as LoraSpec's
    dpo_epochs: float | None = None  # None: the task's recorded setting (benchmarks/dpo_sweep.py), else the paper's
    dpo_lr: float | None = None
    dpo_beta: float | None = None
    dpo_mode: str = DPOSettings.mode
    annotator: str = RoundConfig.annotator  # oracle (Bradley–Terry draws) or oracle-deterministic (no label noise)
    eval_prompts: int = 200  # every held-out prompt of a toy world
    eval_samples: int = 4  # responses per held-out prompt for the reward (a study needs less noise than a run)
    eval_pair_samples: int = 6  # π_ref samples per held-out prompt: up to 15 judged pairs a prompt
    paper: bool = False  # the paper's d over 10 rounds (hours)
    preset: str = "default"  # the toy world's preset: default or tiny
    jobs: int = min(2, os.cpu_count() or 1)  # runs at once, each on cpu_count/jobs threads
    work_dir: Path = Path("runs/label-efficiency")
    out: Path | None = None  # None: WORK_DIR/report (outside the source tree; the committed results pass --out)
    helper: bool = False  # a --jobs helper: runs, no report

    def resolved(self) -> BenchSettings:
        """With what the flags imply: --paper's d and rounds, the ablation arms, the report's folder."""
        s = self
        if s.paper:
            s = replace(s, proj_dim=ProjectionSpec.dim, rounds=10)
        if s.ablations:
            s = replace(s, tasks=s.tasks[:1], arms=s.arms or tuple(ABLATION_ARMS))
        return replace(s, arms=s.arms or tuple(DEFAULT_ARMS), out=s.out or s.work_dir / "report")

    def arm_list(self) -> list[Arm]:
        return [Arm.parse(a) for a in self.arms or DEFAULT_ARMS]

    def dpo(self, task) -> dict:
        """DPO's lr, epochs and β for ``task``: the command line's, else the task's recorded ones (chosen by
        ``benchmarks/dpo_sweep.py`` on random labels), else the paper's."""
        from activedpo_trainer.tasks import recorded_dpo_settings

        recorded = recorded_dpo_settings(task)
        given = {"lr": self.dpo_lr, "epochs": self.dpo_epochs, "beta": self.dpo_beta}
        return {k: v if v is not None else recorded[k] for k, v in given.items()}


@contextmanager
def claim(run_dir: Path, wait: bool) -> Iterator[bool]:
    """An exclusive lock on ``run_dir``'s lock file; yields False (without waiting) when another process holds it."""
    run_dir.mkdir(parents=True, exist_ok=True)
    with open(run_dir / ".bench.lock", "w") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def run_grid(settings: BenchSettings, argv: list[str]) -> Results | None:
    """Run (or find finished) every run of the grid; None in a helper (which does not report). ``argv`` is the
    command line, which helpers are started with."""
    from activedpo_client.rounds import run_rounds
    from activedpo_client.settings import ServerSpec
    from activedpo_core.progress import progress_bars, quiet_libraries
    from activedpo_trainer.tasks import task_slug
    from activedpo_trainer.toyworld import ToyWorldConfig, build_toyworld

    s = settings
    arms = s.arm_list()
    quiet_libraries()
    worlds = {}
    for task in s.tasks:  # built before helpers start, so they find them cached
        with progress_bars(transient=True) as bar:
            worlds[task] = build_toyworld(ToyWorldConfig.preset(s.preset, task=task), progress=bar)

    helpers = []
    if s.jobs > 1 and not s.helper:
        threads = max(1, (os.cpu_count() or 2) // s.jobs)  # the jobs share the cores instead of fighting
        os.environ["OMP_NUM_THREADS"] = str(threads)  # this process's embedded servers
        import torch

        torch.set_num_threads(threads)
        env = os.environ.copy()
        s.work_dir.mkdir(parents=True, exist_ok=True)
        for i in range(s.jobs - 1):
            with open(s.work_dir / f"helper-{i + 1}.log", "a") as log:
                helpers.append(subprocess.Popen([sys.executable, "-m", "activedpo_client.bench", *argv, "--helper"],
                                                env=env, stdout=log, stderr=subprocess.STDOUT))  # fmt: skip
            time.sleep(2)  # stagger: helpers claim different runs

    grid = [(task, n, arm, seed) for task in s.tasks for n in s.prompts for seed in s.seeds for arm in arms
            if arm.seeds is None or seed in s.seeds[: arm.seeds]]  # fmt: skip

    def run_dir(task, n, arm, seed) -> Path:
        return s.work_dir / task_slug(task) / f"p{n}" / f"{arm.slug}-seed{seed}"

    def run_one(task, n, arm, seed) -> list[RoundMetrics]:
        world = worlds[task]
        dpo = s.dpo(world.task)
        rounds = arm.rounds or s.rounds
        config = RoundConfig(budget=arm.budget or s.budget, prompts=n, responses=s.responses, strategy=arm.strategy,
                             seed=seed, annotator=s.annotator, eval_prompts=s.eval_prompts,
                             eval_samples=s.eval_samples, eval_pair_samples=s.eval_pair_samples,
                             dpo_epochs=dpo["epochs"], dpo_lr=dpo["lr"], dpo_beta=dpo["beta"], dpo_mode=s.dpo_mode,
                             lora_r=s.lora_r, lora_alpha=4 * s.lora_r, audit_fraction=arm.audit)  # fmt: skip
        spec = ServerSpec(proj_dim=arm.proj_dim or s.proj_dim, extra=arm.serve_extra(world.sft_dir))
        t0 = time.perf_counter()
        rows = run_rounds(run_dir(task, n, arm, seed), world, config, rounds, spec, say=lambda _line: None)
        took = time.perf_counter() - t0
        print(f"{task} p{n} {arm.spec} seed {seed}: " + ", ".join(f"{r.reward:.3f}" for r in rows[:rounds])
              + (f" ({took:.0f} s)" if took > 1 else " (done before)"), flush=True)  # fmt: skip
        return rows[:rounds]

    results: Results = {}
    pending = []
    for key in grid:  # first pass: whatever no other process holds
        with claim(run_dir(*key), wait=False) as mine:
            if mine:
                results.setdefault(key[:2], {}).setdefault(key[2].spec, {})[key[3]] = run_one(*key)
            else:
                pending.append(key)
    if s.helper:
        return None
    for key in pending:  # then wait for the runs other processes were doing, and finish any they left
        with claim(run_dir(*key), wait=True):
            results.setdefault(key[:2], {}).setdefault(key[2].spec, {})[key[3]] = run_one(*key)
    for h in helpers:
        h.wait()
    return results
