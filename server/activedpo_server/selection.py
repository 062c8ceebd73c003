"""Greedy V⁻¹ selection (ActiveDPO, Lin et al., ICLR 2026, Alg. 1; also APO's rule).

Pick ``budget`` rows of ``candidates`` one at a time, each maximising ``s_i = φ_iᵀ V⁻¹ φ_i``
with ``V = λI + Σ_labeled φφᵀ + Σ_picked φφᵀ``: after every pick ``φ*`` (score ``s*``) every
score drops by Sherman–Morrison,

    s_i ← s_i − (φ_iᵀ z)² / (1 + s*),      z = V⁻¹ φ*,

so a batch spreads over directions the labels do not cover yet.

Costs. ``V⁻¹`` is never formed while ``k < d`` labeled rows: it is applied in Woodbury form
``V⁻¹ = (1/λ)(I − Lᵀ(λI_k + LLᵀ)⁻¹L)`` with a ``k×k`` Cholesky; from ``k ≥ d`` on, a dense
``d×d`` Cholesky of ``V`` is cheaper. The initial scores cost one pass over the candidates
(``O(N·k·d)``, a matrix product). Each pick then costs ``O((k + t)·d)`` for ``z``, plus the
update of the scores that matter: scores only ever decrease, so a stale score is an upper bound
and only candidates whose bound can still win are brought up to date (lazy greedy; exact, not
an approximation). When scores are spread out, a pick touches a few dozen rows instead of all
N; when most of them are in contention (unit rows before any label: all scores equal), it falls
back to one streaming matrix-vector pass over the candidates per pick, ``O(N·d)``.

Ties (scores within :data:`TIE_RTOL` of the best, relative) go to the lowest index, so picks
are deterministic whatever the BLAS summation order. :func:`greedy_select_dense` is the literal
rule (dense inverse, full rescoring per pick), kept for tests and benchmarks.
"""

from __future__ import annotations

import numpy as np

from activedpo_server.pairrows import ROW_CHUNK, TIE_RTOL, DenseRows, PairRows, check_inputs, finite_scores

__all__ = ["TIE_RTOL", "PairRows", "greedy_select", "greedy_select_dense", "greedy_select_scored", "top_scores_select"]

class _BaseInverse:
    """``V₀⁻¹ = (λI + LᵀL)⁻¹``: initial scores ``xᵀV₀⁻¹x`` for all candidates, and ``V₀⁻¹v``."""

    def __init__(self, labeled: np.ndarray, lam: float, d: int):
        import torch

        self.lam, self.d = lam, d
        k = labeled.shape[0]
        self.mode = "ridge" if k == 0 else ("woodbury" if k < d else "dense")
        lab = torch.from_numpy(np.ascontiguousarray(labeled, dtype=np.float64))
        self.lab32 = np.ascontiguousarray(labeled, dtype=np.float32)
        if self.mode == "woodbury":
            m = lam * torch.eye(k, dtype=torch.float64) + lab @ lab.T  # [k, k]
            self.chol = torch.linalg.cholesky(m)
            self.lab = lab
        elif self.mode == "dense":
            v = lam * torch.eye(d, dtype=torch.float64) + lab.T @ lab  # [d, d]
            self.chol = torch.linalg.cholesky(v)

    def scores(self, x: PairRows | DenseRows) -> np.ndarray:
        import torch

        out = np.empty(x.shape[0], dtype=np.float64)
        for s in range(0, x.shape[0], ROW_CHUNK):
            xc = x.block(s, min(s + ROW_CHUNK, x.shape[0]))
            norms = np.einsum("ij,ij->i", xc, xc, dtype=np.float64)
            if self.mode == "ridge":
                out[s : s + len(xc)] = norms / self.lam
            elif self.mode == "woodbury":
                c = torch.from_numpy((xc.astype(np.float32, copy=False) @ self.lab32.T).astype(np.float64))  # [n, k]
                w = torch.linalg.solve_triangular(self.chol, c.T, upper=False)  # [k, n]
                out[s : s + len(xc)] = (norms - (w * w).sum(0).numpy()) / self.lam
            else:
                w = torch.linalg.solve_triangular(self.chol, torch.from_numpy(xc.astype(np.float64)).T, upper=False)
                out[s : s + len(xc)] = (w * w).sum(0).numpy()
        return out

    def apply(self, v: np.ndarray) -> np.ndarray:
        import torch

        if self.mode == "ridge":
            return v / self.lam
        tv = torch.from_numpy(v.astype(np.float64)).unsqueeze(1)
        if self.mode == "woodbury":
            inner = torch.cholesky_solve(self.lab @ tv, self.chol)  # (λI + LLᵀ)⁻¹ L v
            return ((tv - self.lab.T @ inner) / self.lam).squeeze(1).numpy()
        return torch.cholesky_solve(tv, self.chol).squeeze(1).numpy()


def greedy_select_scored(
    candidates: np.ndarray | PairRows, labeled: np.ndarray | None, budget: int, lam: float = 1.0,
    device: str | None = None,
) -> tuple[list[int], list[float]]:
    """Like :func:`greedy_select`, also returning each pick's score ``φᵀV⁻¹φ`` at the time it was picked.

    ``device`` (``cpu``, ``cuda``) runs the same algorithm in torch there
    (:mod:`activedpo_server.selection_torch`); None runs it in numpy.
    """  # fmt: skip
    if device is not None:
        from activedpo_server.selection_torch import greedy_select_scored_torch

        return greedy_select_scored_torch(candidates, labeled, budget, lam, device)
    x, lab = check_inputs(candidates, labeled, budget, lam)
    n, d = x.shape
    budget = min(int(budget), n)
    if budget == 0:
        return [], []
    base = _BaseInverse(lab, float(lam), d)
    score = finite_scores(base.scores(x))  # [N] float64, exact at step `step[i]`
    bound = score.copy()  # upper bound on the current score; -inf once picked
    step = np.zeros(n, dtype=np.int64)  # the pick count the score is up to date with
    z = np.empty((budget, d), dtype=np.float64)  # z_j = V_j⁻¹ φ*_j
    den = np.empty(budget, dtype=np.float64)  # 1 + s*_j
    picks: list[int] = []
    scores: list[float] = []

    def refresh(idx: np.ndarray, t: int) -> None:
        """Bring ``score[idx]`` up to date with the first ``t`` picks."""
        u = x.take(idx).astype(np.float64) @ z[:t].T  # [m, t]  φ_iᵀ z_j
        for j in range(int(step[idx].min()), t):
            due = step[idx] <= j
            score[idx[due]] -= u[due, j] ** 2 / den[j]
        step[idx] = t
        bound[idx] = score[idx]

    def refresh_all(t: int) -> None:
        """Every unpicked score up to date, in one streaming pass over the candidates (no row copies).

        Used when most bounds are in contention (near-equal scores, e.g. unit rows before any label),
        where lazy updates cannot prune: then a pick costs one matrix-vector pass, O(N·d).
        """
        live = np.isfinite(bound)
        lo = int(step[live].min())
        zt = np.ascontiguousarray(z[lo:t].T, dtype=np.float64 if x.dtype == np.float64 else np.float32)
        for s in range(0, n, ROW_CHUNK):
            e = min(s + ROW_CHUNK, n)
            u = (x.block(s, e) @ zt).astype(np.float64)  # [rows, t - lo]
            st, sc, lv = step[s:e], score[s:e], live[s:e]
            for j in range(lo, t):
                due = lv & (st <= j)
                sc[due] -= u[due, j - lo] ** 2 / den[j]
        step[live] = t
        bound[live] = score[live]

    full = max(256, n // 16)  # past this many stale rows in contention, one full pass is cheaper
    batch = 64  # stale candidates refreshed at once; doubles while a pick keeps needing more
    for t in range(budget):
        while True:
            best = int(np.argmax(bound))
            if step[best] < t:
                if batch >= full:
                    refresh_all(t)
                    continue
                m = min(batch, n - t)
                top = np.argpartition(-bound, m - 1)[:m] if m < n else np.arange(n)
                top = np.union1d(top[(step[top] < t) & np.isfinite(bound[top])], [best])
                refresh(top, t)
                batch *= 2
                continue
            threshold = score[best] - TIE_RTOL * abs(score[best])
            near = np.flatnonzero(bound >= threshold)
            stale = near[step[near] < t]
            if stale.size >= full:
                refresh_all(t)
                continue
            if stale.size:
                refresh(stale, t)
                continue
            i = int(near.min())  # every candidate within the tie tolerance is fresh: lowest index wins
            break
        batch = max(64, batch // 2)
        s_star = float(score[i])
        phi = x.take(np.array([i]))[0].astype(np.float64)
        zt = base.apply(phi)
        if t:
            zt -= z[:t].T @ ((z[:t] @ phi) / den[:t])
        z[t], den[t] = zt, 1.0 + s_star
        picks.append(i)
        scores.append(s_star)
        bound[i] = -np.inf
        step[i] = budget  # never refreshed again
    return picks, scores


def top_scores_select(
    candidates: np.ndarray, labeled: np.ndarray | None, budget: int, lam: float = 1.0
) -> tuple[list[int], list[float]]:
    """The ablation without the intra-batch update: the ``budget`` largest ``φᵀV₀⁻¹φ``, ``V₀`` from the
    labeled rows only (ties to the lowest index). A batch may then pile into one direction."""
    x, lab = check_inputs(candidates, labeled, budget, lam)
    budget = min(int(budget), x.shape[0])
    score = finite_scores(_BaseInverse(lab, float(lam), x.shape[1]).scores(x))
    # scores within TIE_RTOL of each other count as equal: round them onto a relative grid first
    top = float(score.max()) if score.size else 0.0
    key = np.round(score / (top * TIE_RTOL)) if top > 0 else score
    order = np.lexsort((np.arange(len(score)), -key))[:budget]
    return [int(i) for i in order], [float(score[i]) for i in order]


def greedy_select(candidates: np.ndarray, labeled: np.ndarray | None, budget: int, lam: float = 1.0) -> list[int]:
    """Indices of ``candidates`` (``[N, d]``) in pick order, greedily maximising ``φᵀV⁻¹φ``.

    ``V = λI + Σ φφᵀ`` over ``labeled`` (``[k, d]``, may be empty or None) and the picks so far.
    ``budget > N`` returns all N; ties go to the lowest index; empty or non-finite input raises
    ``ValueError``.
    """
    return greedy_select_scored(candidates, labeled, budget, lam)[0]


def greedy_select_dense(
    candidates: np.ndarray, labeled: np.ndarray | None, budget: int, lam: float = 1.0
) -> tuple[list[int], list[float]]:
    """The literal rule: form ``V⁻¹`` densely and rescore every candidate after each pick.

    ``O(d³ + N·d²)`` per pick: minutes at the paper's sizes. For tests and benchmarks only.
    """
    x, lab = check_inputs(candidates, labeled, budget, lam)
    n, d = x.shape
    x64 = x.block(0, n).astype(np.float64)
    lab64 = lab.astype(np.float64)
    v = lam * np.eye(d) + lab64.T @ lab64
    picked = np.zeros(n, dtype=bool)
    picks: list[int] = []
    scores: list[float] = []
    for _ in range(min(int(budget), n)):
        v_inv = np.linalg.inv(v)
        s = np.einsum("nd,nd->n", x64 @ v_inv, x64)
        s[picked] = -np.inf
        best = s.max()
        i = int(np.flatnonzero(s >= best - TIE_RTOL * abs(best))[0])
        picks.append(i)
        scores.append(float(s[i]))
        picked[i] = True
        v += np.outer(x64[i], x64[i])
    return picks, scores
