"""Evaluation: mean oracle reward ± standard error, and the win-rate against pi_ref."""

from __future__ import annotations

import math

import numpy as np
import pytest

from activedpo_core.checkpoint import CheckpointManifest, load_model
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
    assert (report.reward, report.se, report.n) == (*expected, 12)
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
    assert report.ref_reward == report.reward and report.ref_se == report.se
    assert "win-rate vs pi_ref 50.0%" in str(report)


def test_a_different_policy_wins_or_loses(tiny_world, random_adapter):
    policy = load_model(random_adapter)
    prompts = tiny_world.task.heldout_prompts()[:10]
    report = evaluate_policy(
        policy.model, policy.tokenizer, tiny_world.task, prompts, max_new_tokens=16, with_reference=True
    )
    assert report.reward != report.ref_reward  # a random adapter samples differently from pi_ref
    # the same draws by hand: one sample each from the policy and from the base, same seed
    settings = GenerationSettings(max_new_tokens=16)
    mine = [g[0] for g in generate(policy.model, policy.tokenizer, prompts, 1, settings, seed=0)]
    with policy.model.disable_adapter():
        ref = [g[0] for g in generate(policy.model, policy.tokenizer, prompts, 1, settings, seed=0)]
    r_mine = [tiny_world.task.reward(p, y) for p, y in zip(prompts, mine, strict=True)]
    r_ref = [tiny_world.task.reward(p, y) for p, y in zip(prompts, ref, strict=True)]
    wins = [1.0 if a > b else 0.5 if a == b else 0.0 for a, b in zip(r_mine, r_ref, strict=True)]
    assert report.win_rate == pytest.approx(sum(wins) / len(wins))
    assert report.reward == pytest.approx(sum(r_mine) / len(r_mine))


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
    assert report.reward == pytest.approx(-sum(len(y.split()) for y in mine) / len(mine))


def test_several_samples_per_prompt_average_per_prompt_first(tiny_world):
    sft = load_model(tiny_world.sft_dir)
    prompts = tiny_world.task.heldout_prompts()[:6]
    report = evaluate_policy(sft.model, sft.tokenizer, tiny_world.task, prompts, seed=2, max_new_tokens=16, samples=3)
    groups = generate(sft.model, sft.tokenizer, prompts, 3, GenerationSettings(max_new_tokens=16), seed=2)
    per_prompt = [np.mean([tiny_world.task.reward(p, y) for y in g]) for p, g in zip(prompts, groups, strict=True)]
    mean, se = mean_and_se(per_prompt)
    assert (report.n, report.samples) == (6, 3)
    assert report.reward == pytest.approx(mean) and report.se == pytest.approx(se)
    with pytest.raises(ValueError, match="samples must be at least 1"):
        evaluate_policy(sft.model, sft.tokenizer, tiny_world.task, prompts, samples=0)


def test_judged_pairs_are_distinct_responses_ranked_by_the_judge(tiny_world):
    from activedpo_trainer.evaluate import judged_pairs

    sft = load_model(tiny_world.sft_dir)
    prompts = tiny_world.task.heldout_prompts()[:8]
    settings = GenerationSettings(max_new_tokens=16)
    pairs = judged_pairs(sft.model, sft.tokenizer, tiny_world.task, prompts, 4, seed=5, settings=settings)
    groups = generate(sft.model, sft.tokenizer, prompts, 4, settings, seed=5)
    want = 0
    for p, g in zip(prompts, groups, strict=True):
        d = list(dict.fromkeys(g))
        r = [tiny_world.task.reward(p, y) for y in d]
        want += sum(r[i] != r[j] for i in range(len(d)) for j in range(i + 1, len(d)))
    assert len(pairs) == want and want > 8  # every untied pair of distinct samples, up to 6 per prompt
    for p, a, b, better in zip(pairs.prompts, pairs.a, pairs.b, pairs.a_better, strict=True):
        assert a != b and better == (tiny_world.task.reward(p, a) > tiny_world.task.reward(p, b))
    capped = judged_pairs(sft.model, sft.tokenizer, tiny_world.task, prompts, 4, seed=5, settings=settings,
                          max_pairs=5)  # fmt: skip
    assert len(capped) == 5 and set(zip(capped.a, capped.b, strict=True)) <= set(zip(pairs.a, pairs.b, strict=True))


def test_preference_accuracy_is_the_implicit_reward_against_the_judge(tiny_world, random_adapter, tmp_path):
    from dataclasses import replace

    from peft import LoraConfig, get_peft_model

    from activedpo_core.sequences import sequence_logprobs
    from activedpo_trainer.evaluate import JudgedPairs, judged_pairs, preference_accuracy, with_reference_logprobs

    policy = load_model(random_adapter)
    model, tok = policy.model, policy.tokenizer
    prompts = tiny_world.task.heldout_prompts()[:10]
    with model.disable_adapter():
        pairs = judged_pairs(
            model, tok, tiny_world.task, prompts, 3, seed=1, settings=GenerationSettings(max_new_tokens=16)
        )
        pairs = with_reference_logprobs(model, tok, pairs)
    acc, se = preference_accuracy(model, tok, pairs)
    # by hand: log π_θ/π_ref of the judge's preferred response minus the other's
    lp_a, lp_b = (
        sequence_logprobs(model, tok, pairs.prompts, pairs.a),
        sequence_logprobs(model, tok, pairs.prompts, pairs.b),
    )
    with model.disable_adapter():
        ref_a = sequence_logprobs(model, tok, pairs.prompts, pairs.a)
        ref_b = sequence_logprobs(model, tok, pairs.prompts, pairs.b)
    margin = (lp_a - ref_a) - (lp_b - ref_b)
    correct = np.where(np.asarray(pairs.a_better), margin > 0, margin < 0).astype(float)
    assert acc == pytest.approx(correct.mean()) and 0 < acc < 1
    # its SE is over prompts (pairs of one prompt share responses): the ratio estimator's, by hand
    keys = list(dict.fromkeys(pairs.prompts))
    w = np.array([pairs.prompts.count(k) for k in keys], dtype=float)
    per = np.array([correct[[i for i, p in enumerate(pairs.prompts) if p == k]].mean() for k in keys])
    assert se == pytest.approx(math.sqrt(len(keys) / (len(keys) - 1) * np.sum((w * (per - acc)) ** 2)) / w.sum())
    flipped = replace(pairs, a_better=[not x for x in pairs.a_better])
    assert preference_accuracy(model, tok, flipped)[0] == pytest.approx(1 - acc)  # no ties off π_ref
    # without stored π_ref log-probabilities they come from the adapter disabled: the same value
    bare = JudgedPairs(pairs.prompts, pairs.a, pairs.b, pairs.a_better)
    assert preference_accuracy(model, tok, bare)[0] == pytest.approx(acc)
    assert JudgedPairs.from_dict(pairs.to_dict()) == pairs
    # one pair per prompt: the clustered SE is the plain standard error of the 0/1 outcomes
    first = sorted({p: i for i, p in reversed(list(enumerate(pairs.prompts)))}.values())
    one = JudgedPairs(
        *([getattr(pairs, f)[i] for i in first] for f in ("prompts", "a", "b", "a_better", "ref_a", "ref_b"))
    )
    acc1, se1 = preference_accuracy(model, tok, one)
    assert acc1 == pytest.approx(correct[first].mean())
    assert se1 == pytest.approx(np.std(correct[first], ddof=1) / math.sqrt(len(first)))

    # π_ref itself (a fresh adapter, B = 0): every margin is zero, a tie, so exactly 0.5
    base = load_model(tiny_world.sft_dir).model
    get_peft_model(base, LoraConfig(r=2, target_modules="all-linear")).save_pretrained(tmp_path / "adapter")
    fresh = load_model(CheckpointManifest.new(str(tiny_world.sft_dir), str(tmp_path / "adapter"), None))
    assert preference_accuracy(fresh.model, fresh.tokenizer, pairs)[0] == 0.5
