"""The selection server through gRPC: SelectBatch latency, SubmitLabels throughput, restart time.

    .venv/bin/python benchmarks/server.py [--prompts 1000] [--responses 3] [--proj-dim 8192]

Starts ``activedpo-server serve`` in a subprocess on 127.0.0.1 with the default toy world's SFT
checkpoint (round one: a fresh r = 128 adapter), adds ``prompts × responses`` candidates
(responses sampled by π_ref: 1000 × 3 = 3000 pairs, the paper's round), then measures:

* ``SelectBatch(budget=50)`` with featurization of every response included (first call), and
  again with the features cached in the FAISS index (median of ``--repeats`` calls; each call
  leases its 50 pairs, so later calls choose among slightly fewer candidates);
* ``SubmitLabels`` throughput for ``--labels`` labels in requests of 100 (each request is one
  durable SQLite transaction, acknowledged after commit);
* restart time with that state: process start to the port being served, and to the first
  GetStatus answer.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _report import header, write


def start(
    state: Path, checkpoint: Path | None, proj_dim: int, extra: tuple[str, ...] = ()
) -> tuple[subprocess.Popen, int, float]:
    """``activedpo-server serve`` on a free port: (process, port, seconds until the port was served)."""
    port_file = state.parent / "port"
    port_file.unlink(missing_ok=True)
    cmd = [sys.executable, "-m", "activedpo_server.cli", "serve", "--state-dir", str(state), "--port", "0",
           "--port-file", str(port_file), "--proj-dim", str(proj_dim), *extra]  # fmt: skip
    if checkpoint is not None:
        cmd += ["--checkpoint", str(checkpoint)]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stderr=open(state.parent / "server.log", "a"))  # noqa: SIM115
    while not port_file.exists():
        if proc.poll() is not None:
            raise RuntimeError((state.parent / "server.log").read_text())
        time.sleep(0.02)
    return proc, int(port_file.read_text()), time.perf_counter() - t0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--prompts", type=int, default=1000)
    ap.add_argument("--responses", type=int, default=3)
    ap.add_argument("--proj-dim", type=int, default=8192)
    ap.add_argument("--labels", type=int, default=10_000)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/server.md"))
    args = ap.parse_args()

    import grpc

    from activedpo.v1 import selector_pb2 as pb
    from activedpo.v1 import selector_pb2_grpc as pb_grpc
    from activedpo_core.checkpoint import load_model
    from activedpo_core.progress import quiet_libraries
    from activedpo_trainer.generation import GenerationSettings, generate
    from activedpo_trainer.toyworld import ToyWorldConfig, build_toyworld

    quiet_libraries()
    world = build_toyworld(ToyWorldConfig.preset("default"))
    prompts = world.task.train_prompts()[: args.prompts]
    ref = load_model(world.sft_dir)
    sampled = generate(ref.model, ref.tokenizer, prompts, args.responses, GenerationSettings(), seed=0)
    # the server refuses empty responses (a bare EOS): keep prompts with at least two non-empty ones
    kept = [(p, [r for r in rs if r.strip()]) for p, rs in zip(prompts, sampled, strict=True)]
    prompts, responses = zip(*[(p, rs) for p, rs in kept if len(rs) >= 2], strict=True)

    with tempfile.TemporaryDirectory() as tmp:
        state = Path(tmp) / "state"
        proc, port, _ = start(state, world.sft_dir, args.proj_dim)
        stub = pb_grpc.SelectorStub(grpc.insecure_channel(f"127.0.0.1:{port}"))
        reqs = (
            pb.AddCandidatesRequest(
                group=pb.PromptGroup(prompt=p, responses=[pb.CandidateResponse(text=r) for r in rs])
            )
            for p, rs in zip(prompts, responses, strict=True)
        )
        t0 = time.perf_counter()
        added = stub.AddCandidates(reqs)
        t_add = time.perf_counter() - t0
        print(f"added {added.pairs_added} pairs ({added.pairs_deduplicated} duplicates) in {t_add:.1f} s", flush=True)

        def select() -> tuple[float, pb.SelectedBatch]:
            t = time.perf_counter()
            events = list(stub.SelectBatch(pb.SelectBatchRequest(budget=50)))
            return time.perf_counter() - t, events[-1].batch

        t_first, first = select()
        print(f"first SelectBatch (featurizing): {t_first:.1f} s", flush=True)
        cached = [select() for _ in range(args.repeats)]
        t_cached = statistics.median(t for t, _ in cached)
        print(f"cached SelectBatch: median {t_cached:.3f} s", flush=True)

        # label throughput: one batch's pairs, each labeled many times (repeat annotations are kept)
        pair_ids = [p.pair_id for p in first.pairs] + [p.pair_id for _, b in cached for p in b.pairs]
        t0 = time.perf_counter()
        for s in range(0, args.labels, 100):
            labels = [
                pb.Label(pair_id=pair_ids[i % len(pair_ids)], preference=pb.PREFERENCE_A, annotator=f"a{i % 7}",
                         idempotency_key=f"k{i}")
                for i in range(s, min(s + 100, args.labels))
            ]  # fmt: skip
            res = stub.SubmitLabels(pb.SubmitLabelsRequest(labels=labels))
            assert res.accepted == len(labels), res
        t_labels = time.perf_counter() - t0
        print(f"{args.labels} labels in {t_labels:.1f} s", flush=True)
        status = stub.GetStatus(pb.GetStatusRequest())

        proc.send_signal(signal.SIGTERM)
        proc.wait()
        restarts = []
        for _ in range(3):
            proc, port, t_port = start(state, None, args.proj_dim)
            t0 = time.perf_counter()
            stub = pb_grpc.SelectorStub(grpc.insecure_channel(f"127.0.0.1:{port}"))
            again = stub.GetStatus(pb.GetStatusRequest())
            restarts.append((t_port, t_port + time.perf_counter() - t0))
            assert again.annotations == status.annotations and again.pool_size == status.pool_size
            proc.send_signal(signal.SIGTERM)
            proc.wait()
        db_mb = sum(f.stat().st_size for f in state.rglob("*") if f.is_file()) / 1e6

    lines = [
        *header("Selection server through gRPC"),
        f"Default toy world, SFT checkpoint (fresh r = 128 adapter), {args.prompts} prompts × {args.responses} "
        f"responses sampled by π_ref ({len(prompts)} prompts with ≥ 2 non-empty responses) = {added.pairs_added} "
        f"candidate pairs, d = {args.proj_dim}, server and client "
        f"on this machine over 127.0.0.1 (os.cpu_count() = {os.cpu_count()}).",
        "",
        "| measure | value |",
        "|---|---|",
        f"| AddCandidates ({added.pairs_added} pairs, one stream) | {t_add:.2f} s |",
        f"| SelectBatch(budget=50), featurization of {status.featurized} responses included | {t_first:.1f} s |",
        f"| SelectBatch(budget=50), features cached (median of {args.repeats}) | {t_cached:.3f} s |",
        f"| SubmitLabels, {args.labels:,} labels in requests of 100 (durable) | {t_labels:.2f} s = "
        f"{args.labels / t_labels:,.0f} labels/s |",
        f"| restart with that state ({db_mb:.0f} MB on disk): to serving / to first GetStatus (median of 3) "
        f"| {statistics.median(r[0] for r in restarts):.2f} s / {statistics.median(r[1] for r in restarts):.2f} s |",
        "",
        "Restart includes starting Python, importing torch and transformers, loading the checkpoint and "
        "opening the database and feature index.",
    ]
    print("\n".join(lines))
    write(args.out, lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())
