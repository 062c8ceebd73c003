"""An in-memory :class:`~activedpo_server.strategies.FeatureSource` backed by real models.

Each response is featurized at most once per featurizer: a prompt with K responses costs K
gradients however many pairs they form, and a batch of requests only computes the responses
not seen before. Cached rows are tied to the featurizer's :attr:`feature_key` (checkpoint id,
projection settings): swapping in a featurizer for a new checkpoint drops them.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from activedpo_core.progress import StageProgress


class _Cache:
    def __init__(self, n: int):
        self.n = n
        self.key: str | None = None
        self.rows: np.ndarray | None = None  # [n, dim] or [n] (allocated on first use)
        self.filled = np.zeros(n, dtype=bool)

    def reset(self, key: str | None) -> None:
        self.key, self.rows = key, None
        self.filled[:] = False

    def get(self, key: str, idx: np.ndarray, compute) -> np.ndarray:
        if key != self.key:
            self.reset(key)
        idx = np.asarray(idx, dtype=np.int64)
        missing = np.unique(idx[~self.filled[idx]])
        if missing.size:
            values = compute(missing)
            if self.rows is None:
                self.rows = np.zeros((self.n, *values.shape[1:]), dtype=values.dtype)
            self.rows[missing] = values
            self.filled[missing] = True
        return self.rows[idx]


class ModelFeatureSource:
    """Features of ``responses[i]`` (a continuation of ``prompts[i]``) computed by real featurizers.

    ``gradient`` is a :class:`~activedpo_server.features.GradientFeaturizer` (also used for the
    log-probs APLP needs); ``embedding`` an :class:`~activedpo_server.features.EmbeddingFeaturizer`.
    Either may be None when no strategy in use needs it.
    """

    def __init__(
        self,
        prompts: Sequence[str],
        responses: Sequence[str],
        gradient=None,
        embedding=None,
        progress: StageProgress | None = None,
    ):
        if len(prompts) != len(responses):
            raise ValueError(f"{len(prompts)} prompts but {len(responses)} responses")
        self.prompts, self.responses = list(prompts), list(responses)
        self.gradient, self.embedding, self.progress = gradient, embedding, progress
        n = len(self.responses)
        self._grad, self._embed, self._logp = _Cache(n), _Cache(n), _Cache(n)
        self.computed = {"gradient": 0, "embedding": 0, "logprobs": 0}  # responses computed, for tests and logs

    def _texts(self, idx: np.ndarray) -> tuple[list[str], list[str]]:
        return [self.prompts[i] for i in idx], [self.responses[i] for i in idx]

    def _need(self, featurizer, what: str):
        if featurizer is None:
            raise ValueError(f"this feature source has no {what} featurizer; the strategy needs one")
        return featurizer

    def _features(self, cache: _Cache, featurizer, what: str, responses: np.ndarray) -> np.ndarray:
        f = self._need(featurizer, what)

        def compute(idx):
            self.computed[what] += len(idx)
            return f.featurize(*self._texts(idx), progress=self.progress)

        return cache.get(f.feature_key, responses, compute)

    def gradient_features(self, responses: np.ndarray) -> np.ndarray:
        return self._features(self._grad, self.gradient, "gradient", responses)

    def embedding_features(self, responses: np.ndarray) -> np.ndarray:
        return self._features(self._embed, self.embedding, "embedding", responses)

    def logprobs(self, responses: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        f = self._need(self.gradient, "gradient (policy)")

        def compute(idx):
            self.computed["logprobs"] += len(idx)
            policy, ref = f.logprobs(*self._texts(idx))
            return np.stack([policy, ref], axis=1)

        both = self._logp.get(f.checkpoint_id, responses, compute)
        return both[:, 0], both[:, 1]
