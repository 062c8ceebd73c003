"""Ray against local featurization: the same responses, the same features, responses/s side by side.

    .venv/bin/python benchmarks/ray_featurize.py [--responses 512] [--proj-dim 2048] [--actors 1 2] [--repeats 3]

The default toy world's SFT checkpoint (round one: a fresh r = 128 adapter), ``--responses`` π_ref
samples. The local path is one GradientFeaturizer in this process using every core; the Ray path
is ``activedpo_server.distributed.featurize_on_ray`` on a local Ray instance with ``--actors``
actors, each given cpu_count/actors cores (Ray sets their torch threads to match), each loading
the checkpoint once.
Timings alternate local and Ray runs (medians of ``--repeats``). Every Ray call starts its actor
pool, and each actor loads the checkpoint and generates its projection blocks: that fixed cost is
measured with a call of one response per actor and reported apart from the throughput past it,
which is what a large pool sees. The features are compared row by row.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
from _report import header, write


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--responses", type=int, default=512)
    ap.add_argument("--proj-dim", type=int, default=2048)
    ap.add_argument("--actors", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/ray_featurize.md"))
    args = ap.parse_args()

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    import ray
    import torch

    from activedpo_core.checkpoint import load_model
    from activedpo_core.progress import quiet_libraries
    from activedpo_server.distributed import RaySettings, featurize_on_ray
    from activedpo_server.features import FeaturizerConfig, GradientFeaturizer
    from activedpo_trainer.generation import GenerationSettings, generate
    from activedpo_trainer.toyworld import ToyWorldConfig, build_toyworld

    quiet_libraries()
    world = build_toyworld(ToyWorldConfig.preset("default"))
    prompts = world.task.train_prompts()[: args.responses]
    ref = load_model(world.sft_dir)
    responses = [g[0] if g[0].strip() else " a" for g in generate(ref.model, ref.tokenizer, prompts, 1,
                                                                  GenerationSettings(), seed=0)]  # fmt: skip
    cores = os.cpu_count() or 1

    local = GradientFeaturizer(world.sft_dir, proj_dim=args.proj_dim)
    local.featurize(prompts, responses)  # warm-up: projection blocks cached, kernels loaded

    def run_local():
        t = time.perf_counter()
        out = local.featurize(prompts, responses)
        return time.perf_counter() - t, out

    t0 = time.perf_counter()
    ray.init(num_cpus=cores, include_dashboard=False, log_to_driver=False)
    t_ray_init = time.perf_counter() - t0
    rows = []
    for actors in args.actors:
        settings = RaySettings(actors=actors, num_cpus=cores / actors, batch_size=64)

        def run_ray(n, s=settings):
            t = time.perf_counter()
            out = featurize_on_ray(world.sft_dir, prompts[:n], responses[:n], config=FeaturizerConfig(args.proj_dim),
                                   ray_settings=s)  # fmt: skip
            return time.perf_counter() - t, out

        run_ray(actors)  # the first call also loads Ray Data's own code
        t_local, t_ray, t_start = [], [], []
        for _ in range(args.repeats):  # alternating, so drift on a shared machine hits both alike
            tl, fl = run_local()
            tr, fr = run_ray(len(responses))
            ts, _ = run_ray(actors)  # one response per actor: a call's fixed cost
            t_local.append(tl)
            t_ray.append(tr)
            t_start.append(ts)
        err = float(np.abs(fr - fl).max())
        rel = float((np.linalg.norm(fr - fl, axis=1) / np.linalg.norm(fl, axis=1)).max())
        ml, mr, ms = statistics.median(t_local), statistics.median(t_ray), statistics.median(t_start)
        rows.append((actors, ms, mr, ml, err, rel))
        print(f"{actors} actors: ray {mr:.1f} s (fixed {ms:.1f} s), local {ml:.1f} s, max |Δ| {err:.1e}", flush=True)
    ray.shutdown()

    lines = [
        *header("Featurization on Ray against the local featurizer"),
        f"Default toy world, SFT checkpoint (fresh r = 128 adapter), {args.responses} π_ref samples, d = "
        f"{args.proj_dim}; a local Ray instance on this machine's {cores} cores (torch {torch.__version__}). Local: "
        f"one featurizer in the calling process on all cores. Ray: `featurize_on_ray`, N actors with {cores}/N "
        f"cores each. Medians of {args.repeats} alternating runs; Ray started in {t_ray_init:.1f} s (once).",
        "",
        f"| Ray actors | Ray, one call of {args.responses} | of which fixed per call (actors start, load the "
        "checkpoint, generate projection blocks) | Ray throughput past the fixed cost | local | Ray / local, "
        "whole call | Ray / local, past the fixed cost | features: max abs difference (max relative) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for actors, ms, mr, ml, err, rel in rows:
        steady = args.responses / max(mr - ms, 1e-9)
        lines.append(
            f"| {actors} | {mr:.2f} s | {ms:.2f} s | {steady:.1f} resp/s | {ml:.2f} s = {args.responses / ml:.1f} "
            f"resp/s | {ml / mr:.2f}× | {steady / (args.responses / ml):.2f}× | {err:.1e} ({rel:.1e}) |"
        )
    lines += [
        "",
        "On one machine Ray cannot add compute: its actors share the cores the local featurizer already uses, so "
        "the ratio measures Ray's overhead (scheduling, moving rows and features through the object store). Ray "
        "pays off when its actors sit on other machines or other GPUs, where throughput adds up per actor.",
    ]
    print("\n".join(lines))
    write(args.out, lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())
