"""The regime study: where does selection pay? One factor at a time, activedpo against random, paired by seed.

    .venv/bin/python benchmarks/regimes.py [--seeds 0 1 … 9] [--factors pool schedule noise uninformative mode]
        [--jobs 2] [--work-dir runs/evidence] [--out benchmarks/results/regimes]

Every level is an ``activedpo-client bench`` run of ``activedpo`` and ``random`` on the base setting: task
``toy`` with its recorded DPO settings, 1000 prompts × 3 responses a round (60 candidate pairs per
label), 3 rounds × 50 labels, Bradley–Terry labels, ``--dpo-mode continue``. One factor moves:

- ``pool``: prompts per round 100, 300, 1000 (6, 18, 60 candidate pairs per label);
- ``schedule``: 3 × 50 against 10 × 15 labels (both strategies on each schedule: at 10 × 15 the arms
  ``activedpo@rounds=10,budget=15`` and ``random@rounds=10,budget=15``, which the main benchmark's schedule
  arm shares);
- ``noise``: Bradley–Terry labels against the deterministic oracle (no label noise);
- ``uninformative``: the share of solved prompts, whose pairs are near-ties: ``toy`` (0 of 12 topics),
  ``activedpo_trainer.toytasks:mixed_6`` (6), ``mixed`` (9), ``activedpo_trainer.toytasks:mixed_11`` (11);
- ``mode``: ``--dpo-mode continue`` against ``retrain``.

A run's directory names its task, prompts per round, arm (with its schedule) and seed, so the levels that
change only those share ``--work-dir`` with the main benchmark (and reuse its runs); the others (noise,
mode) have work dirs of their own under ``--work-dir/regimes/``.

Each level's full report lands in ``--out/<factor>-<level>/``; ``--out/report.md`` has one table per
factor: final activedpo − random on held-out reward and on preference accuracy, mean ± 95% CI over
the paired seeds, and the MDE at 80% power.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from _report import header, write

SCHEDULE = "rounds=10,budget=15"
SCHEDULED = f"activedpo@{SCHEDULE}"  # paired with random on the same schedule (see bench.schedule_pairs)
BASE = ["--tasks", "toy", "--arms", "activedpo", "random", "--prompts", "1000"]
LEVELS: dict[str, list[tuple[str, list[str]]]] = {
    "pool": [("100 prompts", ["--prompts", "100"]), ("300 prompts", ["--prompts", "300"]), ("1000 prompts", [])],
    "schedule": [("3 × 50", []), ("10 × 15", ["--arms", "activedpo", "random", SCHEDULED, f"random@{SCHEDULE}"])],
    "noise": [("Bradley–Terry", []), ("deterministic", ["--annotator", "oracle-deterministic"])],
    "uninformative": [("toy (0 of 12 topics solved)", []),
                      ("mixed-6 (6 of 12)", ["--tasks", "activedpo_trainer.toytasks:mixed_6"]),
                      ("mixed (9 of 12)", ["--tasks", "mixed"]),
                      ("mixed-11 (11 of 12)", ["--tasks", "activedpo_trainer.toytasks:mixed_11"])],
    "mode": [("continue", []), ("retrain", ["--dpo-mode", "retrain"])],
}  # fmt: skip


def level_args(extra: list[str]) -> list[str]:
    """The base arguments with ``extra``'s options replacing the base's."""
    out, base = [], list(BASE)
    given = {a for a in extra if a.startswith("--")}
    i = 0
    while i < len(base):
        j = i + 1
        while j < len(base) and not base[j].startswith("--"):
            j += 1
        if base[i] not in given:
            out += base[i:j]
        i = j
    return out + extra


def shares_runs(extra: list[str]) -> bool:
    """Whether a level's runs can live in the base work dir: a run's directory names its task, prompts per
    round, arm (with its own schedule, if any) and seed, so levels that change only those share it (and the
    main benchmark's runs)."""
    return {a for a in extra if a.startswith("--")} <= {"--tasks", "--prompts", "--arms"}


def comparisons(summary_path: Path) -> dict[str, dict]:
    """metric → the activedpo arm's paired comparison with its baseline; an activedpo arm with a schedule of its
    own (paired with random on that schedule) stands in for the plain one."""
    data = json.loads(summary_path.read_text())
    out: dict[str, dict] = {}
    for c in data["comparisons"]:
        if c["arm"].split("@")[0] == "activedpo" and (c["metric"] not in out or c["arm"] != "activedpo"):
            out[c["metric"]] = c
    return out


def factor_table(factor: str, rows: list[tuple[str, dict[str, dict]]]) -> list[str]:
    lines = [f"## {factor}", "", "| level | seeds | reward: activedpo − random | MDE | preference accuracy: "
             "activedpo − random | MDE |", "|---|---|---|---|---|---|"]  # fmt: skip
    for level, comp in rows:
        cells = []
        for metric in ("reward", "pref_acc"):
            c = comp.get(metric)
            cells += [f"{c['mean']:+.3f} ± {c['ci95']:.3f}", f"{c['mde80']:.3f}"] if c else ["—", "—"]
        n = max((c["seeds"] for c in comp.values()), default=0)
        lines.append(f"| {level} | {n} | " + " | ".join(cells) + " |")
    return lines


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, nargs="+", default=list(range(10)))
    ap.add_argument("--factors", nargs="+", default=list(LEVELS), choices=list(LEVELS))
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--work-dir", type=Path, default=Path("runs/evidence"))
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/regimes"))
    args = ap.parse_args()

    from activedpo_client.cli.bench import main as bench

    lines = [*header("Where selection pays: one factor at a time, activedpo − random paired by seed"),
             f"Base: {' '.join(BASE)}, 3 rounds × 50 labels, Bradley–Terry labels, DPO continue; seeds {args.seeds}. "
             "Each level's full report: `<factor>-<level>/report.md` here."]  # fmt: skip
    for factor in args.factors:
        rows = []
        for n, (level, extra) in enumerate(LEVELS[factor]):
            out = args.out / f"{factor}-{n}"
            work = args.work_dir if shares_runs(extra) else args.work_dir / "regimes" / f"{factor}-{n}"
            argv = [*level_args(extra), "--seeds", *map(str, args.seeds), "--jobs", str(args.jobs), "--work-dir",
                    str(work), "--out", str(out)]  # fmt: skip
            print(f"{factor} / {level}: activedpo-client bench {' '.join(argv)}", flush=True)
            bench(argv)
            rows.append((level, comparisons(out / "summary.json")))
        lines += ["", *factor_table(factor, rows)]
    print("\n".join(lines))
    write(args.out / "report.md", lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())
