"""Sampling K responses per prompt from a checkpoint: batched, left-padded, seeded."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class GenerationSettings:
    temperature: float = 1.0  # 0 = greedy
    top_p: float = 1.0
    max_new_tokens: int = 256  # a toy world's workload uses its own length
    batch_size: int = 64  # prompts per generate() call; each yields k sequences

    def __post_init__(self) -> None:
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.max_new_tokens < 1 or self.batch_size < 1:
            raise ValueError("max_new_tokens and batch_size must be positive")


def _continuation(tokenizer, prompt_ids: list[int], new_ids: list[int]) -> str:
    """The text that, appended to the prompt's text, gives the decoded full sequence."""
    full = tokenizer.decode(prompt_ids + new_ids, skip_special_tokens=True)
    head = tokenizer.decode(prompt_ids, skip_special_tokens=True)
    if full.startswith(head):
        return full[len(head) :]
    return tokenizer.decode(new_ids, skip_special_tokens=True)


def generate(
    model,
    tokenizer,
    prompts: Sequence[str],
    k: int = 1,
    settings: GenerationSettings | None = None,
    seed: int = 0,
    progress: Callable[[int, int], None] | None = None,
) -> list[list[str]]:
    """``k`` sampled responses for each prompt (``result[i][j]`` is the j-th for prompt i).

    Each response is the continuation of its prompt (``prompt + response`` is the text), cut
    at the first EOS. Batch ``b`` is sampled under torch seed ``seed·100003 + b``, so a run is reproducible
    for a given seed and batch size.
    """
    import torch

    settings = settings or GenerationSettings()
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    device = next(model.parameters()).device
    eos = tokenizer.eos_token_id
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos
    old_side = tokenizer.padding_side
    tokenizer.padding_side = "left"
    results: list[list[str]] = []
    was_training = model.training
    model.eval()
    try:
        for b, s in enumerate(range(0, len(prompts), settings.batch_size)):
            chunk = list(prompts[s : s + settings.batch_size])
            enc = tokenizer(chunk, return_tensors="pt", padding=True, add_special_tokens=False).to(device)
            torch.manual_seed(seed * 100_003 + b)
            sample = settings.temperature > 0
            with torch.no_grad():
                out = model.generate(
                    **enc,
                    do_sample=sample,
                    temperature=settings.temperature if sample else None,
                    top_p=settings.top_p if sample else None,
                    top_k=None,
                    max_new_tokens=settings.max_new_tokens,
                    num_return_sequences=k,
                    eos_token_id=eos,
                    pad_token_id=pad,
                )
            width = enc["input_ids"].shape[1]
            for i, prompt_row in enumerate(enc["input_ids"].tolist()):
                prompt_ids = [t for t, m in zip(prompt_row, enc["attention_mask"][i].tolist(), strict=True) if m]
                group = []
                for j in range(k):
                    new = out[i * k + j, width:].tolist()
                    if eos in new:
                        new = new[: new.index(eos)]
                    group.append(_continuation(tokenizer, prompt_ids, [t for t in new if t != pad]))
                results.append(group)
            if progress:
                progress(min(s + settings.batch_size, len(prompts)), len(prompts))
    finally:
        tokenizer.padding_side = old_side
        model.train(was_training)
    return results
