"""The default toy world is a real problem: mediocre pi_ref, signal in its pairs, and DPO pays.

Builds the default world (about a minute on two CPU cores) and trains one DPO round with the
paper's defaults on 200 oracle-labeled pairs of pi_ref's own samples.
"""

from __future__ import annotations

import pytest

from activedpo_trainer.heldout import dpo_check
from activedpo_trainer.toyworld import ToyWorldConfig, build_toyworld


@pytest.mark.slow
def test_default_world_makes_dpo_pay(tmp_path_factory):
    cache = tmp_path_factory.mktemp("default-world")
    world = build_toyworld(ToyWorldConfig.preset("default"), cache_dir=cache)  # its time: benchmarks/toyworld.py

    sft = world.info["sft_eval"]
    assert -1.5 < sft["reward"] < 0.5, "pi_ref must be mediocre: room to improve, not hopeless"

    # two label draws: which 200 pairs get labeled matters, and one draw can be unlucky
    checks = [dpo_check(world, cache / f"dpo-{seed}", n_pairs=200, seed=seed, eval_prompts=100, pair_samples=3)
              for seed in (0, 1)]  # fmt: skip
    for check in checks:
        assert check.pair_reward_gap > 1.0, "pi_ref's own pairs must differ in reward (signal per label)"
        assert check.report.reward > check.report.ref_reward
    assert checks[0].report.ref_reward == pytest.approx(sft["reward"])  # pi_ref, adapter disabled: the SFT model
    lift = sum(c.report.reward - c.report.ref_reward for c in checks) / len(checks)
    noise = max(max(c.report.se, c.report.ref_se) for c in checks)
    assert lift > 2 * noise, f"mean DPO lift {lift:.3f} is not clear of the noise ({noise:.3f})"
    assert sum(c.report.win_rate for c in checks) / len(checks) > 0.55
    # the implicit reward learned from 200 labels orders held-out pairs of π_ref's samples as the oracle does
    for check in checks:
        assert check.pref_pairs > 150 and check.pref_acc > 0.5 + 2 * check.pref_acc_se
