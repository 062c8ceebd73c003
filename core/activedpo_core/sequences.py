"""How a (prompt, response) pair becomes tokens, and the log-probability of a response.

Convention: a response is the exact continuation of its prompt, so ``prompt + response`` is
the full text, and an EOS token ends every response. Tokens are split the way TRL's
``DPOTrainer`` splits them: tokenize the prompt and the full text, and the response's tokens
start where the two diverge. Generation, SFT, DPO, evaluation and the server's featurizer all
go through here, so they agree on which tokens belong to the response.
"""

from __future__ import annotations

from collections.abc import Sequence


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def encode_pairs(tokenizer, prompts: Sequence[str], responses: Sequence[str], add_eos: bool = True):
    """Right-padded ``(input_ids, attention_mask, labels)``, each ``[n, max_len]``.

    ``labels`` hold the token id on response tokens (EOS included) and -100 on prompt and
    padding, i.e. exactly the positions whose log-probabilities make up log pi(y|x).
    """
    import torch

    if len(prompts) != len(responses):
        raise ValueError(f"{len(prompts)} prompts but {len(responses)} responses")
    rows: list[tuple[list[int], int]] = []
    for prompt, response in zip(prompts, responses, strict=True):
        p_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        full = tokenizer(prompt + response, add_special_tokens=False)["input_ids"]
        cut = _common_prefix(p_ids, full)
        ids = full + ([tokenizer.eos_token_id] if add_eos else [])
        rows.append((ids, cut))
    width = max(len(ids) for ids, _ in rows)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    input_ids = torch.full((len(rows), width), pad, dtype=torch.long)
    attention = torch.zeros((len(rows), width), dtype=torch.long)
    labels = torch.full((len(rows), width), -100, dtype=torch.long)
    for i, (ids, cut) in enumerate(rows):
        input_ids[i, : len(ids)] = torch.tensor(ids)
        attention[i, : len(ids)] = 1
        labels[i, cut : len(ids)] = torch.tensor(ids[cut:])
    return input_ids, attention, labels


def _position_kwargs(model, attention_mask) -> dict:
    """``position_ids`` counted from each row's first real token, for a left-padded batch.

    A plain forward numbers positions 0..L-1 whatever the mask, so a left-padded row would start at
    its padding width: wrong for absolute position embeddings (GPT-2). Right padding (what
    :func:`encode_pairs` makes) needs nothing; models without ``position_ids`` (Bloom: ALiBi) take
    positions from the mask themselves.
    """
    import inspect

    if attention_mask is None or bool(attention_mask[:, 0].all()):
        return {}
    base = model.get_base_model() if hasattr(model, "get_base_model") else model  # a PEFT model passes them on
    if "position_ids" not in inspect.signature(base.forward).parameters:
        return {}
    positions = attention_mask.long().cumsum(-1) - 1
    return {"position_ids": positions.clamp(min=0)}


def token_logprobs(model, input_ids, attention_mask, labels):
    """Per-example sum of log-probabilities of the labelled tokens: ``[n]`` (graph kept).

    Padding on either side gives each row the value it has alone.
    """
    import torch

    extra = _position_kwargs(model, attention_mask)
    logits = model(input_ids=input_ids, attention_mask=attention_mask, **extra).logits[:, :-1].float()  # [n, L-1, V]
    targets = labels[:, 1:]  # [n, L-1]
    mask = targets != -100
    logp = torch.log_softmax(logits, dim=-1).gather(-1, targets.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    return (logp * mask).sum(dim=1)


def sequence_logprobs(model, tokenizer, prompts: Sequence[str], responses: Sequence[str], batch_size: int = 64):
    """log pi(y|x) for each pair (response tokens and EOS), as a float64 numpy array."""
    import numpy as np
    import torch

    device = next(model.parameters()).device
    out = []
    with torch.no_grad():
        for s in range(0, len(prompts), batch_size):
            ids, att, lab = encode_pairs(tokenizer, prompts[s : s + batch_size], responses[s : s + batch_size])
            out.append(token_logprobs(model, ids.to(device), att.to(device), lab.to(device)).double().cpu())
    return np.concatenate([t.numpy() for t in out]) if out else np.zeros(0)
