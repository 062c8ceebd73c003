"""The benchmark's statistics: Student-t intervals, the minimum detectable effect, curves of a metric against
labels, their area, the labels a curve needs to reach a target (with a bootstrap interval over seeds), and
differences paired by seed. A run is its list of :class:`~activedpo_client.artifacts.RoundMetrics`."""

from __future__ import annotations

import math

import numpy as np

from activedpo_client.artifacts import RoundMetrics

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


def curve(rows: list[RoundMetrics], metric: str = "reward") -> tuple[list[int], list[float]]:
    """(labels, metric) points of one run, starting from π_ref at 0 labels (its preference accuracy is ½)."""
    start = rows[0].ref_reward if metric == "reward" else 0.5
    return [0] + [r.labels for r in rows], [start] + [r.value(metric) for r in rows]


def has_metric(results: dict[str, dict[int, list[RoundMetrics]]], metric: str) -> bool:
    """Whether every run of every arm reports ``metric`` in every round (older runs lack the accuracy)."""
    return all(r.value(metric) is not None for by_seed in results.values() for rows in by_seed.values() for r in rows)


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


def paired_difference(runs: dict[int, list[RoundMetrics]], baseline: dict[int, list[RoundMetrics]], rounds: int,
                      metric: str = "reward") -> tuple:  # fmt: skip
    """Final ``metric`` minus the baseline's on the same seeds: (mean, 95% CI half-width, n)."""
    d = paired_finals(runs, baseline, rounds, metric)
    if not len(d):
        return float("nan"), float("nan"), 0
    m, ci = mean_ci(list(d))
    return m, ci, len(d)


def paired_seeds(runs: dict[int, list[RoundMetrics]], baseline: dict[int, list[RoundMetrics]], rounds: int,
                 base_rounds: int | None = None) -> list[int]:  # fmt: skip
    """The seeds (sorted) on which the arm reached round ``rounds`` and the baseline round ``base_rounds``."""
    b = base_rounds or rounds
    return sorted(s for s in runs if s in baseline and len(runs[s]) >= rounds and len(baseline[s]) >= b)


def paired_finals(runs: dict[int, list[RoundMetrics]], baseline: dict[int, list[RoundMetrics]], rounds: int,
                  metric: str = "reward", base_rounds: int | None = None) -> np.ndarray:  # fmt: skip
    """Per common seed (sorted), ``metric`` at round ``rounds`` minus the baseline's at ``base_rounds`` (the same
    round unless the two ran different schedules)."""
    b = base_rounds or rounds
    seeds = paired_seeds(runs, baseline, rounds, b)
    return np.asarray([runs[s][rounds - 1].value(metric) - baseline[s][b - 1].value(metric) for s in seeds],
                      dtype=float)  # fmt: skip


def labels_to_reach_ci(runs: dict[int, list[RoundMetrics]], baseline: dict[int, list[RoundMetrics]], rounds: int,
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
    target = np.asarray([baseline[s][rounds - 1].value(metric) for s in seeds])
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
