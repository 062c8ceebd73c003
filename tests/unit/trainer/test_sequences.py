"""Token layout of (prompt, response) pairs and log pi(y|x)."""

from __future__ import annotations

import numpy as np
import torch

from activedpo_trainer.checkpoint import load_model
from activedpo_trainer.sequences import encode_pairs, sequence_logprobs


def test_labels_cover_the_response_and_eos_only(tiny_world):
    tok = load_model(tiny_world.sft_dir).tokenizer
    prompt = tiny_world.task.heldout_prompts()[0]
    ids, att, lab = encode_pairs(tok, [prompt, prompt], [" wave tide", " bright"])
    n_prompt = len(tok(prompt, add_special_tokens=False)["input_ids"])
    assert ids.shape == att.shape == lab.shape == (2, n_prompt + 3)
    assert (lab[:, :n_prompt] == -100).all()
    assert tok.convert_ids_to_tokens(lab[0, n_prompt:].tolist()) == ["wave", "tide", "<eos>"]
    assert tok.convert_ids_to_tokens(lab[1, n_prompt : n_prompt + 2].tolist()) == ["bright", "<eos>"]
    assert att[1].tolist() == [1] * (n_prompt + 2) + [0] and lab[1, -1] == -100  # right padding, unlabeled


def test_sequence_logprobs_is_the_sum_of_next_token_logprobs(tiny_world):
    loaded = load_model(tiny_world.sft_dir)
    model, tok = loaded.model, loaded.tokenizer
    prompt = tiny_world.task.heldout_prompts()[1]
    response = " moss tree calm"
    got = sequence_logprobs(model, tok, [prompt, prompt], [response, " a"])

    ids = tok(prompt + response, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    n_prompt = len(tok(prompt, add_special_tokens=False)["input_ids"])
    with torch.no_grad():
        logp = torch.log_softmax(model(torch.tensor([ids])).logits[0].double(), -1)
    manual = sum(logp[t - 1, ids[t]].item() for t in range(n_prompt, len(ids)))
    np.testing.assert_allclose(got[0], manual, rtol=1e-5)
    assert got[1] != got[0]
    # batching and padding do not change a row's score
    np.testing.assert_allclose(sequence_logprobs(model, tok, [prompt], [response]), got[:1], rtol=1e-5)
