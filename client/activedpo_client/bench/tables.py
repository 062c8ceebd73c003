"""The benchmark's markdown tables: a metric per round and arm, finals paired by seed against random (and
against ``activedpo``), arms on schedules of their own, power, and one plain verdict per arm."""

from __future__ import annotations

import math

import numpy as np

from activedpo_client.artifacts import RoundMetrics
from activedpo_client.bench.arms import Arm
from activedpo_client.bench.stats import (
    auc,
    curve,
    labels_to_reach,
    labels_to_reach_ci,
    mde80,
    mean_ci,
    paired_difference,
    paired_finals,
    paired_seeds,
)

METRICS = {"reward": "held-out oracle reward", "pref_acc": "held-out preference accuracy (π_ref's pairs)",
           "pref_acc_policy": "held-out preference accuracy (the policy's own pairs)"}  # fmt: skip


def schedule_pairs(arms: list[Arm], ran: dict[str, dict[int, list[RoundMetrics]]], rounds: int) -> list[tuple]:
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


def schedule_table(pairs: list[tuple], ran: dict[str, dict[int, list[RoundMetrics]]], metrics: list[str]) -> list[str]:
    """Arms with their own schedule (e.g. 10 rounds × 15 labels), each final round against its baseline's
    (``schedule_pairs``), paired by seed, with the labels each used."""
    lines = ["| arm | against | labels (arm / baseline) | metric | arm's final ± 95% CI | final − baseline (paired, "
             "95% CI) | paired SD | MDE (80% power) | n |", "|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for arm, rounds, base, base_rounds in pairs:
        runs, base_runs = ran[arm], ran[base]
        seeds = paired_seeds(runs, base_runs, rounds, base_rounds)
        if len(seeds) < 2:
            continue
        labels = f"{runs[seeds[0]][rounds - 1].labels} / {base_runs[seeds[0]][base_rounds - 1].labels}"
        for metric in metrics:
            (fm, fci) = mean_ci([runs[s][rounds - 1].value(metric) for s in seeds])
            d = paired_finals(runs, base_runs, rounds, metric, base_rounds)
            (dm, dci), sd = mean_ci(list(d)), float(d.std(ddof=1))
            lines.append(f"| {arm} | {base} | {labels} | {metric} | {fm:.3f} ± {fci:.3f} | {dm:+.3f} ± {dci:.3f} "
                         f"| {sd:.3f} | {mde80(sd, len(d)):.3f} | {len(d)} |")  # fmt: skip
    return lines


def power_table(results: dict[str, dict[int, list[RoundMetrics]]], rounds: int, metrics: list[str],
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


def summarize(results: dict[str, dict[int, list[RoundMetrics]]], rounds: int, metric: str = "reward") -> list[str]:
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
        finals = [rows[rounds - 1].value(metric) for rows in results[s].values() if len(rows) >= rounds]
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


def verdicts(results: dict[str, dict[int, list[RoundMetrics]]], rounds: int, baseline: str = "random",
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


def against_activedpo(results: dict[str, dict[int, list[RoundMetrics]]], rounds: int, metrics=("reward",)) -> list[str]:
    """Every other arm but random (ActiveDPO's settings, ablations and variants, the baselines) against
    ``activedpo`` itself, paired by seed, on each of ``metrics``."""
    others = {a: r for a, r in results.items() if a not in ("activedpo", "random")}
    if "activedpo" not in results or not others:
        return []
    lines = ["Against `activedpo` at the default settings, paired by seed:", ""]
    for metric in metrics:
        lines += verdicts({"activedpo": results["activedpo"], **others}, rounds, baseline="activedpo", metric=metric)
    return lines


def audit_table(results: dict[str, dict[int, list[RoundMetrics]]], rounds: int) -> list[str]:
    """Audit estimates against what they estimate (the toy world's oracle annotator knows it: ``pool_acc_oracle``),
    per arm with audit pairs and round from 2 on (round one's policy is π_ref, exact at ½): the mean of
    ``audit_acc − pool_acc_oracle`` over seeds with its 95% CI (unbiased: it holds 0), the coverage of the per-round
    90% intervals, the mean SE of a round's estimate and of the pooled one, the held-out preference accuracy beside
    (other prompts, no label noise), and how often the stall hint was said in that round."""
    out = ["| arm | round | audit − truth (95% CI) | 90% coverage | SE (round) | SE (pooled) | truth | held-out "
           "pref acc | hint said |", "|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    for arm, by_seed in results.items():
        runs = [by_seed[seed] for seed in sorted(by_seed)]
        for i in range(1, rounds):
            got = [run[i] for run in runs if len(run) > i and run[i].audit_n and run[i].pool_acc_oracle is not None]
            if not got:
                continue
            diff = [r.audit_acc - r.pool_acc_oracle for r in got]
            mean, half = mean_ci(diff)
            cover = sum(abs(d) <= 1.645 * r.audit_se for d, r in zip(diff, got, strict=True)) / len(got)
            held = [r.pref_acc for r in got if r.pref_acc is not None]
            out.append(f"| {arm} | {i + 1} | {mean:+.3f} ± {half:.3f} | {cover:.0%} | "
                       f"{np.mean([r.audit_se for r in got]):.3f} | {np.mean([r.audit_pooled_se for r in got]):.3f} | "
                       f"{np.mean([r.pool_acc_oracle for r in got]):.3f} | "
                       f"{np.mean(held) if held else float('nan'):.3f} | "
                       f"{sum(bool(r.hint) for r in got)}/{len(got)} |")  # fmt: skip
    return out if len(out) > 2 else []
