"""Evaluation: mean oracle reward ± standard error, and the win-rate against pi_ref."""

from __future__ import annotations

import math

import numpy as np
import pytest

from activedpo_trainer.checkpoint import CheckpointManifest, load_model
from activedpo_trainer.evaluate import evaluate_policy, mean_and_se
from activedpo_trainer.generation import GenerationSettings, generate


def test_mean_and_standard_error():
    values = [1.0, 2.0, 4.0, 7.0]
    mean, se = mean_and_se(values)
    assert mean == 3.5
    assert se == pytest.approx(np.std(values, ddof=1) / math.sqrt(4))
    assert mean_and_se([2.0]) == (2.0, 0.0)
    with pytest.raises(ValueError, match="no values"):
        mean_and_se([])


def test_report_matches_the_oracle_on_the_sampled_responses(tiny_world):
    from activedpo_trainer.generation import GenerationSettings, generate

    sft = load_model(tiny_world.sft_dir)
    prompts = tiny_world.task.heldout_prompts()[:12]
    report = evaluate_policy(sft.model, sft.tokenizer, tiny_world.task, prompts, seed=4, max_new_tokens=16)
    responses = generate(sft.model, sft.tokenizer, prompts, 1, GenerationSettings(max_new_tokens=16), seed=4)
    expected = mean_and_se([tiny_world.task.reward(p, g[0]) for p, g in zip(prompts, responses, strict=True)])
    assert (report.mean, report.se, report.n) == (*expected, 12)
    assert report.win_rate is None
    with pytest.raises(ValueError, match="needs a model with a LoRA adapter"):
        evaluate_policy(sft.model, sft.tokenizer, tiny_world.task, prompts, with_reference=True)


def test_an_adapter_equal_to_the_base_ties_pi_ref_everywhere(tiny_world, tmp_path):
    """A fresh LoRA adapter (B = 0) is pi_ref itself: same samples, so every prompt is a tie."""
    from peft import LoraConfig, get_peft_model

    base = load_model(tiny_world.sft_dir).model
    get_peft_model(base, LoraConfig(r=2, target_modules="all-linear")).save_pretrained(tmp_path / "adapter")
    m = CheckpointManifest.new(str(tiny_world.sft_dir), str(tmp_path / "adapter"), None)
    policy = load_model(m)
    prompts = tiny_world.task.heldout_prompts()[:10]
    report = evaluate_policy(
        policy.model, policy.tokenizer, tiny_world.task, prompts, max_new_tokens=16, with_reference=True
    )
    assert report.win_rate == 0.5
    assert report.ref_mean == report.mean and report.ref_se == report.se
    assert "win-rate vs pi_ref 50.0%" in str(report)


def test_a_different_policy_wins_or_loses(tiny_world, random_adapter):
    policy = load_model(random_adapter)
    prompts = tiny_world.task.heldout_prompts()[:10]
    report = evaluate_policy(
        policy.model, policy.tokenizer, tiny_world.task, prompts, max_new_tokens=16, with_reference=True
    )
    assert report.mean != report.ref_mean  # a random adapter samples differently from pi_ref
    # the same draws by hand: one sample each from the policy and from the base, same seed
    settings = GenerationSettings(max_new_tokens=16)
    mine = [g[0] for g in generate(policy.model, policy.tokenizer, prompts, 1, settings, seed=0)]
    with policy.model.disable_adapter():
        ref = [g[0] for g in generate(policy.model, policy.tokenizer, prompts, 1, settings, seed=0)]
    r_mine = [tiny_world.task.reward(p, y) for p, y in zip(prompts, mine, strict=True)]
    r_ref = [tiny_world.task.reward(p, y) for p, y in zip(prompts, ref, strict=True)]
    wins = [1.0 if a > b else 0.5 if a == b else 0.0 for a, b in zip(r_mine, r_ref, strict=True)]
    assert report.win_rate == pytest.approx(sum(wins) / len(wins))
    assert report.mean == pytest.approx(sum(r_mine) / len(r_mine))


def test_a_reward_model_scores_the_policy_against_pi_ref(tiny_world, random_adapter, tmp_path):
    """Any scorer works: here a callable that rewards short responses, checked against a hand count."""
    policy = load_model(random_adapter)
    prompts = tiny_world.task.heldout_prompts()[:8]

    def shortness(ps, ys):
        return [-float(len(y.split())) for y in ys]

    report = evaluate_policy(policy.model, policy.tokenizer, shortness, prompts, max_new_tokens=16,
                             with_reference=True)  # fmt: skip
    settings = GenerationSettings(max_new_tokens=16)
    mine = [g[0] for g in generate(policy.model, policy.tokenizer, prompts, 1, settings, seed=0)]
    assert report.mean == pytest.approx(-sum(len(y.split()) for y in mine) / len(mine))
