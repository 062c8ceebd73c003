"""Drift from π_ref: zero for an adapter that changes nothing, positive both ways for one that does, and the
per-token and per-response figures agree with the log-probabilities they are made of."""

from __future__ import annotations

import numpy as np
import pytest

from activedpo_core.checkpoint import load_model
from activedpo_core.sequences import sequence_logprobs
from activedpo_trainer.drift import drift
from activedpo_trainer.generation import GenerationSettings, generate


def test_a_random_adapter_drifts_and_an_unchanged_one_does_not(tiny_world, random_adapter):
    prompts = tiny_world.task.heldout_prompts()[:12]
    moved = load_model(random_adapter)
    d = drift(moved.model, moved.tokenizer, prompts, max_new_tokens=8, seed=3)
    assert d.prompts == 12 and d.kl_seq > 0.05 and d.kl_token > 0  # E_θ[log π_θ/π_ref] = KL ≥ 0, here well above
    assert d.ref_loglik < d.ref_loglik_ref  # π_ref's own samples are likelier under π_ref than under the policy
    # the figures are the log-probabilities they are made of: the policy's samples, scored by both models
    settings = GenerationSettings(temperature=1.0, top_p=1.0, max_new_tokens=8)
    mine = [g[0] for g in generate(moved.model, moved.tokenizer, prompts, 1, settings, seed=3)]
    ratio = sequence_logprobs(moved.model, moved.tokenizer, prompts, mine)
    with moved.model.disable_adapter():
        ratio = ratio - sequence_logprobs(moved.model, moved.tokenizer, prompts, mine)
    assert d.kl_seq == pytest.approx(ratio.mean(), abs=1e-4)
    assert d.kl_seq_se == pytest.approx(ratio.std(ddof=1) / np.sqrt(12), abs=1e-4)

    from peft import LoraConfig, get_peft_model

    still = load_model(tiny_world.sft_dir)  # an adapter whose B is zero: π_θ = π_ref exactly
    model = get_peft_model(still.model, LoraConfig(r=4, lora_alpha=8, target_modules="all-linear"))
    zero = drift(model, still.tokenizer, prompts, max_new_tokens=8, seed=3)
    assert (zero.kl_seq, zero.kl_token, zero.ref_loglik) == (0.0, 0.0, zero.ref_loglik_ref)
    with pytest.raises(ValueError, match="at least one prompt"):
        drift(model, still.tokenizer, [], max_new_tokens=8)
