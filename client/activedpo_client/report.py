"""What a run directory shows: its metrics per round, the reward plot, the labeled data."""

from __future__ import annotations

import json
from pathlib import Path

from activedpo_client.artifacts import RoundMetrics


def read_metrics(run_dir: Path) -> list[RoundMetrics]:
    path = Path(run_dir) / "metrics.jsonl"
    if not path.exists():
        return []
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    rows = []
    for n, line in enumerate(lines):
        try:
            rows.append(RoundMetrics.from_dict(json.loads(line)))
        except json.JSONDecodeError:
            if n == len(lines) - 1:  # a line torn by a crash mid-write: that round is rewritten on resume
                break
            raise ValueError(f"{path} line {n + 1} is not JSON; fix or remove it") from None
    return rows


def plot_rewards(series: dict[str, list[RoundMetrics]], out: Path, title: str = "ActiveDPO") -> Path:
    """Held-out reward ± SE against labels used, one line per run; written atomically as PNG.

    Runs without an evaluator (``--evaluate none``) have no reward: the plot then shows, against
    labels used, the policy's agreement with each round's new labels (from round two on). Runs with audit
    pairs get a second panel: the audit accuracy ± SE against the labels the audited policy was trained on,
    and the accuracy on the strategy's picks (dashed).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    evaluated = any(r.reward is not None for rows in series.values() for r in rows)
    audited = any(r.audit_n for rows in series.values() for r in rows)
    fig, axes = plt.subplots(1, 2 if audited else 1, figsize=(11 if audited else 6, 4), dpi=100, squeeze=False)
    ax = axes[0][0]
    if audited:
        _plot_audit(axes[0][1], series)
    for name, rows in series.items():
        if evaluated:
            rows = [r for r in rows if r.reward is not None]
            if not rows:
                continue
            x = [0] + [r.labels for r in rows]
            y = [rows[0].ref_reward] + [r.reward for r in rows]
            se = [0.0] + [r.se for r in rows]
            ax.errorbar(x, y, yerr=se, marker="o", capsize=3, label=name)
        else:
            x = [r.labels for r in rows]
            y = [float("nan") if r.agreement is None else r.agreement for r in rows]
            ax.plot(x, y, marker="o", label=name)
    ax.set_xlabel("labels used")
    if evaluated:
        ax.set_ylabel("held-out reward (mean ± SE)")
    else:
        ax.set_ylabel("agreement with the round's new labels")
        ax.set_ylim(-0.05, 1.05)
        ax.axhline(0.5, color="gray", lw=0.8, ls=":")
        title += " (no evaluator: --evaluate none)"
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    from activedpo_core.atomic import atomic_write

    try:
        return atomic_write(out, lambda tmp: fig.savefig(tmp, format="png"))
    finally:
        plt.close(fig)


def _plot_audit(ax, series: dict[str, list[RoundMetrics]]) -> None:
    for name, rows in series.items():
        rows = [r for r in rows if r.audit_n]
        if not rows:
            continue
        x = [r.labels_before for r in rows]
        line = ax.errorbar(x, [r.audit_acc for r in rows], yerr=[r.audit_se for r in rows], marker="o", capsize=3,
                           label=f"{name}: audit")  # fmt: skip
        picks = [(r.labels_before, r.picks_acc) for r in rows if r.picks_n]
        if picks:
            ax.plot(*zip(*picks, strict=True), ls="--", marker=".", color=line.lines[0].get_color(),
                    label=f"{name}: its picks")  # fmt: skip
    ax.set_xlabel("labels the audited policy was trained on")
    ax.set_ylabel("preference accuracy (audit labels, ± SE)")
    ax.set_ylim(-0.05, 1.05)
    ax.axhline(0.5, color="gray", lw=0.8, ls=":")
    ax.set_title("unbiased accuracy on the pool")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)


MULTISEED_REPORT = Path(__file__).resolve().parents[2] / "benchmarks" / "results" / "label_efficiency"


def multiseed_line(task: str, arm: str = "activedpo", report_dir: Path = MULTISEED_REPORT) -> str:
    """One line quoting the committed multi-seed benchmark for ``task``: ``arm`` − random, paired by seed,
    on final reward and preference accuracy, so that one seed is not read as the product's effect."""
    where = "benchmarks/results/label_efficiency"
    path = Path(report_dir) / "summary.json"
    if not path.exists():
        return (f"One seed is one draw, not the effect of selection: see {where}/report.md for the multi-seed "
                f"benchmark, or run `activedpo-client bench --tasks {task} --out {where}`.")  # fmt: skip
    data = json.loads(path.read_text())
    quoted = ("reward", "pref_acc")  # not pref_acc_policy: its pairs differ between arms
    found = [c for c in data["comparisons"] if c["task"] == task and c["arm"] == arm and c["metric"] in quoted]
    if not found:
        return (f"One seed is one draw: {where} holds no multi-seed result for task {task!r}; run "
                f"`activedpo-client bench --tasks {task} --out {where}`.")  # fmt: skip
    parts = []
    for c in found:
        low, high = c["mean"] - c["ci95"], c["mean"] + c["ci95"]
        verdict = "significant" if low > 0 or high < 0 else "not significant"
        what = "final reward" if c["metric"] == "reward" else "preference accuracy"
        parts.append(f"{what} {c['mean']:+.3f} ± {c['ci95']:.3f} ({verdict}; MDE {c['mde80']:.3f})")
    c = found[0]
    return (
        f"One seed is one draw. Over {c['seeds']} seeds ({where}, {data['rounds']} rounds × {data['budget']} "
        f"labels, {c['prompts']} prompts a round), {arm} − random, paired by seed: " + "; ".join(parts) + "."
    )
