"""The greedy ``V⁻¹`` selection of :mod:`activedpo_server.selection`, in torch on a device.

The same algorithm step for step (Woodbury or dense initial scores, Sherman–Morrison updates,
lazy refreshes, ties to the lowest index), so the picks equal the numpy path's. On a GPU the
response features are copied to the device once when they fit in half its free memory, and pair
rows are gathered there; otherwise (and on the CPU, where the feature store's memory is used in
place) blocks of pair rows are gathered on the host and moved per pass.
"""

from __future__ import annotations

import numpy as np

from activedpo_server.pairrows import ROW_CHUNK, TIE_RTOL, DenseRows, PairRows, check_inputs


class _Rows:
    """Pair rows as float32 tensors on ``device``."""

    def __init__(self, x: PairRows | DenseRows, device):
        import torch

        self.device, self.n = device, x.shape[0]
        self.x = x
        self.feats = None  # [R, d] on the device, when the response features fit there
        if isinstance(x, PairRows):
            self.a = torch.from_numpy(x.a).to(device)
            self.b = torch.from_numpy(x.b).to(device)
            self.w = None if x.weights is None else torch.from_numpy(x.weights).to(device)
            r, d = x.feats.shape
            if device.type == "cuda":
                free, _ = torch.cuda.mem_get_info(device)
                if r * d * 4 < free // 2:
                    self.feats = torch.empty((r, d), dtype=torch.float32, device=device)
                    for s in range(0, r, 65536):
                        e = min(s + 65536, r)
                        self.feats[s:e] = torch.from_numpy(np.asarray(x.feats[np.arange(s, e)])).to(device)
        elif device.type == "cuda":
            free, _ = torch.cuda.mem_get_info(device)
            if x.x.nbytes < free // 2:
                self.feats = torch.from_numpy(np.ascontiguousarray(x.x, dtype=np.float32)).to(device)

    def take(self, idx):
        """Rows ``idx`` (a long tensor on the device)."""
        import torch

        if self.feats is None:
            return torch.from_numpy(np.ascontiguousarray(self.x.take(idx.cpu().numpy()), dtype=np.float32)).to(
                self.device
            )
        if isinstance(self.x, PairRows):
            out = self.feats[self.a[idx]] - self.feats[self.b[idx]]
            return out if self.w is None else out * self.w[idx, None]
        return self.feats[idx]

    def block(self, s: int, e: int):
        import torch

        return self.take(torch.arange(s, e, device=self.device))


def _sq_norms(x):
    """Row norms² accumulated in float64 (as the numpy path's): on the CPU numpy's einsum does it without
    a float64 copy of the block (3× faster than torch's); on a GPU the copy is cheap."""
    import torch

    if x.device.type == "cpu":
        xn = x.numpy()
        return torch.from_numpy(np.einsum("ij,ij->i", xn, xn, dtype=np.float64))
    x64 = x.double()
    return torch.einsum("ij,ij->i", x64, x64)


class _BaseInverse:
    """``V₀⁻¹ = (λI + LᵀL)⁻¹`` on the device: initial scores for all candidates, and ``V₀⁻¹v``."""

    def __init__(self, labeled: np.ndarray, lam: float, d: int, device):
        import torch

        self.lam, self.d = lam, d
        k = labeled.shape[0]
        self.mode = "ridge" if k == 0 else ("woodbury" if k < d else "dense")
        lab = torch.from_numpy(np.ascontiguousarray(labeled, dtype=np.float64)).to(device)
        self.lab32 = lab.float()
        if self.mode == "woodbury":
            self.chol = torch.linalg.cholesky(lam * torch.eye(k, dtype=torch.float64, device=device) + lab @ lab.T)
            self.lab = lab
        elif self.mode == "dense":
            self.chol = torch.linalg.cholesky(lam * torch.eye(d, dtype=torch.float64, device=device) + lab.T @ lab)

    def scores(self, rows: _Rows):
        import torch

        out = torch.empty(rows.n, dtype=torch.float64, device=rows.device)
        for s in range(0, rows.n, ROW_CHUNK):
            e = min(s + ROW_CHUNK, rows.n)
            xc = rows.block(s, e)
            if self.mode == "ridge":
                out[s:e] = _sq_norms(xc) / self.lam
            elif self.mode == "woodbury":
                c = (xc @ self.lab32.T).double()  # [n, k]
                w = torch.linalg.solve_triangular(self.chol, c.T, upper=False)
                out[s:e] = (_sq_norms(xc) - (w * w).sum(0)) / self.lam
            else:
                w = torch.linalg.solve_triangular(self.chol, xc.double().T, upper=False)
                out[s:e] = (w * w).sum(0)
        return out

    def apply(self, v):
        import torch

        if self.mode == "ridge":
            return v / self.lam
        tv = v.unsqueeze(1)
        if self.mode == "woodbury":
            inner = torch.cholesky_solve(self.lab @ tv, self.chol)
            return ((tv - self.lab.T @ inner) / self.lam).squeeze(1)
        return torch.cholesky_solve(tv, self.chol).squeeze(1)


def greedy_select_scored_torch(
    candidates, labeled: np.ndarray | None, budget: int, lam: float = 1.0, device: str = "cpu"
) -> tuple[list[int], list[float]]:
    """:func:`activedpo_server.selection.greedy_select_scored` on ``device`` (``cpu``, ``cuda``, ``cuda:1``)."""
    import torch

    x, lab = check_inputs(candidates, labeled, budget, lam)
    dev = torch.device(device)
    n, d = x.shape
    budget = min(int(budget), n)
    if budget == 0:
        return [], []
    rows = _Rows(x, dev)
    base = _BaseInverse(lab, float(lam), d, dev)
    score = base.scores(rows)
    bad = torch.nonzero(~torch.isfinite(score)).flatten()
    if bad.numel():
        raise ValueError(f"candidates contain NaN or inf (row {int(bad[0])})")
    bound = score.clone()
    step = torch.zeros(n, dtype=torch.int64, device=dev)
    z = torch.empty((budget, d), dtype=torch.float64, device=dev)
    den = torch.empty(budget, dtype=torch.float64, device=dev)
    picks: list[int] = []
    scores: list[float] = []

    def refresh(idx, t: int) -> None:
        u = rows.take(idx).double() @ z[:t].T  # [m, t]
        st = step[idx]
        for j in range(int(st.min()), t):
            due = st <= j
            score[idx[due]] -= u[due, j] ** 2 / den[j]
        step[idx] = t
        bound[idx] = score[idx]

    def refresh_all(t: int) -> None:
        live = torch.isfinite(bound)
        lo = int(step[live].min())
        zt = z[lo:t].T.float().contiguous()  # float32 products, as the numpy path
        for s in range(0, n, ROW_CHUNK):
            e = min(s + ROW_CHUNK, n)
            u = (rows.block(s, e) @ zt).double()
            st, sc, lv = step[s:e], score[s:e], live[s:e]
            for j in range(lo, t):
                due = lv & (st <= j)
                sc[due] -= u[due, j - lo] ** 2 / den[j]
        step[live] = t
        bound[live] = score[live]

    full = max(256, n // 16)
    batch = 64
    for t in range(budget):
        while True:
            best = int(torch.argmax(bound))  # the first maximum, as numpy's argmax
            if int(step[best]) < t:
                if batch >= full:
                    refresh_all(t)
                    continue
                m = min(batch, n - t)
                top = torch.topk(bound, m).indices if m < n else torch.arange(n, device=dev)
                keep = (step[top] < t) & torch.isfinite(bound[top])
                top = torch.unique(torch.cat([top[keep], torch.tensor([best], device=dev)]))
                refresh(top, t)
                batch *= 2
                continue
            s_best = float(score[best])
            threshold = s_best - TIE_RTOL * abs(s_best)
            near = torch.nonzero(bound >= threshold).flatten()
            stale = near[step[near] < t]
            if stale.numel() >= full:
                refresh_all(t)
                continue
            if stale.numel():
                refresh(stale, t)
                continue
            i = int(near.min())
            break
        batch = max(64, batch // 2)
        s_star = float(score[i])
        phi = rows.take(torch.tensor([i], device=dev))[0].double()
        zt = base.apply(phi)
        if t:
            zt = zt - z[:t].T @ ((z[:t] @ phi) / den[:t])
        z[t], den[t] = zt, 1.0 + s_star
        picks.append(i)
        scores.append(s_star)
        bound[i] = -torch.inf
        step[i] = budget
    return picks, scores
