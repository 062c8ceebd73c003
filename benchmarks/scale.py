"""Scale: SelectBatch through the real server as the pool grows, and what each cost grows with.

    .venv/bin/python benchmarks/scale.py [--sizes 3000 100000 1000000] [--proj-dim 1024] [--labels 150]
        [--dims 1024 2048 8192] [--label-counts 0 150 2000] [--selection torch numpy] [--no-featurize]
        [--repeats 3] [--out benchmarks/results/scale.md]

For each pool (N candidate pairs, k labeled pairs, projection dimension d, feature storage
dtype) a fresh state dir is filled the way a running server fills it, without the hours of
featurization a million real responses would take: N/3 prompts × 3 responses go into the
SQLite store through :meth:`Store.add_candidates` (3 pairs per prompt), k pairs are labeled,
and every response gets a synthetic unit-norm feature (a rank-32 signal plus isotropic noise,
the shape real gradient features have) in the FAISS store under the feature key the server
computes for the default toy world's SFT checkpoint. Then ``activedpo-server serve`` starts on
that state and ``SelectBatch(budget=50)`` is timed over gRPC: reading the pool from SQLite,
reading the features from FAISS, building pair features and the greedy ``V⁻¹`` selection. Each
call leases its batch for 1 s and the next waits it out, so every call sees the same pool.
Peak memory is the server process's peak resident set (VmHWM), also as a multiple of the
stored feature bytes (R responses × d × bytes per value: what the FAISS index must hold).
``--selection`` runs each pool under each selection backend (``serve --selection``: torch on the
server's device, or the numpy reference), side by side on the same state.

Also measured: FAISS store add / save / load / read throughput, real featurization throughput
(responses/s through the gradient featurizer at each d; a pool of N responses costs N / that),
and, with ``--float16``, the pick agreement between float16 and float32 feature storage.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from _report import header, write

from server import start  # benchmarks/server.py

BUDGET = 50


@dataclass
class Result:
    n: int
    d: int
    k: int
    dtype: str
    selection: str
    feature_bytes: int
    populate_s: float
    faiss_add_rows_s: float
    faiss_save_s: float
    faiss_load_s: float
    faiss_read_rows_s: float
    start_s: float
    select_s: list[float]
    peak_gib: float
    picks: list[str]


def synthetic_features(n: int, d: int, rng: np.random.Generator, basis: np.ndarray) -> np.ndarray:
    """Unit rows: a rank-32 signal with a decaying spectrum plus isotropic noise."""
    z = rng.standard_normal((n, basis.shape[0]), dtype=np.float32) * (0.9 ** np.arange(basis.shape[0]))
    x = z @ basis + 0.3 * rng.standard_normal((n, d), dtype=np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x


def peak_gib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 2**20
    return float("nan")


def run_pool(world, n: int, d: int, k: int, dtype: str, selections: list[str], repeats: int,
             work: Path) -> list[Result]:  # fmt: skip
    from activedpo_server.features import GradientFeaturizer
    from activedpo_server.featurestore import FeatureStore
    from activedpo_server.records import Candidates, LabelIn
    from activedpo_server.store import Store

    state = work / f"n{n}-d{d}-k{k}-{dtype}" / "state"
    state.mkdir(parents=True)
    t0 = time.perf_counter()
    store = Store(state)
    prompts = math.ceil(n / 3)
    for s in range(0, prompts, 20_000):  # one transaction per 20k prompts
        store.add_candidates(
            Candidates(f"bench prompt {i} :", [(None, f" response {j} to {i}") for j in range(3)])
            for i in range(s, min(s + 20_000, prompts))
        )
    view = store.pool_view()
    if k:
        ids = [p.pair_id for p in store.pair_details(view.pair_rows[:k].tolist())]
        store.submit_labels([LabelIn(pid, 1, "bench") for pid in ids], "bench")
    responses = np.unique(view.pairs)
    populate_s = time.perf_counter() - t0
    store.close()

    key = GradientFeaturizer(world.sft_dir, proj_dim=d).feature_key  # what the server will look for
    fs = FeatureStore(state / "features", key, d, dtype)
    rng = np.random.default_rng(0)
    basis = rng.standard_normal((32, d), dtype=np.float32)
    add_s = 0.0
    for s in range(0, len(responses), 50_000):
        rows = responses[s : s + 50_000]
        x = synthetic_features(len(rows), d, rng, basis)
        t = time.perf_counter()
        fs.add(rows, x)
        add_s += time.perf_counter() - t
    t = time.perf_counter()
    fs.save()
    save_s = time.perf_counter() - t
    del fs
    t = time.perf_counter()
    fs = FeatureStore(state / "features", key, d, dtype)
    load_s = time.perf_counter() - t
    t = time.perf_counter()
    for s in range(0, len(responses), 50_000):
        fs.get(responses[s : s + 50_000])
    read_s = time.perf_counter() - t
    del fs

    feature_bytes = len(responses) * d * (2 if dtype == "float16" else 4)
    out = []
    for selection in selections:
        out.append(_serve_and_select(world, state, n, d, k, dtype, selection, repeats, prompts))
        r = out[-1]
        out[-1] = Result(n, d, k, dtype, selection, feature_bytes, populate_s, len(responses) / add_s, save_s, load_s,
                         len(responses) / read_s, r[0], r[1], r[2], r[3])  # fmt: skip
        print(f"N={n:,} d={d} k={k} {dtype} selection={selection}: SelectBatch {statistics.median(r[1]):.2f} s, "
              f"peak {r[2]:.2f} GiB = {r[2] * 2**30 / feature_bytes:.2f} x the feature bytes "
              f"(populate {populate_s:.0f} s, start {r[0]:.1f} s)", flush=True)  # fmt: skip
    return out


def _serve_and_select(world, state: Path, n, d, k, dtype, selection, repeats, prompts):
    import signal

    import grpc

    from activedpo.v1 import selector_pb2 as pb
    from activedpo.v1 import selector_pb2_grpc as pb_grpc

    proc, port, start_s = start(state, world.sft_dir, d, ("--feature-dtype", dtype, "--selection", selection))
    try:
        stub = pb_grpc.SelectorStub(grpc.insecure_channel(f"127.0.0.1:{port}", options=[
            ("grpc.max_receive_message_length", 64 << 20)]))  # fmt: skip
        times, picks = [], []
        for i in range(repeats):
            if i:
                time.sleep(1.1)  # the previous batch's 1 s lease runs out: the same pool again
            t = time.perf_counter()
            events = list(stub.SelectBatch(pb.SelectBatchRequest(budget=BUDGET, lease_seconds=1), timeout=3600))
            times.append(time.perf_counter() - t)
            batch = events[-1].batch
            want = 3 * prompts - k  # N rounded up to whole prompts of 3 pairs
            assert len(batch.pairs) == BUDGET and batch.candidates == want, (len(batch.pairs), batch.candidates, want)
            picks = picks or [p.pair_id for p in batch.pairs]
        peak = peak_gib(proc.pid)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait()
    return start_s, times, peak, picks


def featurize_rate(world, d: int, n: int = 256, repeats: int = 2) -> float:
    """Responses per second through the gradient featurizer (round one: fresh r = 128 adapter), steady state."""
    from activedpo_core.checkpoint import load_model
    from activedpo_server.features import GradientFeaturizer
    from activedpo_trainer.generation import GenerationSettings, generate

    prompts = world.task.train_prompts()[:n]
    ref = load_model(world.sft_dir)
    responses = [g[0] if g[0].strip() else " a" for g in generate(ref.model, ref.tokenizer, prompts, 1,
                                                                  GenerationSettings(), seed=0)]  # fmt: skip
    f = GradientFeaturizer(world.sft_dir, proj_dim=d)
    f.featurize(prompts, responses)  # warm-up on the same rows: kernels, cached projection blocks
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        f.featurize(prompts, responses)
        times.append(time.perf_counter() - t)
    return n / statistics.median(times)


def slope(xs: list[float], ys: list[float]) -> str:
    """Least-squares exponent of y ∝ x^a over the points."""
    if len(xs) < 2:
        return "—"
    a = np.polyfit(np.log(xs), np.log(ys), 1)[0]
    return f"{a:.2f}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", type=int, nargs="+", default=[3000, 100_000, 1_000_000], help="N candidate pairs")
    ap.add_argument("--proj-dim", type=int, default=1024, help="d for the N and k sweeps")
    ap.add_argument("--labels", type=int, default=150, help="k for the N and d sweeps (3 rounds of 50)")
    ap.add_argument("--dims", type=int, nargs="+", default=[1024, 2048, 8192], help="d sweep at the middle N")
    ap.add_argument("--label-counts", type=int, nargs="+", default=[0, 150, 2000], help="k sweep at the middle N")
    ap.add_argument("--float16", action=argparse.BooleanOptionalAction, default=True,
                    help="also run the N sweep with float16 storage and report pick agreement")  # fmt: skip
    ap.add_argument("--selection", nargs="+", default=["torch"], choices=["torch", "numpy"],
                    help="selection backends, each run on the same pools")  # fmt: skip
    ap.add_argument("--featurize", action=argparse.BooleanOptionalAction, default=True,
                    help="also measure real featurization throughput at each d")  # fmt: skip
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/scale.md"))
    args = ap.parse_args()

    from activedpo_core.progress import quiet_libraries
    from activedpo_trainer.toyworld import ToyWorldConfig, build_toyworld

    quiet_libraries()
    world = build_toyworld(ToyWorldConfig.preset("default"))
    mid = sorted(args.sizes)[len(args.sizes) // 2]
    d0, k0 = args.proj_dim, args.labels
    configs = [(n, d0, k0, "float32") for n in args.sizes]
    configs += [(n, d0, k0, "float16") for n in args.sizes] if args.float16 else []
    configs += [(mid, d, k0, "float32") for d in args.dims if d != d0]
    configs += [(mid, d0, k, "float32") for k in args.label_counts if k != k0]
    rates = {d: featurize_rate(world, d) for d in sorted({d0, *args.dims})} if args.featurize else {}
    if rates:
        print("featurization: " + ", ".join(f"d={d} {r:.1f} responses/s" for d, r in rates.items()), flush=True)

    results: dict[tuple, Result] = {}
    with tempfile.TemporaryDirectory(dir=Path.cwd()) as tmp:  # on the disk the state dirs would use
        for c in dict.fromkeys(configs):
            for r in run_pool(world, *c, args.selection, args.repeats, Path(tmp)):
                results[(*c, r.selection)] = r
            for p in Path(tmp).glob("*/state"):  # free the disk before the next pool
                import shutil

                shutil.rmtree(p.parent)

    def med(r: Result) -> float:
        return statistics.median(r.select_s)

    sel0 = args.selection[0]

    lines = [
        *header("Scale: SelectBatch(budget=50) through the server as the pool grows"),
        f"Synthetic unit-norm features (rank-32 signal + noise) stored as a running server stores them; 3 responses "
        f"(3 pairs) per prompt; the default toy world's SFT checkpoint; SelectBatch over gRPC on 127.0.0.1, median "
        f"of {args.repeats} calls, each over the same pool. Peak memory: the server process's VmHWM.",
        "",
        "## SelectBatch against pool size",
        "",
        "| N pairs | d | k labels | storage | selection | SelectBatch | peak server memory | peak / feature bytes "
        "| server start (load) | FAISS add | save | load | read |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for (n, d, k, dt, sel), r in results.items():
        lines.append(
            f"| {n:,} | {d} | {k} | {dt} | {sel} | {med(r):.2f} s | {r.peak_gib:.2f} GiB "
            f"| {r.peak_gib * 2**30 / r.feature_bytes:.2f} × {r.feature_bytes / 2**30:.2f} GiB | {r.start_s:.1f} s "
            f"| {r.faiss_add_rows_s:,.0f} rows/s | {r.faiss_save_s:.2f} s | {r.faiss_load_s:.2f} s "
            f"| {r.faiss_read_rows_s:,.0f} rows/s |"
        )
    if args.float16:
        lines += ["", "## float16 against float32 storage (same pool, same features)", "",
                  "| N pairs | picks in common (of 50) | same pick at the same rank | memory float16 / float32 |",
                  "|---|---|---|---|"]  # fmt: skip
        for n in args.sizes:
            a, b = results[(n, d0, k0, "float32", sel0)], results[(n, d0, k0, "float16", sel0)]
            common = len(set(a.picks) & set(b.picks))
            same = sum(x == y for x, y in zip(a.picks, b.picks, strict=True))
            lines.append(f"| {n:,} | {common} | {same} | {b.peak_gib / a.peak_gib:.2f} |")
    if len(args.selection) > 1:
        lines += ["", "## Selection backends side by side (same pools, same server build)", "",
                  "| N pairs | d | k | " + " | ".join(args.selection) + " | same 50 picks in order |",
                  "|---|---|---|" + "---|" * len(args.selection) + "---|"]  # fmt: skip
        for c in dict.fromkeys(configs):
            rs = [results[(*c, sel)] for sel in args.selection]
            same = all(r.picks == rs[0].picks for r in rs)
            lines.append(f"| {c[0]:,} | {c[1]} | {c[2]} | " + " | ".join(f"{med(r):.2f} s" for r in rs)
                         + f" | {'yes' if same else 'no'} |")  # fmt: skip
    if rates:
        lines += ["", "## Featurization throughput (real responses, gradient featurizer, fresh r = 128 adapter)", "",
                  "| d | responses/s | one round of 3,000 responses | 1,000,000 responses |",
                  "|---|---|---|---|"]  # fmt: skip
        for d, r in rates.items():
            lines.append(f"| {d} | {r:.1f} | {3000 / r:.0f} s | {1e6 / r / 3600:.1f} h |")

    ns = [n for n in args.sizes]
    ds = sorted({d0, *args.dims})
    ks = sorted({k0, *args.label_counts})
    n_times = [med(results[(n, d0, k0, "float32", sel0)]) for n in ns]
    d_times = [med(results[(mid, d, k0, "float32", sel0)]) for d in ds]
    k_times = [med(results[(mid, d0, k, "float32", sel0)]) for k in ks]
    n_mem = [results[(n, d0, k0, "float32", sel0)].peak_gib for n in ns]
    k_pos = [(k, t) for k, t in zip(ks, k_times, strict=True) if k > 0]

    def row(cost: str, points: str, exponent: str, complexity: str) -> str:
        return f"| {cost} | {points} | {exponent} | {complexity} |"

    def pts(xs, ys, unit: str, fmt: str = "{:,}") -> str:
        return ", ".join(f"{fmt.format(x)}: {y:.2f} {unit}" for x, y in zip(xs, ys, strict=True))

    ms = [1000 / rates[d] for d in ds] if rates else []
    lines += [
        "",
        "## How the costs grow",
        "",
        "| cost | measured | fitted exponent | the algorithm's complexity |",
        "|---|---|---|---|",
        row(f"SelectBatch vs N (d={d0}, k={k0})", pts(ns, n_times, "s"), f"N^{slope(ns, n_times)}",
            "O(N·d) reads and scoring, O(N·k·d) initial scores; lazy greedy touches few rows per pick"),
        row(f"SelectBatch vs d (N={mid:,}, k={k0})", pts(ds, d_times, "s", "{}"), f"d^{slope(ds, d_times)}",
            "O(N·d)"),
        row(f"SelectBatch vs k (N={mid:,}, d={d0})", pts(ks, k_times, "s", "{}"),
            f"k^{slope([k for k, _ in k_pos], [t for _, t in k_pos])} (k > 0)",
            "O(N·k·d) initial scores while k < d (Woodbury), O(d³ + N·d²) from k ≥ d (dense Cholesky)"),
        row("peak server memory vs N", pts(ns, n_mem, "GiB"), f"N^{slope(ns, n_mem)}",
            "O(N·d): the FAISS rows, read in place; pair rows are gathered a block at a time"),
    ]  # fmt: skip
    if rates:
        lines.append(row("featurization vs d", pts(ds, ms, "ms/response", "{}"), f"d^{slope(ds, ms)}",
                         "O(D·d) per response for the projection (D LoRA parameters) plus one backward pass"))
    print("\n".join(lines))
    write(args.out, lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())
