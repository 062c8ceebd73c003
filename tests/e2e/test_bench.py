"""`activedpo-client bench` end to end on the tiny world: two processes share the runs, a re-run resumes.

The arms are a research strategy (its embedded servers need ``--research-strategies``) and random.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

CLIENT = str(Path(sys.executable).parent / "activedpo-client")


def bench(tmp_path, cache_dir, *extra, check=True):
    cmd = [CLIENT, "bench", "--preset", "tiny", "--tasks", "toy", "--arms", "activedpo-fisher", "random",
           "--seeds", "0", "1", "--rounds", "1", "--budget", "4", "--prompts", "8", "--eval-prompts", "8",
           "--dpo-epochs", "1", "--proj-dim", "128", "--lora-r", "8", "--work-dir", str(tmp_path / "work"),
           "--out", str(tmp_path / "out"), *extra]  # fmt: skip
    env = os.environ | {"ACTIVEDPO_CACHE": str(cache_dir)}
    return subprocess.run(cmd, capture_output=True, text=True, env=env, check=check, timeout=600)


def test_bench_shares_runs_between_jobs_reports_and_resumes(tiny_world, cache_dir, tmp_path):
    first = bench(tmp_path, cache_dir, "--jobs", "2")
    helper_log = (tmp_path / "work" / "helper-1.log").read_text()
    ran_here = [line for line in first.stdout.splitlines() if line.startswith("toy p8 ")]
    ran_by_helper = [line for line in helper_log.splitlines() if line.startswith("toy p8 ")]
    assert ran_here and ran_by_helper  # the helper took some of the four runs
    fresh = [line for line in ran_here + ran_by_helper if "done before" not in line]
    assert len(fresh) == 4  # each (arm, seed) ran exactly once between the two processes
    rows = [json.loads(x) for x in (tmp_path / "out" / "runs.jsonl").read_text().splitlines()]
    assert sorted((r["arm"], r["seed"]) for r in rows) == [("activedpo-fisher", 0), ("activedpo-fisher", 1),
                                                           ("random", 0), ("random", 1)]  # fmt: skip
    assert all(r["task"] == "toy" and r["prompts"] == 8 and r["labels"] == 4 for r in rows)
    report = (tmp_path / "out" / "report.md").read_text()
    assert "## Task `toy`, 8 prompts × 3 responses per round" in report
    assert "| activedpo-fisher |" in report and "paired by seed" in report and "random" in report
    assert (tmp_path / "out" / "reward-toy.png").stat().st_size > 1000
    # a second invocation finds every run finished: nothing is trained again, the report is the same
    again = bench(tmp_path, cache_dir)
    assert again.stdout.count("(done before)") == 4
    assert [json.loads(x) for x in (tmp_path / "out" / "runs.jsonl").read_text().splitlines()] == rows
    # an arm on fewer seeds reuses the plain arm's runs
    fewer = bench(tmp_path, cache_dir, "--arms", "activedpo-fisher@seeds=1", "random")
    assert fewer.stdout.count("(done before)") == 3
    rows = [json.loads(x) for x in (tmp_path / "out" / "runs.jsonl").read_text().splitlines()]
    assert sorted((r["arm"], r["seed"]) for r in rows) == [("activedpo-fisher@seeds=1", 0), ("random", 0),
                                                           ("random", 1)]  # fmt: skip
    bad = bench(tmp_path, cache_dir, "--arms", "activedpo@fast", check=False)
    assert bad.returncode == 2 and "unknown setting 'fast'" in bad.stderr + bad.stdout
