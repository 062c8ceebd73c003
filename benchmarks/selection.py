"""Greedy V⁻¹ selection time: ``greedy_select`` against the literal dense rule.

    .venv/bin/python benchmarks/selection.py [--dims 2048 8192] [--budget 50] [--dense-seconds 120]

Candidates are unit rows, either isotropic Gaussian or low-rank (rank 64 plus 1% noise: every
pick then lowers many scores). Unit rows are the hard case for lazy updates: before any label
every score is equal, so nothing can be pruned and a pick costs a full pass over the candidates
(real pair differences of unit features have varied norms). ``k`` labeled rows shape V before the batch: 0 (the
first round), 150 (three rounds of 50) and, at N = 3000, 10 000 > d (the dense Cholesky path).
The literal rule (dense inverse, full rescoring per pick) runs in full where it finishes within
``--dense-seconds``; otherwise its per-pick time over the picks it made is extrapolated to the
budget and marked so. Medians of ``--repeats`` runs after one warm-up run.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
from _report import header, median_seconds, write


def candidates(kind: str, n: int, d: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if kind == "gaussian":
        x = rng.standard_normal((n, d), dtype=np.float32)
    else:
        basis = rng.standard_normal((64, d), dtype=np.float32)
        x = rng.standard_normal((n, 64), dtype=np.float32) @ basis
        x += 0.01 * np.linalg.norm(basis, axis=1).mean() * rng.standard_normal((n, d), dtype=np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x


def dense_timed(x, lab, budget, lam, limit_s):
    """The literal rule: (picks, seconds, finished). Two picks are timed first; the full budget
    runs only when their per-pick time says it finishes within ``limit_s``."""
    from activedpo_server.selection import greedy_select_dense

    t0 = time.perf_counter()
    picks, _ = greedy_select_dense(x, lab, min(2, budget), lam)
    per_pick = (time.perf_counter() - t0) / len(picks)
    if per_pick * budget > limit_s:
        return picks, per_pick * len(picks), False
    t0 = time.perf_counter()
    picks, _ = greedy_select_dense(x, lab, budget, lam)
    return picks, time.perf_counter() - t0, True


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[3000, 100_000])
    ap.add_argument("--dims", type=int, nargs="+", default=[2048, 8192])
    ap.add_argument("--kinds", nargs="+", default=["gaussian", "low-rank"], choices=["gaussian", "low-rank"])
    ap.add_argument(
        "--labeled", type=int, nargs="+", default=None, help="k values [default: 0 150, and 10000 at N ≤ 3000]"
    )
    ap.add_argument("--budget", type=int, default=50)
    ap.add_argument("--lam", type=float, default=1.0)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--dense-seconds", type=float, default=120.0)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/selection.md"))
    args = ap.parse_args()

    from activedpo_server.selection import greedy_select

    rows = []
    for d in args.dims:
        for n in args.sizes:
            for kind in args.kinds:
                x = candidates(kind, n, d, seed=0)
                ks = args.labeled or [0, 150] + ([10_000] if n <= 3000 else [])
                for k in ks:
                    lab = candidates(kind, k, d, seed=1) if k else np.zeros((0, d), np.float32)
                    t_fast = median_seconds(
                        lambda x=x, lab=lab: greedy_select(x, lab, args.budget, args.lam), args.repeats
                    )
                    picks = greedy_select(x, lab, args.budget, args.lam)
                    dense = "—"
                    if n <= 3000:
                        dpicks, t_dense, done = dense_timed(x, lab, args.budget, args.lam, args.dense_seconds)
                        same = "equal" if picks[: len(dpicks)] == dpicks else "DIFFER"
                        if done:
                            dense = f"{t_dense:.1f} s ({t_dense / t_fast:,.0f}×), picks {same}"
                        else:
                            est = t_dense / len(dpicks) * args.budget
                            dense = (
                                f"≈{est:.0f} s extrapolated from {len(dpicks)} picks in {t_dense:.0f} s "
                                f"(≈{est / t_fast:,.0f}×), first picks {same}"
                            )
                    rows.append((n, d, kind, k, t_fast, dense))
                    print(rows[-1], flush=True)
                del x

    lines = [
        *header("Greedy V⁻¹ selection: lazy Woodbury/Cholesky against the literal dense rule"),
        f"Budget B = {args.budget}, λ = {args.lam}, unit-norm float32 candidates; medians of {args.repeats} runs "
        "after a warm-up run.",
        "",
        "| N | d | candidates | labeled k | greedy_select s | literal dense rule |",
        "|---|---|---|---|---|---|",
    ]
    for n, d, kind, k, t, dense in rows:
        lines.append(f"| {n:,} | {d} | {kind} | {k:,} | {t:.3f} | {dense} |")
    print("\n".join(lines))
    write(args.out, lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())
