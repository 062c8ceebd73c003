"""A complete third-party task for activedpo's toy world: ``--task echo_task:make_task``.

Prompts ask for a word repeated n times; the hidden oracle rewards exact compliance. The
demonstrations are sloppy (wrong counts, stray words), so the SFT policy leaves room to improve.
Any object with these five members is a task; the toy world builds a tokenizer from the prompt
and demonstration words (or from ``vocabulary()`` when the task has one), SFT-trains a tiny
model on ``sft_corpus`` and uses ``reward`` as the annotator.

    cd examples && activedpo-client toyworld build --task echo_task:make_task
    cd examples && activedpo-client quickstart --task echo_task:make_task --eval-prompts 16
"""

from __future__ import annotations

import random

WORDS = ["apple", "river", "stone", "cloud", "lamp", "seed", "bell", "frog"]
STRAY = ["the", "and", "maybe", "um"]


class EchoTask:
    name = "echo"

    def __init__(self, seed: int = 0):
        prompts = [f"say {w} {n} times :" for w in WORDS for n in range(1, 9)]
        random.Random(seed).shuffle(prompts)
        self._heldout, self._train = prompts[:16], prompts[16:]

    def train_prompts(self) -> list[str]:
        return self._train

    def heldout_prompts(self) -> list[str]:
        return self._heldout

    def reward(self, prompt: str, response: str) -> float:
        """1 per correct word up to n, minus 1 per missing, extra or stray word."""
        _, word, n, _, _ = prompt.split()
        words = response.split()
        hits = sum(1 for w in words if w == word)
        return float(min(hits, int(n)) - abs(hits - int(n)) - (len(words) - hits))

    def sft_corpus(self, n: int, seed: int) -> list[tuple[str, str]]:
        rng = random.Random(seed)
        out = []
        for _ in range(n):
            prompt = rng.choice(self._train)
            _, word, count, _, _ = prompt.split()
            k = max(1, int(count) + rng.randint(-2, 2))
            words = [word if rng.random() < 0.85 else rng.choice(STRAY) for _ in range(k)]
            out.append((prompt, " " + " ".join(words)))  # a response continues its prompt
        return out


def make_task(seed: int = 0) -> EchoTask:
    return EchoTask(seed)
