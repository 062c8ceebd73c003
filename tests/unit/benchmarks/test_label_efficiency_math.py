"""The label-efficiency benchmark's parts: confidence intervals, AUC, labels to reach a target, arms, locks."""

from __future__ import annotations

from dataclasses import replace
from typing import Annotated

import pytest
import typer

from activedpo_client.artifacts import RoundMetrics
from activedpo_client.bench.arms import Arm
from activedpo_client.bench.runner import BenchSettings, claim
from activedpo_client.bench.stats import auc, curve, labels_to_reach, mean_ci, paired_difference
from activedpo_client.bench.tables import against_activedpo, summarize, verdicts


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
        return [RoundMetrics(round=i + 1, labels=50 * (i + 1), reward=r, ref_reward=0.0) for i, r in enumerate(rewards)]

    results = {"activedpo": {0: run(1.0, 2.0), 1: run(1.0, 2.0)}, "random": {0: run(0.5, 1.0), 1: run(0.5, 1.0)}}
    lines = summarize(results, 2)
    assert "| 2 | 100 | 2.000 ± 0.000 (n=2) | 1.000 ± 0.000 (n=2) |" in lines
    assert curve(results["random"][0]) == ([0, 50, 100], [0.0, 0.5, 1.0])
    assert any(line.startswith("| activedpo |") and line.endswith("| 50 |") for line in lines)
    assert any(line.startswith("| random |") and line.endswith("| 100 |") for line in lines)


def run(*rewards):
    return [RoundMetrics(round=i + 1, labels=50 * (i + 1), reward=r, ref_reward=0.0) for i, r in enumerate(rewards)]


def test_paired_difference_and_plain_verdicts():
    base = {0: run(0.0, 1.0), 1: run(0.0, 2.0), 2: run(0.0, 3.0)}
    ahead = {s: run(0.0, rows[-1].reward + 0.5 + 0.01 * s) for s, rows in base.items()}
    m, ci, n = paired_difference(ahead, base, 2)
    assert n == 3 and m == pytest.approx(0.51) and ci == pytest.approx(4.303 * 0.01 / 3**0.5)
    # unpaired, the spread of random's seeds (1, 2, 3) would swamp a 0.5 gain; paired it is clear
    noisy = {0: run(0.0, 1.4), 1: run(0.0, 2.6), 2: run(0.0, 3.0)}
    lines = verdicts({"a": ahead, "b": {s: run(0, r[-1].reward - 1) for s, r in base.items()}, "c": noisy,
                      "random": base}, 2)  # fmt: skip
    assert lines[0].startswith("- a **beat random**: final reward +0.510")
    assert lines[1].startswith("- b **lost to random**")
    assert lines[2].startswith("- c: **no significant difference from random**")
    assert paired_difference({5: run(1.0)}, base, 1)[2] == 0  # no common seed
    table = summarize({"a": ahead, "random": base}, 2)
    assert any(line.startswith("| a |") and "+0.510 ±" in line for line in table)


def test_other_arms_are_also_compared_with_activedpo():
    default = {0: run(0.0, 1.0), 1: run(0.0, 2.0), 2: run(0.0, 3.0)}
    worse = {s: run(0.0, rows[-1].reward - 0.5 + 0.01 * s) for s, rows in default.items()}
    better = {s: run(0.0, rows[-1].reward + 0.3 + 0.01 * s) for s, rows in default.items()}
    results = {"activedpo": default, "random": default, "activedpo@raw": worse, "apo": better}
    lines = against_activedpo(results, 2)
    assert lines[0] == "Against `activedpo` at the default settings, paired by seed:"
    assert lines[2].startswith("- activedpo@raw **lost to activedpo**: final reward -0.490")
    assert lines[3].startswith("- apo **beat activedpo**: final reward +0.310")
    assert len(lines) == 4  # random is compared with everything elsewhere
    assert against_activedpo({"activedpo": default, "random": default}, 2) == []
    assert against_activedpo({"activedpo@raw": worse, "random": default}, 2) == []
    for by_seed in (default, worse):
        for seed, rows in by_seed.items():
            by_seed[seed] = [replace(r, pref_acc=r.reward / 10) for r in rows]
    two = against_activedpo({"activedpo": default, "activedpo@raw": worse}, 2, ("reward", "pref_acc"))
    assert two[2].startswith("- activedpo@raw **lost to activedpo**: final reward -0.490")
    assert two[3].startswith("- activedpo@raw **lost to activedpo**: final pref_acc -0.049")


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
    # seeds=N says how many runs, not how each runs: the runs share the plain arm's directories
    few = Arm.parse("aplp@seeds=10")
    assert (few.seeds, few.slug, few.serve_extra(tmp_path)) == (10, "aplp", ())
    assert Arm.parse("activedpo@lam=0.1,seeds=5").slug == Arm.parse("activedpo@lam=0.1").slug == "activedpo_lam=0.1"
    with pytest.raises(ValueError, match="unknown setting 'seeds=0'"):
        Arm.parse("apo@seeds=0")
    # audit pairs: an arm's own (the benchmark's arms have none, as the committed studies ran)
    audited = Arm.parse("activedpo@audit=0.2")
    assert (audited.audit, Arm.parse("activedpo").audit, audited.slug) == (0.2, 0.0, "activedpo_audit=0.2")
    with pytest.raises(ValueError, match="unknown setting 'audit=1'"):
        Arm.parse("activedpo@audit=1")
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


def test_minimum_detectable_effect_at_80_percent_power():
    from activedpo_client.bench.stats import mde80, t95

    assert mde80(0.5, 5) == pytest.approx((2.776 + 0.941) * 0.5 / 5**0.5)  # the 5 seeds: ~0.83
    assert mde80(0.5, 20) == pytest.approx((2.093 + 0.861) * 0.5 / 20**0.5)
    assert mde80(1.0, 1000) == pytest.approx((1.96 + 0.8416) / 1000**0.5)  # past the table: normal
    assert t95(22) == 2.086  # between tabulated dfs: the lower df's (wider) quantile
    assert mde80(1.0, 1) != mde80(1.0, 1)  # nan: no spread from one seed


def test_preference_accuracy_curves_start_at_one_half():
    rows = [RoundMetrics(round=1, labels=50, reward=1.0, ref_reward=-1.0, pref_acc=0.6)]
    assert curve(rows) == ([0, 50], [-1.0, 1.0])
    assert curve(rows, "pref_acc") == ([0, 50], [0.5, 0.6])
    table = summarize({"a": {0: rows, 1: rows}, "random": {0: rows, 1: rows}}, 1, "pref_acc")
    assert "| 1 | 50 | 0.600 ± 0.000 (n=2) | 0.600 ± 0.000 (n=2) |" in table


def test_labels_to_reach_with_a_bootstrap_interval_over_seeds():
    from activedpo_client.bench.stats import labels_to_reach_ci
    from activedpo_client.bench.tables import power_table

    def acc(*values):
        return [RoundMetrics(round=i + 1, labels=50 * (i + 1), reward=v, ref_reward=0.0, pref_acc=0.5 + v / 10)
                for i, v in enumerate(values)]  # fmt: skip

    base = {s: acc(0.5, 1.0 + 0.1 * s, 2.0 + 0.2 * s) for s in range(6)}  # random's final mean: 2.5
    fast = {s: acc(2.0 + 0.2 * s, 3.0, 3.0) for s in range(6)}  # its curve passes 2.5 between 50 and 100
    point, low, high, share = labels_to_reach_ci(fast, base, 3, draws=500)
    assert point == pytest.approx(50 + (2.5 - 2.5) / (3.0 - 2.5) * 50)  # arm mean at 50 labels is 2.5 exactly
    assert share == 1.0 and low is not None and high is not None and low <= point <= high < 100
    same = labels_to_reach_ci(base, base, 3, draws=200)
    assert same[0] == pytest.approx(150) and same[3] == 1.0  # the baseline reaches its own final mean at the end
    slow = {s: acc(0.0, 0.1, 0.2) for s in range(6)}
    assert labels_to_reach_ci(slow, base, 3, draws=200)[3] == 0.0
    lines = power_table({"fast": fast, "slow": slow, "random": base}, 3, ["reward", "pref_acc"])
    fast_reward = next(line for line in lines if line.startswith("| fast | reward |"))
    d = [3.0 - (2.0 + 0.2 * s) for s in range(6)]
    import numpy as np

    sd = float(np.std(d, ddof=1))
    assert f"| {sd:.3f} | {(2.571 + 0.920) * sd / 6**0.5:.3f} | 6 |" in fast_reward
    assert next(line for line in lines if line.startswith("| slow | reward |")).endswith("| not reached |")
    assert any(line.startswith("| fast | pref_acc |") for line in lines)


def test_dpo_settings_come_from_the_command_line_then_the_task_then_the_paper():
    from types import SimpleNamespace

    from activedpo_trainer.tasks import PAPER_DPO, recorded_dpo_settings

    none = BenchSettings()
    assert none.dpo(SimpleNamespace(name="custom")) == PAPER_DPO
    tuned = SimpleNamespace(name="t", dpo_settings={"lr": 3e-4})
    assert none.dpo(tuned) == PAPER_DPO | {"lr": 3e-4}
    assert BenchSettings(dpo_lr=1e-3, dpo_beta=0.2).dpo(tuned) == {"lr": 1e-3, "epochs": 4.0, "beta": 0.2}
    with pytest.raises(ValueError, match="unknown DPO settings \\['gamma'\\]"):
        recorded_dpo_settings(SimpleNamespace(name="t", dpo_settings={"gamma": 1}))


def test_the_quickstart_quotes_the_committed_multi_seed_result(tmp_path):
    import json

    from activedpo_client.bench.report import summary
    from activedpo_client.report import multiseed_line

    base = {s: run(0.0, 1.0 + s) for s in range(4)}
    ahead = {s: run(0.0, 1.5 + s + 0.01 * s) for s in range(4)}
    args = BenchSettings(rounds=2, budget=50)
    arms = [Arm.parse("activedpo"), Arm.parse("random")]
    data = summary(args, arms, {("toy", 1000): {"activedpo": ahead, "random": base}})
    (c,) = data["comparisons"]
    assert (c["task"], c["arm"], c["baseline"], c["metric"], c["seeds"], c["mean"]) == (
        "toy", "activedpo", "random", "reward", 4, 0.515)  # fmt: skip
    assert "MDE" not in multiseed_line("toy", report_dir=tmp_path) and "activedpo-client bench" in multiseed_line(
        "toy", report_dir=tmp_path
    )  # nothing committed yet: where to look
    policy = dict(c, metric="pref_acc_policy", mean=0.9)  # pairs that differ per arm: not quoted
    data["comparisons"] += [dict(c, metric="pref_acc", mean=0.02), policy]
    (tmp_path / "summary.json").write_text(json.dumps(data))
    line = multiseed_line("toy", report_dir=tmp_path)
    assert "Over 4 seeds" in line and "final reward +0.515 ±" in line and "(significant; MDE" in line
    assert "preference accuracy +0.020 ±" in line and "+0.900" not in line
    assert "holds no multi-seed result for task 'signoff'" in multiseed_line("signoff", report_dir=tmp_path)


def test_an_arm_with_its_own_schedule_is_compared_at_its_final_round():
    from activedpo_client.bench.report import summary
    from activedpo_client.bench.tables import schedule_pairs, schedule_table

    arm = Arm.parse("activedpo@rounds=10,budget=15")
    assert (arm.rounds, arm.budget, arm.scheduled, Arm.parse("activedpo").scheduled) == (10, 15, True, False)
    with pytest.raises(ValueError, match="unknown setting 'rounds=0'"):
        Arm.parse("activedpo@rounds=0")

    def many(final):
        return [RoundMetrics(round=i + 1, labels=15 * (i + 1), reward=final if i == 9 else 0.0, ref_reward=0.0)
                for i in range(10)]  # fmt: skip

    random = {s: run(0.0, 0.0, 1.0 + s) for s in range(3)}
    own = {s: many(1.5 + s) for s in range(3)}
    ran = {"random": random, arm.spec: own}
    # no random on its schedule: its final round (150 labels) against random's (150 labels in 3 rounds)
    pairs = schedule_pairs([Arm.parse("random"), arm], ran, 3)
    assert pairs == [(arm.spec, 10, "random", 3)]
    lines = schedule_table(pairs, ran, ["reward"])
    assert lines[2] == (f"| {arm.spec} | random | 150 / 150 | reward | 2.500 ± 2.484 | +0.500 ± 0.000 "
                        "| 0.000 | 0.000 | 3 |")  # fmt: skip
    # random on the same schedule ran too: activedpo pairs with it, and it with random on the base schedule
    same = Arm.parse("random@rounds=10,budget=15,seeds=3")
    ran[same.spec] = {s: many(1.0 + s + 0.1 * s) for s in range(3)}
    arms = [Arm.parse("activedpo"), Arm.parse("random"), arm, same]
    assert schedule_pairs(arms, ran, 3) == [(arm.spec, 10, same.spec, 10), (same.spec, 10, "random", 3)]
    lines = schedule_table(schedule_pairs(arms, ran, 3), ran, ["reward"])
    assert lines[2].startswith(f"| {arm.spec} | {same.spec} | 150 / 150 | reward | 2.500 ± 2.484 | +0.400 ± 0.248 |")
    data = summary(BenchSettings(rounds=3, budget=50), arms, {("toy", 1000): ran})
    got = {(c["arm"], c["baseline"]): c["mean"] for c in data["comparisons"]}
    assert got == {(arm.spec, same.spec): 0.4, (same.spec, "random"): 0.1}  # never a round-3 vs round-3 mix-up


def test_bench_lists_take_space_or_comma_separated_values_and_the_last_flag_counts():
    from typer.testing import CliRunner

    from activedpo_client.cli.bench import ListsCommand, _ints, _split

    app = typer.Typer()
    got = {}

    @app.command(cls=ListsCommand)
    def cmd(arms: Annotated[list[str] | None, typer.Option()] = None,
            seeds: Annotated[list[str] | None, typer.Option()] = None, rounds: int = 1) -> None:  # fmt: skip
        got.update(arms=_split(arms, commas=False), seeds=_ints(seeds, "--seeds"), rounds=rounds)

    @app.command()
    def other() -> None: ...

    argv = ["cmd", "--arms", "activedpo", "random", "--seeds", "0,1", "2", "--rounds", "3",
            "--arms", "activedpo@rounds=10,budget=15", "random"]  # fmt: skip
    assert CliRunner().invoke(app, argv).exit_code == 0
    # an arm's own settings keep their commas; a list given twice keeps its last values
    assert got == {"arms": ("activedpo@rounds=10,budget=15", "random"), "seeds": (0, 1, 2), "rounds": 3}
    with pytest.raises(ValueError, match="--seeds takes whole numbers"):
        _ints(["0,x"], "--seeds")


def test_bench_settings_resolve_paper_ablations_and_a_report_outside_the_tree(tmp_path):
    from activedpo_client.bench.arms import ABLATION_ARMS, DEFAULT_ARMS

    plain = BenchSettings(work_dir=tmp_path).resolved()
    assert plain.out == tmp_path / "report" and plain.arms == tuple(DEFAULT_ARMS) and plain.proj_dim == 2048
    paper = BenchSettings(paper=True, tasks=("toy", "signoff"), ablations=True).resolved()
    assert (paper.proj_dim, paper.rounds, paper.tasks, paper.arms) == (8192, 10, ("toy",), tuple(ABLATION_ARMS))


def test_the_audit_table_sets_each_estimate_against_the_truth_it_estimates():
    from activedpo_client.bench.tables import audit_table

    def run(seed: int, noise: float) -> list[RoundMetrics]:
        truth = 0.6 + 0.01 * seed
        return [RoundMetrics(round=1, labels=50, audit_acc=0.5, audit_se=0.0, audit_n=5, pool_acc_oracle=0.5),
                RoundMetrics(round=2, labels=100, audit_acc=truth + noise, audit_se=0.1, audit_n=5,
                             audit_pooled_se=0.07, pool_acc_oracle=truth, pref_acc=0.58, hint="stalled" * (seed == 0))]
    noise = [0.05, -0.05, 0.2, -0.04, 0.04]  # one estimate outside its 90% interval (0.2 > 1.645 × 0.1)
    table = audit_table({"activedpo@audit=0.1": {s: run(s, n) for s, n in enumerate(noise)},
                         "activedpo": {0: [RoundMetrics(round=1, labels=50), RoundMetrics(round=2, labels=100)]}}, 2)
    assert len(table) == 3  # the header, its rule, one row: the arm without audit pairs has none
    row = table[2]
    assert row.startswith("| activedpo@audit=0.1 | 2 | +0.040 ± ")
    assert "| 80% | 0.100 | 0.070 | 0.620 | 0.580 | 1/5 |" in row
    assert audit_table({"random": {0: [RoundMetrics(round=1, labels=50)]}}, 1) == []
