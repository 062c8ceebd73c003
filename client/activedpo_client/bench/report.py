"""The benchmark's report: ``report.md`` (per task and pool size, for held-out reward and preference accuracy: the
mean ± 95% CI per round and arm; the final value minus random's, paired by seed, and for every other arm also minus
``activedpo``'s; the area under the curve; the labels each arm needs to reach random's final mean, with a
bootstrap CI; the paired SD and the MDE at 80% power), one PNG per task and pool size, ``runs.jsonl`` (every run's
:class:`~activedpo_client.artifacts.RoundMetrics`, with its task, pool size, arm and seed) and ``summary.json``
(the paired comparisons as data, which the quickstart and the regime study quote)."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np

from activedpo_client.artifacts import RoundMetrics
from activedpo_client.bench.arms import Arm
from activedpo_client.bench.runner import BenchSettings, Results
from activedpo_client.bench.stats import has_metric, mde80, mean_ci, paired_finals
from activedpo_client.bench.tables import (
    METRICS,
    against_activedpo,
    audit_table,
    power_table,
    schedule_pairs,
    schedule_table,
    summarize,
    verdicts,
)


def write_report(s: BenchSettings, arms: list[Arm], results: Results) -> None:
    """``report.md``, one plot per task and pool size, ``runs.jsonl`` and ``summary.json`` in ``s.out``."""
    from activedpo_client.report import plot_rewards
    from activedpo_trainer.tasks import load_task, task_slug

    sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "benchmarks"))
    try:
        from _report import header, write
    except ImportError:  # an installed package without the repository's benchmarks/
        header, write = _plain_header, _plain_write

    s.out.mkdir(parents=True, exist_ok=True)
    order = [a.spec for a in arms]
    with open(s.out / "runs.jsonl", "w") as f:
        for (task, n), by_arm in results.items():
            for arm in order:
                for seed, rows in sorted(by_arm.get(arm, {}).items()):
                    for r in rows:
                        row = {"task": task, "prompts": n, "arm": arm, "seed": seed} | r.to_dict()
                        f.write(json.dumps(row) + "\n")
    lines = [
        *header("Label efficiency: held-out oracle reward against labels, per arm"),
        f"World preset {s.preset}; {s.rounds} rounds × budget {s.budget}; {s.responses} responses per "
        f"prompt; d = {s.proj_dim} unless an arm says otherwise; fresh-adapter rank {s.lora_r}; DPO "
        f"({s.dpo_mode}) per round with each task's settings (below); {s.eval_prompts} held-out prompts × "
        f"{s.eval_samples} samples for the reward, judged pairs from {s.eval_pair_samples} π_ref samples per "
        f"held-out prompt for the preference accuracy; labels by {s.annotator}; seeds {list(s.seeds)}.",
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
        suffix = "" if len(s.prompts) == 1 else f"-p{n}"
        slug = task_slug(task)
        metrics = [m for m in METRICS if has_metric(by_arm, m)]
        versus_activedpo = against_activedpo(by_arm, s.rounds, metrics)
        lines += [
            "",
            f"## Task `{task}`, {n} prompts × {s.responses} responses per round "
            f"({n * s.responses * (s.responses - 1) // 2 / s.budget:.0f} candidate pairs per label)",
            "",
            "DPO: lr {lr:g}, {epochs:g} epochs, β {beta:g}.".format(**s.dpo(load_task(task))),
        ]
        for metric in metrics:
            lines += ["", f"### {METRICS[metric]}", "", *summarize(by_arm, s.rounds, metric), "",
                      *verdicts(by_arm, s.rounds, metric=metric)]  # fmt: skip
        pairs = schedule_pairs(arms, all_arms, s.rounds)
        if pairs:
            lines += ["", "### Other schedules (their own rounds × budget), final round against random's", "",
                      "Paired with random on the same schedule where that ran, else with random's final round "
                      f"({s.rounds} × {s.budget}).", "", *schedule_table(pairs, all_arms, metrics)]  # fmt: skip
        audited = audit_table(by_arm, s.rounds)
        if audited:
            lines += ["", "### Audit labels against the truth they estimate", "", *audited]
        lines += ["", "### Power, paired by seed", "", *power_table(by_arm, s.rounds, metrics), "",
                  *versus_activedpo, *([""] if versus_activedpo else []),
                  f"Plot: `reward-{slug}{suffix}.png`."]  # fmt: skip
        mean_rows = {}
        for arm, by_seed in by_arm.items():
            runs = [by_seed[seed] for seed in sorted(by_seed)]
            ref = float(np.mean([r[0].ref_reward for r in runs]))  # π_ref on each seed's held-out sample
            mean_rows[arm] = [
                RoundMetrics(round=i + 1, labels=runs[0][i].labels, reward=float(np.mean([r[i].reward for r in runs])),
                             se=float(np.std([r[i].reward for r in runs], ddof=1) / math.sqrt(len(runs)))
                             if len(runs) > 1 else 0.0, ref_reward=ref)
                for i in range(min(len(r) for r in runs))
            ]  # fmt: skip
        plot_rewards(mean_rows, s.out / f"reward-{slug}{suffix}.png",
                     title=f"{task}, {n} prompts/round: mean ± SE over seeds")  # fmt: skip
    lines += ["", "Raw per-run metrics: `runs.jsonl`; the paired comparisons as data: `summary.json`."]
    print("\n".join(lines))
    write(s.out / "report.md", lines)
    (s.out / "summary.json").write_text(json.dumps(summary(s, arms, results), indent=1) + "\n")


def summary(s: BenchSettings, arms: list[Arm], results: Results) -> dict:
    """The paired comparisons as data (the quickstart and the regime study quote them): per task and pool size,
    per arm and metric, the final difference from its baseline (random, or random on the arm's own schedule,
    see ``schedule_pairs``): mean, 95% CI half-width, paired SD, MDE and seeds."""
    out: dict = {"rounds": s.rounds, "budget": s.budget, "comparisons": []}
    for (task, n), ran in results.items():
        pairs = [(a.spec, s.rounds, "random", s.rounds) for a in arms
                 if a.spec in ran and a.spec != "random" and "random" in ran and not a.scheduled]  # fmt: skip
        pairs += schedule_pairs(arms, ran, s.rounds)
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
