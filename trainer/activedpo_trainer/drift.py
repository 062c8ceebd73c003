"""How far the policy has moved from π_ref, and what it kept: the quantities DPO's β trades against.

* ``KL(π_θ‖π_ref)`` on prompts, estimated from the policy's own samples (temperature 1, no nucleus: the
  distribution the log-probabilities describe): per sequence, the mean of ``log π_θ(y|x) − log π_ref(y|x)``
  over ``y ~ π_θ`` (an unbiased Monte Carlo estimate, with its SE over prompts); per token, the same sum over
  all sampled tokens divided by their number.
* Capability retention: the mean per-token log-likelihood under π_θ of π_ref's own samples on the same
  prompts, beside π_ref's (its drop is what DPO gave up of what the base model would say). Studies of
  active preference selection recommend reporting it beside win rates, since DPO can raise win rate while
  degrading the model.

Reads log-probabilities only (no judge), so it runs with ``--evaluate none`` too. The policy is a PEFT
model: π_ref is the same model with its adapter disabled.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from activedpo_trainer.evaluate import mean_and_se
from activedpo_trainer.generation import GenerationSettings, generate


@dataclass(frozen=True)
class Drift:
    kl_seq: float  # mean KL(π_θ‖π_ref) per sequence (nats), on the policy's samples
    kl_seq_se: float
    kl_token: float  # the same per sampled token
    ref_loglik: float  # mean per-token log π_θ of π_ref's samples (capability retention)
    ref_loglik_ref: float  # the same under π_ref itself
    prompts: int


def _token_counts(tokenizer, prompts: Sequence[str], responses: Sequence[str]) -> np.ndarray:
    from activedpo_core.sequences import encode_pairs

    _, _, labels = encode_pairs(tokenizer, prompts, responses)
    return (labels != -100).sum(dim=1).numpy().astype(np.float64)


def drift(model, tokenizer, prompts: Sequence[str], max_new_tokens: int, seed: int = 0,
          batch_size: int = GenerationSettings.batch_size) -> Drift:  # fmt: skip
    """:class:`Drift` of the PEFT ``model`` from itself with its adapter disabled, on ``prompts`` (one sample
    of each model per prompt, seeded)."""
    from activedpo_core.sequences import sequence_logprobs

    if not prompts:
        raise ValueError("drift needs at least one prompt")
    settings = GenerationSettings(temperature=1.0, top_p=1.0, max_new_tokens=max_new_tokens, batch_size=batch_size)
    prompts = list(prompts)
    mine = [g[0] for g in generate(model, tokenizer, prompts, 1, settings, seed=seed)]
    with model.disable_adapter():
        theirs = [g[0] for g in generate(model, tokenizer, prompts, 1, settings, seed=seed + 1)]
        ref_on_mine = sequence_logprobs(model, tokenizer, prompts, mine)
        ref_on_theirs = sequence_logprobs(model, tokenizer, prompts, theirs)
    on_mine = sequence_logprobs(model, tokenizer, prompts, mine)
    on_theirs = sequence_logprobs(model, tokenizer, prompts, theirs)
    ratio = on_mine - ref_on_mine
    kl, kl_se = mean_and_se(ratio.tolist())
    tokens, ref_tokens = _token_counts(tokenizer, prompts, mine), _token_counts(tokenizer, prompts, theirs)
    return Drift(kl_seq=round(kl, 4), kl_seq_se=round(kl_se, 4), kl_token=round(float(ratio.sum() / tokens.sum()), 5),
                 ref_loglik=round(float(on_theirs.sum() / ref_tokens.sum()), 4),
                 ref_loglik_ref=round(float(ref_on_theirs.sum() / ref_tokens.sum()), 4),
                 prompts=len(prompts))  # fmt: skip
