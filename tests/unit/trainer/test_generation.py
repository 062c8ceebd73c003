"""Sampling K responses per prompt: seeded, left-padded, stopped at EOS, continuations of the prompt."""

from __future__ import annotations

import pytest

from activedpo_core.checkpoint import load_model
from activedpo_trainer.generation import GenerationSettings, generate

SETTINGS = GenerationSettings(max_new_tokens=16)


@pytest.fixture(scope="module")
def sft(tiny_world):
    return load_model(tiny_world.sft_dir)


def test_k_responses_per_prompt_seeded(sft, tiny_world):
    prompts = tiny_world.task.heldout_prompts()[:5]
    a = generate(sft.model, sft.tokenizer, prompts, 3, SETTINGS, seed=7)
    assert len(a) == 5 and all(len(g) == 3 for g in a)
    assert a == generate(sft.model, sft.tokenizer, prompts, 3, SETTINGS, seed=7)
    assert a != generate(sft.model, sft.tokenizer, prompts, 3, SETTINGS, seed=8)
    assert len({r for g in a for r in g}) > 5  # sampling gives distinct responses


def test_responses_continue_their_prompt_and_stop_at_eos(sft, tiny_world):
    tok = sft.tokenizer
    prompts = tiny_world.task.heldout_prompts()[:4]
    for prompt, group in zip(prompts, generate(sft.model, tok, prompts, 2, SETTINGS, seed=1), strict=True):
        for r in group:
            assert "<eos>" not in r and "<pad>" not in r
            full = tok(prompt + r, add_special_tokens=False)["input_ids"]
            assert full[: len(tok(prompt, add_special_tokens=False)["input_ids"])] == tok(prompt)["input_ids"]
            assert len(r.split()) <= SETTINGS.max_new_tokens


def test_left_padding_does_not_change_greedy_outputs(sft, tiny_world):
    """Prompts of different lengths in one batch give what each gives alone."""
    greedy = GenerationSettings(temperature=0, max_new_tokens=8)
    long = tiny_world.task.heldout_prompts()[0]
    short = "write a poem about ocean :"
    batch = generate(sft.model, sft.tokenizer, [long, short], 1, greedy)
    alone = [generate(sft.model, sft.tokenizer, [p], 1, greedy)[0] for p in (long, short)]
    assert batch == alone


def test_settings_are_validated():
    with pytest.raises(ValueError, match="temperature"):
        GenerationSettings(temperature=-1)
    with pytest.raises(ValueError, match="top_p"):
        GenerationSettings(top_p=0)


def test_progress_is_reported(sft, tiny_world):
    seen = []
    prompts = tiny_world.task.heldout_prompts()[:5]
    generate(
        sft.model,
        sft.tokenizer,
        prompts,
        1,
        GenerationSettings(max_new_tokens=4, batch_size=2),
        progress=lambda d, t: seen.append((d, t)),
    )
    assert seen == [(2, 5), (4, 5), (5, 5)]
