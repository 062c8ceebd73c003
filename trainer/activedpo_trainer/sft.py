"""Supervised fine-tuning on (prompt, response) demonstrations: the toy world's pi_ref.

A plain next-token loop (AdamW, linear warm-up then cosine decay) on response tokens only,
prompt tokens masked. It trains small models from scratch in seconds on a CPU; real users
bring an SFT model of their own and never need it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from activedpo_core.sequences import encode_pairs


@dataclass(frozen=True)
class SFTSettings:
    steps: int = 1_000
    batch_size: int = 64
    lr: float = 3e-3  # from-scratch tiny models want a large rate; fine-tuning a real model wants ~2e-5
    weight_decay: float = 0.01
    warmup_steps: int = 50
    seed: int = 0

    def __post_init__(self) -> None:
        if self.steps < 1 or self.batch_size < 1:
            raise ValueError(f"steps and batch_size must be positive, got {self.steps} and {self.batch_size}")
        if not self.lr > 0:
            raise ValueError(f"lr must be positive, got {self.lr}")


def train_sft(
    model,
    tokenizer,
    corpus: Sequence[tuple[str, str]],
    settings: SFTSettings,
    progress: Callable[[str, int, int], None] | None = None,
) -> list[float]:
    """Train ``model`` in place on ``corpus``; returns the loss of every step."""
    import torch

    if not corpus:
        raise ValueError("the SFT corpus is empty")
    device = next(model.parameters()).device
    input_ids, attention, labels = encode_pairs(tokenizer, [p for p, _ in corpus], [r for _, r in corpus])
    input_ids, attention, labels = input_ids.to(device), attention.to(device), labels.to(device)

    gen = torch.Generator().manual_seed(settings.seed)
    opt = torch.optim.AdamW(model.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)

    def lr_at(step: int) -> float:
        if step < settings.warmup_steps:
            return (step + 1) / settings.warmup_steps
        frac = (step - settings.warmup_steps) / max(1, settings.steps - settings.warmup_steps)
        return 0.5 * (1 + math.cos(math.pi * frac))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_at)
    model.train()
    losses: list[float] = []
    n = input_ids.shape[0]
    order = torch.randperm(n, generator=gen)
    cursor = 0
    for step in range(settings.steps):
        if cursor + settings.batch_size > n:
            order, cursor = torch.randperm(n, generator=gen), 0
        idx = order[cursor : cursor + settings.batch_size].to(device)
        cursor += settings.batch_size
        width = int(attention[idx].sum(1).max())  # right-padded: trim the batch to its longest row
        out = model(input_ids=input_ids[idx, :width], attention_mask=attention[idx, :width], labels=labels[idx, :width])
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        losses.append(out.loss.item())
        if progress:
            progress("sft", step + 1, settings.steps)
    model.eval()
    return losses
