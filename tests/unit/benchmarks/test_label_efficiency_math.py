"""The label-efficiency benchmark's parts: confidence intervals, AUC, labels to reach a target, arms, locks."""

from __future__ import annotations

import pytest

from activedpo_client.bench import (
    Arm,
    auc,
    claim,
    curve,
    labels_to_reach,
    mean_ci,
    paired_difference,
    summarize,
    variant_verdicts,
    verdicts,
)


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


def run(*rewards):
    return [{"labels": 50 * (i + 1), "reward": r, "ref_reward": 0.0} for i, r in enumerate(rewards)]


def test_paired_difference_and_plain_verdicts():
    base = {0: run(0.0, 1.0), 1: run(0.0, 2.0), 2: run(0.0, 3.0)}
    ahead = {s: run(0.0, rows[-1]["reward"] + 0.5 + 0.01 * s) for s, rows in base.items()}
    m, ci, n = paired_difference(ahead, base, 2)
    assert n == 3 and m == pytest.approx(0.51) and ci == pytest.approx(4.303 * 0.01 / 3**0.5)
    # unpaired, the spread of random's seeds (1, 2, 3) would swamp a 0.5 gain; paired it is clear
    noisy = {0: run(0.0, 1.4), 1: run(0.0, 2.6), 2: run(0.0, 3.0)}
    lines = verdicts({"a": ahead, "b": {s: run(0, r[-1]["reward"] - 1) for s, r in base.items()}, "c": noisy,
                      "random": base}, 2)  # fmt: skip
    assert lines[0].startswith("- a **beat random**: final reward +0.510")
    assert lines[1].startswith("- b **lost to random**")
    assert lines[2].startswith("- c: **no significant difference from random**")
    assert paired_difference({5: run(1.0)}, base, 1)[2] == 0  # no common seed
    table = summarize({"a": ahead, "random": base}, 2)
    assert any(line.startswith("| a |") and "+0.510 ±" in line for line in table)


def test_activedpo_variants_are_also_compared_with_activedpo():
    default = {0: run(0.0, 1.0), 1: run(0.0, 2.0), 2: run(0.0, 3.0)}
    worse = {s: run(0.0, rows[-1]["reward"] - 0.5 + 0.01 * s) for s, rows in default.items()}
    results = {"activedpo": default, "random": default, "activedpo@raw": worse, "apo": worse}
    lines = variant_verdicts(results, 2)
    assert lines[0] == "Against `activedpo` at the default settings, paired by seed:"
    assert lines[2].startswith("- activedpo@raw **lost to activedpo**: final reward -0.490")
    assert len(lines) == 3  # neither random nor apo is an activedpo variant
    assert variant_verdicts({"activedpo": default, "random": default}, 2) == []
    assert variant_verdicts({"activedpo@raw": worse, "random": default}, 2) == []


def test_arms_parse_settings_and_reject_unknown_ones(tmp_path):
    arm = Arm.parse("activedpo@d=512,lam=0.1,raw,frozen")
    assert (arm.strategy, arm.proj_dim, arm.lam, arm.normalize, arm.frozen) == ("activedpo", 512, 0.1, False, True)
    assert arm.serve_extra(tmp_path) == ("--lam", "0.1", "--no-normalize", "--feature-checkpoint", str(tmp_path))
    assert Arm.parse("random").serve_extra(tmp_path) == () and "@" not in Arm.parse("activedpo@raw").slug
    assert Arm.parse("activedpo-topb@lam=10").serve_extra(tmp_path) == ("--research-strategies", "--lam", "10.0")
    with pytest.raises(ValueError, match="unknown strategy 'best'"):
        Arm.parse("best")
    with pytest.raises(ValueError, match="unknown setting 'd=x'"):
        Arm.parse("activedpo@d=x")
    with pytest.raises(ValueError, match="unknown setting 'fast'"):
        Arm.parse("activedpo@fast")
    assert Arm.parse("activedpo@proj=kron").serve_extra(tmp_path) == ("--projection", "kron")
    with pytest.raises(ValueError, match=r"unknown setting 'proj=gauss'; use d=N, lam=X, proj=sjlt\|kron\|dense"):
        Arm.parse("activedpo@proj=gauss")


def test_a_claimed_run_is_skipped_by_others_until_released(tmp_path):
    import subprocess
    import sys

    holder = subprocess.Popen(
        [sys.executable, "-c", "import fcntl, sys, time; f = open(sys.argv[1], 'w'); fcntl.flock(f, fcntl.LOCK_EX); "
         "print('held', flush=True); time.sleep(30)", str(tmp_path / ".bench.lock")],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "held"
        with claim(tmp_path, wait=False) as mine:
            assert mine is False
    finally:
        holder.kill()
        holder.wait()
    with claim(tmp_path, wait=False) as mine:
        assert mine is True
