"""The label-efficiency benchmark: held-out oracle reward against labels used, per strategy, task and seed.

    activedpo-client bench [--tasks toy signoff] [--arms activedpo random aplp apo activedpo-fisher]
        [--seeds 0 1 2 3 4] [--rounds 3] [--budget 50] [--prompts 1000] [--proj-dim 2048] [--jobs 2]
    activedpo-client bench --ablations        # ActiveDPO's ablations beside random, on the first task
    activedpo-client bench --prompts 100 300 1000 --arms activedpo random   # pool-ratio study

(``benchmarks/label_efficiency.py`` is the same program.) Every (task, pool size, arm, seed)
is one run of the real loop (:func:`activedpo_client.rounds.run_rounds`: an embedded
selection server, oracle labels, DPO, held-out evaluation) in its own run directory under
``--work-dir``, all arms of a task from the same SFT model. The seed fixes prompt sampling,
generation and oracle draws, so all arms see the same prompts and responses in round one.

An *arm* is a strategy with optional server settings, ``strategy[@setting,...]``:
``d=512`` (projection dimension), ``lam=0.1`` (ridge λ), ``raw`` (no gradient normalisation),
``frozen`` (features from the initial checkpoint only, never refreshed), ``seeds=10`` (this arm runs on
the first 10 of ``--seeds`` only, and is compared on those). Besides the server's
strategies an arm may name a research strategy: ``activedpo-topb`` (the ablation without the
intra-batch ``V`` update), or ours, ``activedpo-fisher``, ``activedpo-margin`` and ``activedpo-entropy``
(``activedpo_server.strategies`` describes them); their servers are started with ``--research-strategies``.

Runs resume where they stopped: kill the benchmark and start it again. They are also
parallel-safe: a run is claimed with a lock file, so several invocations (or ``--jobs N``,
which starts N − 1 helpers) share the work, and each waits for the others' runs before it
reports. Nothing here looks at the held-out prompts except the evaluation.

Writes to ``--out``: ``report.md`` (per task and pool size, for held-out reward and preference
accuracy: the mean ± 95% CI per round and arm; the final value minus random's, paired by seed, and
for every other arm also minus ``activedpo``'s; the area under the curve against labels; the labels
each arm needs to reach random's final mean, with a bootstrap CI; the paired SD and the MDE at 80%
power), one PNG plot per task and pool size, ``runs.jsonl`` (every run's per-round metrics) and
``summary.json`` (the paired comparisons with random as data).
"""

from __future__ import annotations

import argparse
import fcntl
import json
import math
import os
import subprocess
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from activedpo_core.lora import LoraSpec

DEFAULT_ARMS = ["activedpo", "random", "aplp", "apo", "activedpo-fisher"]
ABLATION_ARMS = [
    "activedpo", "random", "activedpo@raw", "activedpo@d=512", "activedpo@d=8192", "activedpo@d=16384",
    "activedpo-topb", "activedpo@lam=0.1", "activedpo@lam=10", "activedpo@frozen", "activedpo@proj=dense",
    "activedpo@proj=kron",
]  # fmt: skip

# two-sided 95% Student-t quantiles by degrees of freedom (n − 1); normal beyond
_T95 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228,
        11: 2.201, 12: 2.179, 13: 2.160, 14: 2.145, 15: 2.131, 16: 2.120, 17: 2.110, 18: 2.101, 19: 2.093,
        20: 2.086, 24: 2.064, 29: 2.045, 39: 2.023, 59: 2.001}  # fmt: skip
# one-sided 80% quantiles (the power term of a minimum detectable effect)
_T80 = {1: 1.376, 2: 1.061, 3: 0.978, 4: 0.941, 5: 0.920, 6: 0.906, 7: 0.896, 8: 0.889, 9: 0.883, 10: 0.879,
        11: 0.876, 12: 0.873, 13: 0.870, 14: 0.868, 15: 0.866, 16: 0.865, 17: 0.863, 18: 0.862, 19: 0.861,
        20: 0.860, 24: 0.857, 29: 0.854, 39: 0.851, 59: 0.848}  # fmt: skip


def _t(table: dict[int, float], df: int, normal: float) -> float:
    """The quantile at ``df`` degrees of freedom: tabulated, else the next lower tabulated df (conservative),
    else the normal one past the table."""
    if df in table:
        return table[df]
    lower = [d for d in table if d < df]
    return table[max(lower)] if df <= max(table) and lower else normal


def t95(df: int) -> float:
    return _t(_T95, df, 1.96)


def mde80(sd: float, n: int) -> float:
    """The smallest true paired mean difference a two-sided 5% t-test detects with 80% power over ``n``
    seeds whose paired differences have standard deviation ``sd``: (t₀.₉₇₅ + t₀.₈₀) · sd / √n."""
    if n < 2:
        return float("nan")
    return (t95(n - 1) + _t(_T80, n - 1, 0.8416)) * sd / math.sqrt(n)


def mean_ci(values: list[float]) -> tuple[float, float]:
    """Mean and the half-width of its 95% confidence interval (t distribution)."""
    v = np.asarray(values, dtype=float)
    if len(v) < 2:
        return float(v.mean()), float("nan")
    return float(v.mean()), t95(len(v) - 1) * float(v.std(ddof=1)) / math.sqrt(len(v))


METRICS = {"reward": "held-out oracle reward", "pref_acc": "held-out preference accuracy (π_ref's pairs)",
           "pref_acc_policy": "held-out preference accuracy (the policy's own pairs)"}  # fmt: skip


def curve(rows: list[dict], metric: str = "reward") -> tuple[list[int], list[float]]:
    """(labels, metric) points of one run, starting from π_ref at 0 labels (its preference accuracy is ½)."""
    start = rows[0]["ref_reward"] if metric == "reward" else 0.5
    return [0] + [r["labels"] for r in rows], [start] + [r[metric] for r in rows]


def has_metric(results: dict[str, dict[int, list[dict]]], metric: str) -> bool:
    """Whether every run of every arm reports ``metric`` in every round (older runs lack the accuracy)."""
    return all(r.get(metric) is not None for by_seed in results.values() for rows in by_seed.values() for r in rows)


def auc(x: list[int], y: list[float]) -> float:
    """Area under the reward-against-labels curve, per label (the mean reward over the budget)."""
    return float(np.trapezoid(y, x) / (x[-1] - x[0])) if x[-1] > x[0] else float("nan")


def labels_to_reach(x: list[int], y: list[float], target: float) -> float | None:
    """Labels at which the (mean) curve first reaches ``target``, interpolating linearly; None if never."""
    for i in range(1, len(x)):
        if y[i] >= target:
            if y[i - 1] >= target:
                return float(x[i - 1])
            return x[i - 1] + (target - y[i - 1]) / (y[i] - y[i - 1]) * (x[i] - x[i - 1])
    return None


@dataclass(frozen=True)
class Arm:
    """A strategy and the server settings it runs under."""

    spec: str
    strategy: str
    proj_dim: int | None = None
    lam: float | None = None
    normalize: bool = True
    frozen: bool = False
    projection: str | None = None  # sjlt, kron or dense (the server's default when None)
    rounds: int | None = None  # a schedule of its own (rounds=10,budget=15): compared at its final round
    budget: int | None = None
    seeds: int | None = None  # run on the first N of --seeds only (a costly arm beside a many-seed comparison)

    @property
    def scheduled(self) -> bool:
        return self.rounds is not None or self.budget is not None

    @classmethod
    def parse(cls, spec: str) -> Arm:
        from activedpo_server.strategies import strategy_class

        strategy, _, settings = spec.partition("@")
        try:
            strategy_class(strategy, research=True)
        except ValueError as e:
            raise ValueError(f"arm {spec!r}: {e}") from None
        kw: dict = {}
        for s in filter(None, settings.split(",")):
            key, _, value = s.partition("=")
            try:
                if key == "d" and value:
                    kw["proj_dim"] = int(value)
                elif key == "lam" and value:
                    kw["lam"] = float(value)
                elif key in ("rounds", "budget", "seeds") and value:
                    kw[key] = int(value)
                    if kw[key] < 1:
                        raise ValueError
                elif key == "proj" and value in ("sjlt", "kron", "dense"):
                    kw["projection"] = value
                elif s == "raw":
                    kw["normalize"] = False
                elif s == "frozen":
                    kw["frozen"] = True
                else:
                    raise ValueError
            except ValueError:
                choices = "d=N, lam=X, proj=sjlt|kron|dense, raw, frozen, rounds=N, budget=N or seeds=N"
                raise ValueError(f"arm {spec!r}: unknown setting {s!r}; use {choices}") from None
        return cls(spec, strategy, **kw)

    @property
    def slug(self) -> str:
        """The run directory's name: the spec without ``seeds=N``, which says how many runs, not how each runs."""
        strategy, _, settings = self.spec.partition("@")
        kept = ",".join(s for s in settings.split(",") if s and not s.startswith("seeds="))
        spec = f"{strategy}@{kept}" if kept else strategy
        return "".join(c if c.isalnum() or c in "-.=" else "_" for c in spec)

    def serve_extra(self, sft_dir: Path) -> tuple[str, ...]:
        from activedpo_server.strategies import RESEARCH_STRATEGIES

        extra: list[str] = ["--research-strategies"] if self.strategy in RESEARCH_STRATEGIES else []
        if self.lam is not None:
            extra += ["--lam", str(self.lam)]
        if not self.normalize:
            extra += ["--no-normalize"]
        if self.frozen:
            extra += ["--feature-checkpoint", str(sft_dir)]
        if self.projection is not None:
            extra += ["--projection", self.projection]
        return tuple(extra)


def paired_difference(runs: dict[int, list[dict]], baseline: dict[int, list[dict]], rounds: int,
                      metric: str = "reward") -> tuple:  # fmt: skip
    """Final ``metric`` minus the baseline's on the same seeds: (mean, 95% CI half-width, n)."""
    d = paired_finals(runs, baseline, rounds, metric)
    if not len(d):
        return float("nan"), float("nan"), 0
    m, ci = mean_ci(list(d))
    return m, ci, len(d)


def paired_seeds(runs: dict[int, list[dict]], baseline: dict[int, list[dict]], rounds: int,
                 base_rounds: int | None = None) -> list[int]:  # fmt: skip
    """The seeds (sorted) on which the arm reached round ``rounds`` and the baseline round ``base_rounds``."""
    b = base_rounds or rounds
    return sorted(s for s in runs if s in baseline and len(runs[s]) >= rounds and len(baseline[s]) >= b)


def paired_finals(runs: dict[int, list[dict]], baseline: dict[int, list[dict]], rounds: int,
                  metric: str = "reward", base_rounds: int | None = None) -> np.ndarray:  # fmt: skip
    """Per common seed (sorted), ``metric`` at round ``rounds`` minus the baseline's at ``base_rounds`` (the same
    round unless the two ran different schedules)."""
    b = base_rounds or rounds
    seeds = paired_seeds(runs, baseline, rounds, b)
    return np.asarray([runs[s][rounds - 1][metric] - baseline[s][b - 1][metric] for s in seeds], dtype=float)


def labels_to_reach_ci(runs: dict[int, list[dict]], baseline: dict[int, list[dict]], rounds: int,
                       metric: str = "reward", draws: int = 2000, seed: int = 0) -> tuple:  # fmt: skip
    """Labels the arm's mean curve needs to reach the baseline's final mean, with a 95% bootstrap interval:
    seeds are resampled with replacement (the same seeds for both, as they are paired), and each draw
    recomputes both means. Returns (point, low, high, share of draws that reach it); a bound is None
    when over 2.5% of draws never reach it (the interval is open-ended)."""
    seeds = paired_seeds(runs, baseline, rounds)
    if len(seeds) < 2:
        return None, None, None, float("nan")
    xs = curve(runs[seeds[0]][:rounds], metric)[0]
    arm = np.asarray([curve(runs[s][:rounds], metric)[1] for s in seeds])  # [seeds, rounds + 1]
    target = np.asarray([baseline[s][rounds - 1][metric] for s in seeds])
    point = labels_to_reach(xs, list(arm.mean(0)), float(target.mean()))
    rng = np.random.default_rng(seed)
    got = []
    for _ in range(draws):
        pick = rng.integers(0, len(seeds), len(seeds))
        got.append(labels_to_reach(xs, list(arm[pick].mean(0)), float(target[pick].mean())))
    reached = np.asarray([g for g in got if g is not None])
    share = len(reached) / draws
    low = float(np.quantile(reached, 0.025 / share)) if share > 0.025 else None
    high = float(np.quantile(reached, 0.975 / share)) if share >= 0.975 else None
    return point, low, high, share


def schedule_pairs(arms: list[Arm], ran: dict[str, dict[int, list[dict]]], rounds: int) -> list[tuple]:
    """(arm, its rounds, baseline, the baseline's rounds) for each arm with a schedule of its own that ran: it is
    paired with random on the same schedule when that ran too (what the schedule does to selection's gain),
    else with random's final round on the common schedule (the same labels spent in fewer, larger batches)."""
    out = []
    for a in arms:
        if not a.scheduled or a.spec not in ran:
            continue
        same = [b for b in arms if b.strategy == "random" and b.spec != a.spec and b.spec in ran
                and (b.rounds or rounds, b.budget) == (a.rounds or rounds, a.budget)]  # fmt: skip
        if a.strategy != "random" and same:
            out.append((a.spec, a.rounds or rounds, same[0].spec, same[0].rounds or rounds))
        elif "random" in ran:
            out.append((a.spec, a.rounds or rounds, "random", rounds))
    return out


def schedule_table(pairs: list[tuple], ran: dict[str, dict[int, list[dict]]], metrics: list[str]) -> list[str]:
    """Arms with their own schedule (e.g. 10 rounds × 15 labels), each final round against its baseline's
    (``schedule_pairs``), paired by seed, with the labels each used."""
    lines = ["| arm | against | labels (arm / baseline) | metric | arm's final ± 95% CI | final − baseline (paired, "
             "95% CI) | paired SD | MDE (80% power) | n |", "|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for arm, rounds, base, base_rounds in pairs:
        runs, base_runs = ran[arm], ran[base]
        seeds = paired_seeds(runs, base_runs, rounds, base_rounds)
        if len(seeds) < 2:
            continue
        labels = f"{runs[seeds[0]][rounds - 1]['labels']} / {base_runs[seeds[0]][base_rounds - 1]['labels']}"
        for metric in metrics:
            (fm, fci) = mean_ci([runs[s][rounds - 1][metric] for s in seeds])
            d = paired_finals(runs, base_runs, rounds, metric, base_rounds)
            (dm, dci), sd = mean_ci(list(d)), float(d.std(ddof=1))
            lines.append(f"| {arm} | {base} | {labels} | {metric} | {fm:.3f} ± {fci:.3f} | {dm:+.3f} ± {dci:.3f} "
                         f"| {sd:.3f} | {mde80(sd, len(d)):.3f} | {len(d)} |")  # fmt: skip
    return lines


def power_table(results: dict[str, dict[int, list[dict]]], rounds: int, metrics: list[str],
                baseline: str = "random") -> list[str]:  # fmt: skip
    """Per arm and metric against ``baseline``, paired by seed: the difference with its 95% CI, the paired
    standard deviation, the minimum detectable effect at 80% power, and labels to reach the baseline's
    final mean with a bootstrap interval."""
    if baseline not in results:
        return []
    lines = [f"| arm | metric | final − {baseline} (paired, 95% CI) | paired SD | MDE (80% power) | n "
             f"| labels to reach {baseline}'s final mean (95% bootstrap CI) |",
             "|---|---|---|---|---|---|---|"]  # fmt: skip
    for metric in metrics:
        for arm, runs in results.items():
            d = paired_finals(runs, results[baseline], rounds, metric)
            reach = labels_to_reach_ci(runs, results[baseline], rounds, metric)
            if arm == baseline:
                diff = sd = mde = "—"
            elif len(d) >= 2:
                m, ci = mean_ci(list(d))
                sd_ = float(d.std(ddof=1))
                diff, sd, mde = f"{m:+.3f} ± {ci:.3f}", f"{sd_:.3f}", f"{mde80(sd_, len(d)):.3f}"
            else:
                diff = sd = mde = "too few seeds"
            lines.append(f"| {arm} | {metric} | {diff} | {sd} | {mde} | {len(d)} | {_reach_text(reach, rounds)} |")
    return lines


def _reach_text(reach: tuple, rounds: int) -> str:
    point, low, high, share = reach
    if point is None and (share != share or share == 0):  # nan or never
        return "not reached"
    lo = f"{low:.0f}" if low is not None else "—"
    hi = f"{high:.0f}" if high is not None else "not reached"
    head = f"{point:.0f}" if point is not None else "not reached"
    return f"{head} [{lo}, {hi}] (reached in {share:.0%} of draws)"


def summarize(results: dict[str, dict[int, list[dict]]], rounds: int, metric: str = "reward") -> list[str]:
    """Markdown tables for one task and pool size: ``metric`` per round, then one line per arm."""
    arms = list(results)
    lines = ["| round | labels | " + " | ".join(arms) + " |", "|---|---|" + "---|" * len(arms)]
    means: dict[str, list[float]] = {}
    xs: list[int] = []
    for r in range(rounds + 1):
        cells = []
        for s in arms:
            runs = [rows for rows in results[s].values() if len(rows) >= max(r, 1)]
            vals = [curve(rows, metric)[1][r] for rows in runs]
            m, ci = mean_ci(vals) if vals else (float("nan"), float("nan"))
            means.setdefault(s, []).append(m)
            cells.append(f"{m:.3f} ± {ci:.3f} (n={len(vals)})" if vals else "—")
            if len(xs) <= r and runs:
                xs.append(curve(runs[0], metric)[0][r])
        lines.append(f"| {r} | {xs[r] if len(xs) > r else '—'} | " + " | ".join(cells) + " |")
    lines += ["", f"| arm | final {metric} ± 95% CI | final − random, paired by seed | AUC (mean {metric} over the "
              "budget) | labels to reach random's final mean |", "|---|---|---|---|---|"]  # fmt: skip
    target = means["random"][-1] if "random" in means else None
    for s in arms:
        finals = [rows[rounds - 1][metric] for rows in results[s].values() if len(rows) >= rounds]
        fm, fci = mean_ci(finals) if finals else (float("nan"), float("nan"))
        aucs = [auc(*curve(rows[:rounds], metric)) for rows in results[s].values() if len(rows) >= rounds]
        am, aci = mean_ci(aucs) if aucs else (float("nan"), float("nan"))
        if "random" in results and s != "random":
            dm, dci, dn = paired_difference(results[s], results["random"], rounds, metric)
            diff = f"{dm:+.3f} ± {dci:.3f} (n={dn})"
        else:
            diff = "—"
        reach = labels_to_reach(xs, means[s], target) if target is not None and len(xs) == rounds + 1 else None
        reach_text = "—" if target is None else (f"{reach:.0f}" if reach is not None else "not reached")
        lines.append(f"| {s} | {fm:.3f} ± {fci:.3f} (n={len(finals)}) | {diff} | {am:.3f} ± {aci:.3f} | {reach_text} |")
    return lines


def verdicts(results: dict[str, dict[int, list[dict]]], rounds: int, baseline: str = "random",
             metric: str = "reward") -> list[str]:  # fmt: skip
    """One plain sentence per arm against ``baseline``: ahead, behind, or no difference at 95%."""
    out = []
    if baseline not in results:
        return out
    for s in results:
        if s == baseline:
            continue
        m, ci, n = paired_difference(results[s], results[baseline], rounds, metric)
        what = "final reward" if metric == "reward" else f"final {metric}"
        if n < 2 or math.isnan(ci):
            out.append(f"- {s}: too few paired seeds to compare with {baseline}.")
        elif m - ci > 0:
            out.append(f"- {s} **beat {baseline}**: {what} {m:+.3f} ± {ci:.3f} over {n} seeds.")
        elif m + ci < 0:
            out.append(f"- {s} **lost to {baseline}**: {what} {m:+.3f} ± {ci:.3f} over {n} seeds.")
        else:
            out.append(
                f"- {s}: **no significant difference from {baseline}** on {what} ({m:+.3f} ± {ci:.3f} over {n} seeds)."
            )
    return out


def against_activedpo(results: dict[str, dict[int, list[dict]]], rounds: int, metrics=("reward",)) -> list[str]:
    """Every other arm but random (ActiveDPO's settings, ablations and variants, the baselines) against
    ``activedpo`` itself, paired by seed, on each of ``metrics``."""
    others = {a: r for a, r in results.items() if a not in ("activedpo", "random")}
    if "activedpo" not in results or not others:
        return []
    lines = ["Against `activedpo` at the default settings, paired by seed:", ""]
    for metric in metrics:
        lines += verdicts({"activedpo": results["activedpo"], **others}, rounds, baseline="activedpo", metric=metric)
    return lines


@contextmanager
def claim(run_dir: Path, wait: bool):
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


def dpo_settings(args, task) -> dict:
    """DPO's lr, epochs and β for ``task``: the command line's, else the task's recorded ones (chosen by
    ``benchmarks/dpo_sweep.py`` on random labels), else the paper's."""
    from activedpo_trainer.tasks import recorded_dpo_settings

    recorded = recorded_dpo_settings(task)
    given = {"lr": args.dpo_lr, "epochs": args.dpo_epochs, "beta": args.dpo_beta}
    return {k: v if v is not None else recorded[k] for k, v in given.items()}


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="activedpo-client bench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--tasks", nargs="+", default=["toy", "signoff"], help="built-in tasks or package.module:factory")
    ap.add_argument(
        "--arms", nargs="+", default=None, help=f"strategies[@settings] (default: {' '.join(DEFAULT_ARMS)})"
    )
    ap.add_argument("--ablations", action="store_true", help="run ActiveDPO's ablation arms on the first task")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--budget", type=int, default=50, help="labels per round")
    ap.add_argument("--prompts", type=int, nargs="+", default=[1000], help="prompts per round (several: a pool study)")
    ap.add_argument("--responses", type=int, default=3, help="responses per prompt")
    ap.add_argument("--proj-dim", type=int, default=2048, help="projection dimension (arms may override: @d=N)")
    ap.add_argument("--lora-r", type=int, default=LoraSpec.r)
    ap.add_argument("--dpo-epochs", type=float, default=None, help="default: the task's recorded setting")
    ap.add_argument("--dpo-lr", type=float, default=None, help="default: the task's recorded setting")
    ap.add_argument("--dpo-beta", type=float, default=None, help="default: the task's recorded setting")
    ap.add_argument("--dpo-mode", default="continue", choices=["continue", "retrain"])
    ap.add_argument(
        "--annotator",
        default="oracle",
        choices=["oracle", "oracle-deterministic"],
        help="labels: Bradley–Terry draws from the oracle, or the higher reward (no label noise)",
    )
    ap.add_argument("--eval-prompts", type=int, default=200, help="held-out prompts (the toy worlds hold out 200)")
    ap.add_argument("--eval-samples", type=int, default=4, help="responses per held-out prompt for the reward")
    ap.add_argument("--eval-pair-samples", type=int, default=6,
                    help="π_ref responses per held-out prompt for the judged pairs of preference accuracy "
                         "(6: up to 15 pairs a prompt, 3,000 on 200 prompts)")  # fmt: skip
    ap.add_argument("--paper", action="store_true", help="paper's d=8192 over 10 rounds (our T; hours)")
    ap.add_argument("--preset", default="default", choices=["default", "tiny"])
    ap.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1),
                    help="runs at once, each on cpu_count/jobs threads (helpers share the work dir)")  # fmt: skip
    ap.add_argument("--work-dir", type=Path, default=Path("runs/label-efficiency"))
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/label_efficiency"))
    ap.add_argument("--helper", action="store_true", help=argparse.SUPPRESS)  # a --jobs helper: runs, no report
    return ap


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.paper:
        args.proj_dim, args.rounds = 8192, 10
    if args.ablations:
        args.tasks = args.tasks[:1]
        args.arms = args.arms or ABLATION_ARMS
    arms = [Arm.parse(a) for a in (args.arms or DEFAULT_ARMS)]

    from activedpo_client.rounds import RoundConfig, ServerSpec, run_rounds
    from activedpo_core.progress import progress_bars, quiet_libraries
    from activedpo_trainer.tasks import task_slug
    from activedpo_trainer.toyworld import ToyWorldConfig, build_toyworld

    quiet_libraries()
    worlds = {}
    for task in args.tasks:  # built before helpers start, so they find them cached
        with progress_bars(transient=True) as bar:
            worlds[task] = build_toyworld(ToyWorldConfig.preset(args.preset, task=task), progress=bar)

    helpers = []
    if args.jobs > 1 and not args.helper:
        argv_helper = [*(argv if argv is not None else sys.argv[1:]), "--helper"]
        threads = max(1, (os.cpu_count() or 2) // args.jobs)  # the jobs share the cores instead of fighting
        os.environ["OMP_NUM_THREADS"] = str(threads)  # this process's embedded servers
        import torch

        torch.set_num_threads(threads)
        env = os.environ.copy()
        args.work_dir.mkdir(parents=True, exist_ok=True)
        for i in range(args.jobs - 1):
            with open(args.work_dir / f"helper-{i + 1}.log", "a") as log:
                helpers.append(subprocess.Popen([sys.executable, "-m", "activedpo_client.bench", *argv_helper],
                                                env=env, stdout=log, stderr=subprocess.STDOUT))  # fmt: skip
            time.sleep(2)  # stagger: helpers claim different runs

    grid = [(task, n, arm, seed) for task in args.tasks for n in args.prompts for seed in args.seeds for arm in arms
            if arm.seeds is None or seed in args.seeds[: arm.seeds]]  # fmt: skip

    def run_dir(task, n, arm, seed) -> Path:
        return args.work_dir / task_slug(task) / f"p{n}" / f"{arm.slug}-seed{seed}"

    def run_one(task, n, arm, seed) -> list[dict]:
        world = worlds[task]
        dpo = dpo_settings(args, world.task)
        rounds = arm.rounds or args.rounds
        config = RoundConfig(budget=arm.budget or args.budget, prompts=n, responses=args.responses,
                             strategy=arm.strategy, seed=seed, annotator=args.annotator, eval_prompts=args.eval_prompts,
                             eval_samples=args.eval_samples, eval_pair_samples=args.eval_pair_samples,
                             dpo_epochs=dpo["epochs"], dpo_lr=dpo["lr"], dpo_beta=dpo["beta"], dpo_mode=args.dpo_mode,
                             lora_r=args.lora_r, lora_alpha=4 * args.lora_r)  # fmt: skip
        spec = ServerSpec(proj_dim=arm.proj_dim or args.proj_dim, extra=arm.serve_extra(world.sft_dir))
        t0 = time.perf_counter()
        rows = run_rounds(run_dir(task, n, arm, seed), world, config, rounds, spec, say=lambda _line: None)
        took = time.perf_counter() - t0
        print(f"{task} p{n} {arm.spec} seed {seed}: " + ", ".join(f"{r['reward']:.3f}" for r in rows[:rounds])
              + (f" ({took:.0f} s)" if took > 1 else " (done before)"), flush=True)  # fmt: skip
        return rows[:rounds]

    results: dict[tuple[str, int], dict[str, dict[int, list[dict]]]] = {}
    pending = []
    for key in grid:  # first pass: whatever no other process holds
        with claim(run_dir(*key), wait=False) as mine:
            if mine:
                results.setdefault(key[:2], {}).setdefault(key[2].spec, {})[key[3]] = run_one(*key)
            else:
                pending.append(key)
    if args.helper:
        return 0
    for key in pending:  # then wait for the runs other processes were doing, and finish any they left
        with claim(run_dir(*key), wait=True):
            results.setdefault(key[:2], {}).setdefault(key[2].spec, {})[key[3]] = run_one(*key)
    for h in helpers:
        h.wait()
    report(args, arms, results)
    return 0


def report(args, arms: list[Arm], results) -> None:
    from activedpo_client.report import plot_rewards
    from activedpo_trainer.tasks import load_task, task_slug

    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
    try:
        from _report import header, write
    except ImportError:  # an installed package without the repository's benchmarks/
        header, write = _plain_header, _plain_write

    args.out.mkdir(parents=True, exist_ok=True)
    order = [a.spec for a in arms]
    with open(args.out / "runs.jsonl", "w") as f:
        for (task, n), by_arm in results.items():
            for arm in order:
                for seed, rows in sorted(by_arm.get(arm, {}).items()):
                    for r in rows:
                        f.write(json.dumps({"task": task, "prompts": n, "arm": arm, "seed": seed} | r) + "\n")
    lines = [
        *header("Label efficiency: held-out oracle reward against labels, per arm"),
        f"World preset {args.preset}; {args.rounds} rounds × budget {args.budget}; {args.responses} responses per "
        f"prompt; d = {args.proj_dim} unless an arm says otherwise; fresh-adapter rank {args.lora_r}; DPO "
        f"({args.dpo_mode}) per round with each task's settings (below); {args.eval_prompts} held-out prompts × "
        f"{args.eval_samples} samples for the reward, judged pairs from {args.eval_pair_samples} π_ref samples per "
        f"held-out prompt for the preference accuracy; labels by {args.annotator}; seeds {args.seeds}.",
        "",
        "Mean ± 95% CI (t) over seeds; round 0 is π_ref (whose preference accuracy is ½ by construction). "
        "\"final − random\" is each seed's final value minus random's on the same seed. The MDE is the smallest "
        "true paired difference a 5% test detects with 80% power at this paired SD and number of seeds; labels to "
        "reach random's final mean carry a bootstrap interval over seeds (open-ended when too many draws never "
        "reach it).",
    ]
    scheduled = {a.spec for a in arms if a.scheduled}
    for (task, n), all_arms in results.items():
        by_arm = {a: all_arms[a] for a in order if a in all_arms and a not in scheduled}
        suffix = "" if len(args.prompts) == 1 else f"-p{n}"
        slug = task_slug(task)
        metrics = [m for m in METRICS if has_metric(by_arm, m)]
        versus_activedpo = against_activedpo(by_arm, args.rounds, metrics)
        lines += [
            "",
            f"## Task `{task}`, {n} prompts × {args.responses} responses per round "
            f"({n * args.responses * (args.responses - 1) // 2 / args.budget:.0f} candidate pairs per label)",
            "",
            "DPO: lr {lr:g}, {epochs:g} epochs, β {beta:g}.".format(**dpo_settings(args, load_task(task))),
        ]
        for metric in metrics:
            lines += ["", f"### {METRICS[metric]}", "", *summarize(by_arm, args.rounds, metric), "",
                      *verdicts(by_arm, args.rounds, metric=metric)]  # fmt: skip
        pairs = schedule_pairs(arms, all_arms, args.rounds)
        if pairs:
            lines += ["", "### Other schedules (their own rounds × budget), final round against random's", "",
                      "Paired with random on the same schedule where that ran, else with random's final round "
                      f"({args.rounds} × {args.budget}).", "", *schedule_table(pairs, all_arms, metrics)]  # fmt: skip
        lines += ["", "### Power, paired by seed", "", *power_table(by_arm, args.rounds, metrics), "",
                  *versus_activedpo, *([""] if versus_activedpo else []),
                  f"Plot: `reward-{slug}{suffix}.png`."]  # fmt: skip
        mean_rows = {}
        for arm, by_seed in by_arm.items():
            runs = [by_seed[s] for s in sorted(by_seed)]
            ref = float(np.mean([r[0]["ref_reward"] for r in runs]))  # π_ref on each seed's held-out sample
            mean_rows[arm] = [
                {"labels": runs[0][i]["labels"], "reward": float(np.mean([r[i]["reward"] for r in runs])),
                 "se": float(np.std([r[i]["reward"] for r in runs], ddof=1) / math.sqrt(len(runs)))
                 if len(runs) > 1 else 0.0, "ref_reward": ref}
                for i in range(min(len(r) for r in runs))
            ]  # fmt: skip
        plot_rewards(mean_rows, args.out / f"reward-{slug}{suffix}.png",
                     title=f"{task}, {n} prompts/round: mean ± SE over seeds")  # fmt: skip
    lines += ["", "Raw per-run metrics: `runs.jsonl`; the paired comparisons as data: `summary.json`."]
    print("\n".join(lines))
    write(args.out / "report.md", lines)
    (args.out / "summary.json").write_text(json.dumps(summary(args, arms, results), indent=1) + "\n")


def summary(args, arms: list[Arm], results) -> dict:
    """The paired comparisons as data (the quickstart and the regime study quote them): per task and pool size,
    per arm and metric, the final difference from its baseline (random, or random on the arm's own schedule,
    see ``schedule_pairs``): mean, 95% CI half-width, paired SD, MDE and seeds."""
    out: dict = {"rounds": args.rounds, "budget": args.budget, "comparisons": []}
    for (task, n), ran in results.items():
        pairs = [(a.spec, args.rounds, "random", args.rounds) for a in arms
                 if a.spec in ran and a.spec != "random" and "random" in ran and not a.scheduled]  # fmt: skip
        pairs += schedule_pairs(arms, ran, args.rounds)
        for metric in [m for m in METRICS if has_metric(ran, m)]:
            for arm, rounds, base, base_rounds in pairs:
                d = paired_finals(ran[arm], ran[base], rounds, metric, base_rounds)
                if len(d) < 2:
                    continue
                m, ci = mean_ci(list(d))
                sd = float(d.std(ddof=1))
                out["comparisons"].append({"task": task, "prompts": n, "arm": arm, "baseline": base, "metric": metric,
                                           "seeds": len(d), "mean": round(m, 4), "ci95": round(ci, 4),
                                           "sd": round(sd, 4), "mde80": round(mde80(sd, len(d)), 4)})  # fmt: skip
    return out


def _plain_header(title: str) -> list[str]:
    return [f"# {title}", "", f"Command: `{' '.join(sys.argv)}`", ""]


def _plain_write(path: Path, lines: list[str]) -> None:
    path.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    sys.exit(main())
