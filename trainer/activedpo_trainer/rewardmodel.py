"""A reward model as an annotator: any Hugging Face sequence-classification model from a path."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path


class RewardModelError(ValueError):
    """A reward model that cannot be loaded or used; the message names the path."""


class RewardModel:
    """Scores (prompt, response) texts with a one-logit sequence-classification model, in batches."""

    def __init__(self, path: str | Path, device: str | None = None, batch_size: int = 32):
        import torch
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        from activedpo_trainer.checkpoint import resolve_device

        path = Path(path)
        if not (path / "config.json").is_file():
            raise RewardModelError(f"reward model {path} is not a Hugging Face model directory (no config.json)")
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(path)
            self.model = AutoModelForSequenceClassification.from_pretrained(path, dtype=torch.float32)
        except (OSError, ValueError) as e:
            raise RewardModelError(f"cannot load reward model {path}: {e}") from None
        if self.model.config.num_labels != 1:
            n = self.model.config.num_labels
            raise RewardModelError(f"reward model {path} has {n} labels; a reward model has 1")
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.tokenizer.padding_side = "right"
        if self.model.config.pad_token_id is None:
            self.model.config.pad_token_id = self.tokenizer.pad_token_id
        self.device = resolve_device(device)
        self.model.to(self.device).eval()
        self.batch_size = batch_size

    def __call__(self, prompts: Sequence[str], responses: Sequence[str]) -> list[float]:
        """The scorer interface of :func:`activedpo_trainer.evaluate.evaluate_policy`."""
        return self.score(list(zip(prompts, responses, strict=True)))

    def score(self, pairs: Sequence[tuple[str, str]]) -> list[float]:
        """One reward per (prompt, response); the response continues the prompt."""
        import torch

        out: list[float] = []
        with torch.no_grad():
            for s in range(0, len(pairs), self.batch_size):
                texts = [p + r for p, r in pairs[s : s + self.batch_size]]
                enc = self.tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
                logits = self.model(**{k: v.to(self.device) for k, v in enc.items()}).logits
                out += logits[:, 0].float().cpu().tolist()
        return out
