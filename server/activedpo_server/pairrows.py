"""The rows greedy selection reads, and the checks on them, shared by the numpy rule
(:mod:`activedpo_server.selection`) and its torch twin (:mod:`activedpo_server.selection_torch`)."""

from __future__ import annotations

import numpy as np

TIE_RTOL = 1e-6  # scores this close (relative) are a tie; float32 inputs carry ~1e-7 relative error
ROW_CHUNK = 4096  # rows of candidates per matrix product in the initial scoring


class PairRows:
    """Pair-difference rows ``φ_p = F[a_p] − F[b_p]`` over ``[R, d]`` response features ``F``, gathered a
    block at a time: the ``[N, d]`` pair matrix is never formed. ``F`` may be any array-like that
    gathers rows (a :class:`~activedpo_server.featurestore.FeatureView` reads the FAISS index in place),
    so selecting from N pairs costs the response features plus O(block · d)."""

    def __init__(self, feats, pairs: np.ndarray, weights: np.ndarray | None = None):
        pairs = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
        self.feats, self.a, self.b = feats, np.ascontiguousarray(pairs[:, 0]), np.ascontiguousarray(pairs[:, 1])
        self.weights = None if weights is None else np.asarray(weights, dtype=np.float32)  # per-pair row scale
        self.shape = (len(pairs), int(feats.shape[1]))
        self.ndim = 2
        self.dtype = np.dtype(np.float32)

    def __len__(self) -> int:
        return self.shape[0]

    def weighted(self, weights: np.ndarray) -> PairRows:
        """The same pairs with row ``p`` scaled by ``weights[p]``."""
        return PairRows(self.feats, np.stack([self.a, self.b], axis=1), weights)

    def take(self, idx) -> np.ndarray:
        a = np.asarray(self.feats[self.a[idx]], dtype=np.float32)
        a -= np.asarray(self.feats[self.b[idx]], dtype=np.float32)
        if self.weights is not None:
            a *= self.weights[idx][:, None]
        return a

    def block(self, s: int, e: int) -> np.ndarray:
        return self.take(slice(s, e))

    def check_finite(self) -> int | None:
        """Deferred: a non-finite row shows as a non-finite initial score (see :func:`finite_scores`),
        which saves a pass over N·d values."""
        return None


class DenseRows:
    """An ``[N, d]`` array behind :class:`PairRows`' interface."""

    def __init__(self, x: np.ndarray):
        self.x, self.shape, self.ndim, self.dtype = x, x.shape, 2, x.dtype

    def __len__(self) -> int:
        return self.shape[0]

    def take(self, idx) -> np.ndarray:
        return self.x[idx]

    def block(self, s: int, e: int) -> np.ndarray:
        return self.x[s:e]

    def check_finite(self) -> int | None:
        return first_non_finite_row(self.x)


def check_inputs(candidates, labeled, budget: int, lam: float) -> tuple[PairRows | DenseRows, np.ndarray]:
    if isinstance(candidates, PairRows):
        x = candidates
        if x.shape[0] == 0 or x.shape[1] == 0:
            raise ValueError(f"no candidates to select from (shape {x.shape})")
        return _check_rest(x, labeled, budget, lam)
    x = np.asarray(candidates)
    if x.ndim != 2:
        raise ValueError(f"candidates must be a 2-D array [N, d], got shape {x.shape}")
    if x.shape[0] == 0 or x.shape[1] == 0:
        raise ValueError(f"no candidates to select from (shape {x.shape})")
    if not np.issubdtype(x.dtype, np.floating):
        x = x.astype(np.float32)
    return _check_rest(DenseRows(x), labeled, budget, lam)


def _check_rest(x, labeled, budget: int, lam: float):
    d = x.shape[1]
    if labeled is None:
        labeled = np.zeros((0, d), dtype=np.float32)
    lab = np.asarray(labeled)
    if lab.ndim != 2 or (lab.shape[0] and lab.shape[1] != d):
        raise ValueError(f"labeled must be [k, {d}] to match the candidates, got shape {lab.shape}")
    lab = lab.reshape(-1, d)
    for name, row in (("candidates", x.check_finite()), ("labeled features", first_non_finite_row(lab))):
        if row is not None:
            raise ValueError(f"{name} contain NaN or inf (row {row})")
    if not (isinstance(budget, int | np.integer) and budget >= 0):
        raise ValueError(f"budget must be a non-negative integer, got {budget!r}")
    if not (lam > 0 and np.isfinite(lam)):
        raise ValueError(f"lam (the ridge λ) must be positive and finite, got {lam!r}")
    return x, lab


def finite_scores(score: np.ndarray) -> np.ndarray:
    bad = np.flatnonzero(~np.isfinite(score))
    if bad.size:
        raise ValueError(f"candidates contain NaN or inf (row {int(bad[0])})")
    return score


def first_non_finite_row(a: np.ndarray) -> int | None:
    for s in range(0, a.shape[0], ROW_CHUNK):  # chunked: no N×d boolean temporary
        ok = np.isfinite(a[s : s + ROW_CHUNK]).all(axis=1)
        if not ok.all():
            return s + int(np.flatnonzero(~ok)[0])
    return None
