"""The regime study's parts: each level's arguments, and one table per factor from the levels' summaries."""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "benchmarks"))

from regimes import BASE, LEVELS, comparisons, factor_table, level_args, shares_runs


def test_a_level_replaces_only_the_options_it_names():
    assert level_args([]) == BASE
    assert level_args(["--prompts", "100"]) == ["--tasks", "toy", "--arms", "activedpo", "random", "--prompts", "100"]
    assert level_args(["--tasks", "mixed"]) == [
        "--arms",
        "activedpo",
        "random",
        "--prompts",
        "1000",
        "--tasks",
        "mixed",
    ]
    assert level_args(["--annotator", "oracle-deterministic"]) == [*BASE, "--annotator", "oracle-deterministic"]
    # each factor moves one thing away from the base, and one of its levels is the base itself
    assert all(sum(extra == [] for _, extra in levels) == 1 for levels in LEVELS.values())


def test_levels_that_change_only_task_or_pool_share_the_base_runs():
    assert shares_runs([]) and shares_runs(["--prompts", "100"]) and shares_runs(["--tasks", "mixed"])
    # the schedule level's arms carry their schedule, so their run directories name it
    (schedule,) = [extra for level, extra in LEVELS["schedule"] if extra]
    assert shares_runs(schedule) and "activedpo@rounds=10,budget=15" in schedule
    # a run's directory does not name these settings: their runs must not meet the base's
    assert not shares_runs(["--rounds", "10", "--budget", "15"])
    assert not shares_runs(["--annotator", "oracle-deterministic"]) and not shares_runs(["--dpo-mode", "retrain"])


def test_one_table_per_factor_from_the_levels_summaries(tmp_path):
    def summary(mean):
        return {"rounds": 3, "budget": 50, "comparisons": [
            {"task": "toy", "prompts": 1000, "arm": "activedpo", "metric": "reward", "seeds": 10, "mean": mean,
             "ci95": 0.1, "sd": 0.14, "mde80": 0.125},
            {"task": "toy", "prompts": 1000, "arm": "aplp", "metric": "reward", "seeds": 10, "mean": 9.0,
             "ci95": 0.1, "sd": 0.14, "mde80": 0.125}]}  # fmt: skip

    rows = []
    for n, mean in enumerate((0.2, -0.05)):
        (tmp_path / f"s{n}.json").write_text(json.dumps(summary(mean)))
        rows.append((f"level {n}", comparisons(tmp_path / f"s{n}.json")))
    # a scheduled activedpo arm (paired with random on its schedule) stands in for the plain one
    data = summary(0.2)
    data["comparisons"] += [dict(data["comparisons"][0], arm="activedpo@rounds=10,budget=15", mean=0.3),
                            dict(data["comparisons"][0], arm="random@rounds=10,budget=15", mean=0.7)]  # fmt: skip
    (tmp_path / "sched.json").write_text(json.dumps(data))
    assert comparisons(tmp_path / "sched.json")["reward"]["mean"] == 0.3
    lines = factor_table("pool", rows)
    assert lines[0] == "## pool"
    assert lines[4] == "| level 0 | 10 | +0.200 ± 0.100 | 0.125 | — | — |"  # not aplp's line
    assert lines[5] == "| level 1 | 10 | -0.050 ± 0.100 | 0.125 | — | — |"
