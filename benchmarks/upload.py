"""Checkpoint upload: throughput and the time from upload start to serving, for a ~100 MB adapter.

A real server subprocess on 127.0.0.1 with no shared disk for checkpoints (no --checkpoint-root
but the base model's); the client pushes a PEFT adapter (all linear layers, random non-zero A and B)
on a locally built Llama-style model (hidden 1024, ``--layers`` layers, rank ``--rank``: 6 layers at
r = 256 make a 107 MB adapter), then loads it by id. Each repetition uses a fresh
state dir (a cold upload); a second push of the same content is timed too (nothing is sent).

    python benchmarks/upload.py --layers 6 --rank 256 --repeats 3
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from _report import header, write


def make_adapter(base_dir: Path, r: int, out: Path):
    import torch
    from peft import LoraConfig, get_peft_model

    from activedpo_core.checkpoint import CheckpointManifest, load_model

    base = load_model(base_dir).model
    torch.manual_seed(0)
    cfg = LoraConfig(r=r, lora_alpha=r, target_modules="all-linear", init_lora_weights=False, task_type="CAUSAL_LM")
    get_peft_model(base, cfg).save_pretrained(out / "adapter")
    manifest = CheckpointManifest.new(str(base_dir), "adapter", None, id=f"bench-r{r}")
    manifest.save(out)
    size = sum(p.stat().st_size for p in (out / "adapter").iterdir())
    return manifest, r, size


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--layers", type=int, default=6)
    ap.add_argument("--rank", type=int, default=256, help="a power of two: the sjlt projection's d is a multiple")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "upload.md")
    args = ap.parse_args()

    from activedpo_client.remote import Connection, EmbeddedServer, SelectorClient
    from activedpo_core.progress import quiet_libraries
    from activedpo_trainer.localmodels import build_local_model

    quiet_libraries()
    tmp = Path(tempfile.mkdtemp(prefix="upload-bench-"))
    base_dir = build_local_model(tmp / "base", "llama", hidden=1024, layers=args.layers, heads=8)
    manifest, r, size = make_adapter(base_dir, args.rank, tmp / "ckpt")
    rows = []
    for i in range(args.repeats):
        serve = ["--proj-dim", "2048", "--checkpoint-root", str(base_dir)]
        with EmbeddedServer(tmp / f"state-{i}", base_dir, args=serve) as server, SelectorClient(
            Connection(server.target)
        ) as client:
            client.wait_ready()
            t0 = time.perf_counter()
            sent = client.upload_checkpoint(tmp / "ckpt" / "adapter", manifest.id, str(base_dir))
            t1 = time.perf_counter()
            loaded = client.load_checkpoint(checkpoint_id=manifest.id)
            t2 = time.perf_counter()
            again = client.upload_checkpoint(tmp / "ckpt" / "adapter", manifest.id, str(base_dir))
            t3 = time.perf_counter()
            assert sent == size and again == 0 and loaded.loaded and client.status().checkpoint_id == manifest.id
            rows.append(dict(upload=t1 - t0, load=t2 - t1, serving=t2 - t0, again=t3 - t2))
            print(f"repeat {i}: upload {t1 - t0:.2f} s ({size / 1e6 / (t1 - t0):.0f} MB/s), load {t2 - t1:.2f} s, "
                  f"re-upload {t3 - t2:.3f} s", flush=True)  # fmt: skip
    med = {k: statistics.median(r_[k] for r_ in rows) for k in rows[0]}
    lines = [
        *header("Checkpoint upload: throughput and upload start to serving"),
        f"Adapter: PEFT LoRA r={r} on a local Llama-style model (hidden 1024, {args.layers} layers), all linear "
        f"layers, {size / 1e6:.1f} MB in "
        f"{len(list((tmp / 'ckpt' / 'adapter').iterdir()))} files. Server and client on this machine over "
        f"127.0.0.1 (gRPC, 1 MiB chunks, SHA-256 on both sides, fsync before the blob is kept). "
        f"Medians of {args.repeats} cold uploads, each into a fresh state dir.",
        "",
        "| step | median s | |",
        "|---|---|---|",
        f"| upload (hash + send + verify + store) | {med['upload']:.2f} | {size / 1e6 / med['upload']:.0f} MB/s |",
        f"| LoadCheckpoint(checkpoint_id) | {med['load']:.2f} | |",
        f"| upload start → serving | {med['serving']:.2f} | |",
        f"| re-upload of known content | {med['again']:.3f} | 0 bytes sent |",
        "",
        "Per repeat: " + "; ".join(f"{x['upload']:.2f} / {x['load']:.2f} s" for x in rows),
    ]
    print("\n".join(lines))
    write(args.out, lines)


if __name__ == "__main__":
    main()
