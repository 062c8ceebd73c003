"""The label-efficiency report's arithmetic: confidence intervals, AUC, labels to reach a target."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "benchmarks"))

from label_efficiency import auc, curve, labels_to_reach, mean_ci, summarize


def test_mean_ci_uses_student_t():
    m, ci = mean_ci([1.0, 2.0, 3.0])
    assert m == 2.0 and ci == pytest.approx(4.303 * 1.0 / 3**0.5)
    assert mean_ci([5.0])[0] == 5.0


def test_auc_and_labels_to_reach():
    x, y = [0, 50, 100], [0.0, 1.0, 1.0]
    assert auc(x, y) == pytest.approx(0.75)
    assert labels_to_reach(x, y, 0.5) == pytest.approx(25.0)
    assert labels_to_reach(x, y, 2.0) is None
    assert labels_to_reach(x, [1.0, 1.0, 1.0], 0.5) == 0.0


def test_summary_table_compares_with_random():
    def run(*rewards):
        return [{"labels": 50 * (i + 1), "reward": r, "ref_reward": 0.0} for i, r in enumerate(rewards)]

    results = {"activedpo": {0: run(1.0, 2.0), 1: run(1.0, 2.0)}, "random": {0: run(0.5, 1.0), 1: run(0.5, 1.0)}}
    lines = summarize(results, 2)
    assert "| 2 | 100 | 2.000 ± 0.000 (n=2) | 1.000 ± 0.000 (n=2) |" in lines
    assert curve(results["random"][0]) == ([0, 50, 100], [0.0, 0.5, 1.0])
    assert any(line.startswith("| activedpo |") and line.endswith("| 50 |") for line in lines)
    assert any(line.startswith("| random |") and line.endswith("| 100 |") for line in lines)
