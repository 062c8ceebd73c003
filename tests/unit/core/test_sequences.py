"""Token layout of (prompt, response) pairs and log pi(y|x)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from activedpo_core.checkpoint import load_model
from activedpo_core.sequences import encode_pairs, sequence_logprobs


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


def _left_padded(ids, att, lab):
    """The same rows, their padding moved to the left."""
    ids, att, lab = ids.clone(), att.clone(), lab.clone()
    for i in range(len(ids)):
        shift = int((att[i] == 0).sum())
        ids[i], att[i], lab[i] = (t[i].roll(shift) for t in (ids, att, lab))
    return ids, att, lab


@pytest.mark.parametrize("arch", ["gpt2", "qwen2", "bloom", "phi"])  # absolute positions, RoPE + GQA, ALiBi, RoPE
def test_padding_on_either_side_gives_each_row_its_unpadded_logprob(tmp_path, arch):
    from peft import LoraConfig, get_peft_model

    from activedpo_core.sequences import token_logprobs
    from activedpo_trainer.localmodels import build_local_model

    loaded = load_model(build_local_model(tmp_path / arch, arch))
    tok = loaded.tokenizer
    chats = [[{"role": "user", "content": "tell me about the sea"}], [{"role": "user", "content": "write a poem"}]]
    ps = [tok.apply_chat_template(c, tokenize=False, add_generation_prompt=True) for c in chats]
    if arch == "gpt2":  # the word-level tokenizer knows only its words
        rs = [" yes", " a very long story about the sea and the sky", " no it was cold", " red"]
    else:
        rs = ["**Routine:** run", "`x = 1`, then `y`!\n- item one\n- item two", " a", "café ☕?"]
    prompts = [ps[0], ps[1], ps[1], ps[0]]
    torch.manual_seed(0)
    adapted = get_peft_model(loaded.model, LoraConfig(r=4, target_modules="all-linear", init_lora_weights=False))
    for model in (adapted, adapted.get_base_model()):  # through PEFT's wrapper and bare
        model.eval()
        alone = []
        for p, r in zip(prompts, rs, strict=True):  # unpadded, scored by hand
            ids = tok(p + r, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
            n_prompt = len(tok(p, add_special_tokens=False)["input_ids"])
            with torch.no_grad():
                logp = torch.log_softmax(model(input_ids=torch.tensor([ids])).logits[0].double(), -1)
            alone.append(sum(logp[t - 1, ids[t]].item() for t in range(n_prompt, len(ids))))
        for side in ("left", "right"):  # encode_pairs pads on the right whatever the tokenizer says
            tok.padding_side = side
            np.testing.assert_allclose(sequence_logprobs(model, tok, prompts, rs), alone, rtol=1e-5)
        right = encode_pairs(tok, prompts, rs)
        left = _left_padded(*right)
        assert (left[1][:, 0] == 0).sum() == 3 and (right[1][:, -1] == 0).sum() == 3  # three rows padded
        with torch.no_grad():
            np.testing.assert_allclose(token_logprobs(model, *left).double().numpy(), alone, rtol=1e-5)
