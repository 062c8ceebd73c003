"""Projection kinds (sjlt, kron, dense) against the exact gradients: quality, speed, and 7B-shaped cost.

    .venv/bin/python benchmarks/projection.py [--prompts 667] [--dims 2048 8192]   # → results/projection.md

Quality. The default toy world's π_ref samples 3 responses to each of ``--prompts`` train prompts
(2,001 responses, 2,001 pairs). An adapter with A and B both non-zero (r = 128, α = 512, random,
all linear layers) gives every response's *exact* LoRA gradient (D = 557,056), unit-normalised
as the server normalises features. For each kind and d, the projected, normalised features are
compared with the exact ones on what selection uses, the pair features φ = f(y1) − f(y2):

* inner products: ‖ΦΦᵀ − Φ*Φ*ᵀ‖_F / ‖Φ*Φ*ᵀ‖_F over 500 sampled pairs;
* scores: Spearman correlation of φᵀV⁻¹φ (λ = 1, V from 150 labeled pairs) over the other pairs;
* picks: the share of the 50 greedy ActiveDPO picks that the exact picks also contain.

Exact scores and picks are computed in an exact isometric embedding of the pair features (the
eigenvectors of their Gram matrix), which gives φᵀV⁻¹φ exactly (it depends on inner products
only). Three draws of the labeled set; means reported. The yardstick is how well one dense
seed agrees with another on the same measures.

Speed. Featurization end to end (``featurize``) per response on 256 responses, batch 16, for
each kind, beside the floor (a plain batched forward + backward into the LoRA parameters),
for the fresh round-one adapter and the r = 128 adapter with A and B non-zero.

7B-shaped. A 7B Llama's LoRA layer shapes (hidden 4096, intermediate 11008, 32 layers, r = 128,
on q, k, v, o and on all seven projections) with synthetic per-layer factors of 512 tokens: the
projection's state and its time per response, beside the gradient capture's own time (forming
the per-example LoRA gradients from the same factors, as the dense path must). One layer of each
shape is timed and multiplied by its count; the dense kind cannot be held (D × d floats) and is
estimated from this machine's measured matmul rate.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from _report import header, median_seconds, write
from featurize import matmul_gflops, random_adapter

KINDS = (("sjlt", 0), ("kron", 0), ("dense", 0), ("dense", 1))


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    ra, rb = np.argsort(np.argsort(a)), np.argsort(np.argsort(b))
    return float(np.corrcoef(ra, rb)[0, 1])


def embed(gram: np.ndarray) -> np.ndarray:
    """Rows whose inner products are ``gram`` (an exact isometric embedding of the vectors behind it)."""
    w, v = np.linalg.eigh(gram)
    keep = w > w.max() * 1e-12
    return v[:, keep] * np.sqrt(w[keep])


def agreement(phi_a: np.ndarray, phi_b: np.ndarray, draws: list, sample: np.ndarray) -> dict:
    """How well pair features ``phi_a`` reproduce ``phi_b`` (each [pairs, dims]) on the three measures."""
    from activedpo_server.selection import _BaseInverse, greedy_select

    ga, gb = phi_a[sample] @ phi_a[sample].T, phi_b[sample] @ phi_b[sample].T
    out = {"inner": float(np.linalg.norm(ga - gb) / np.linalg.norm(gb)), "spearman": [], "picks": []}
    for labeled, cand in draws:
        sa = _BaseInverse(phi_a[labeled], 1.0, phi_a.shape[1]).scores(phi_a[cand])
        sb = _BaseInverse(phi_b[labeled], 1.0, phi_b.shape[1]).scores(phi_b[cand])
        out["spearman"].append(spearman(sa, sb))
        pa = set(greedy_select(phi_a[cand], phi_a[labeled], 50))
        pb = set(greedy_select(phi_b[cand], phi_b[labeled], 50))
        out["picks"].append(len(pa & pb) / 50)
    out["spearman"], out["picks"] = float(np.mean(out["spearman"])), float(np.mean(out["picks"]))
    return out


def quality(world, adapter, args) -> list[dict]:

    from activedpo_core.checkpoint import load_model
    from activedpo_server.features import GradientFeaturizer
    from activedpo_server.projection import make_projection
    from activedpo_trainer.generation import GenerationSettings, generate

    prompts = world.task.train_prompts()[: args.prompts]
    sft = load_model(world.sft_dir)
    groups = generate(sft.model, sft.tokenizer, prompts, 3, GenerationSettings(), seed=0)
    ps = [p for p, g in zip(prompts, groups, strict=True) for _ in g]
    rs = [r for g in groups for r in g]
    pairs = np.array([(3 * i + a, 3 * i + b) for i in range(len(prompts)) for a, b in ((0, 1), (0, 2), (1, 2))])
    f = GradientFeaturizer(adapter, proj_dim=args.dims[0], batch_size=16, projection="sjlt")
    t0 = time.perf_counter()
    grads = f.per_example_gradients(ps, rs)  # [n, D] exact
    print(f"exact gradients of {len(rs)} responses: {time.perf_counter() - t0:.0f} s", flush=True)
    unit = grads / grads.norm(dim=1, keepdim=True).clamp_min(1e-30)
    resp_gram = (unit @ unit.T).double().numpy()
    inc = np.zeros((len(pairs), len(rs)))
    inc[np.arange(len(pairs)), pairs[:, 0]], inc[np.arange(len(pairs)), pairs[:, 1]] = 1.0, -1.0
    exact = embed(inc @ resp_gram @ inc.T)  # [pairs, rank]: exact inner products of the pair features
    del unit
    rng = np.random.default_rng(0)
    draws = []
    for _ in range(3):
        order = rng.permutation(len(pairs))
        draws.append((order[:150], order[150:]))
    sample = rng.choice(len(pairs), size=min(500, len(pairs)), replace=False)
    rows = []
    for d in args.dims:
        feats = {}
        kinds = [(k, s) for k, s in KINDS if k in args.kinds]
        for kind, seed in kinds:
            proj = make_projection(kind, f.lora_matrices(), d, seed=seed)
            t0 = time.perf_counter()
            x = proj.project(grads)
            x = (x / x.norm(dim=1, keepdim=True).clamp_min(1e-30)).double().numpy()
            feats[(kind, seed)] = x[pairs[:, 0]] - x[pairs[:, 1]]
            print(f"d={d} {kind} seed {seed}: projected in {time.perf_counter() - t0:.0f} s", flush=True)
        for kind, seed in kinds:
            rows.append({"d": d, "kind": kind, "seed": seed, **agreement(feats[(kind, seed)], exact, draws, sample)})
            print(rows[-1], flush=True)
        if "dense" in args.kinds:
            yard = agreement(feats[("dense", 0)], feats[("dense", 1)], draws, sample)
            rows.append({"d": d, "kind": "yardstick: dense seed 0 vs seed 1", "seed": None, **yard})
            print(rows[-1], flush=True)
    return rows


def speed(world, adapter, args) -> list[dict]:
    from activedpo_core.checkpoint import load_model
    from activedpo_core.sequences import encode_pairs, token_logprobs
    from activedpo_server.features import GradientFeaturizer, LoraSpec
    from activedpo_trainer.generation import GenerationSettings, generate

    prompts = world.task.train_prompts()[: args.speed_responses]
    sft = load_model(world.sft_dir)
    responses = [r[0] for r in generate(sft.model, sft.tokenizer, prompts, 1, GenerationSettings(), seed=0)]
    rows = []
    for name, ckpt in (("fresh adapter (round one, B = 0)", world.sft_dir), ("r=128, A and B non-zero", adapter)):
        for d in args.dims:
            for kind in [k for k in ("sjlt", "kron", "dense") if k in args.kinds]:
                f = GradientFeaturizer(ckpt, proj_dim=d, batch_size=16, projection=kind, lora=LoraSpec())
                bs = 16
                batches = [(prompts[s : s + bs], responses[s : s + bs]) for s in range(0, len(prompts), bs)]

                def floor(f=f, batches=batches):
                    for p, r in batches:
                        ids, att, lab = encode_pairs(f.tokenizer, p, r)
                        f.model.zero_grad(set_to_none=True)
                        token_logprobs(f.model, ids, att, lab).sum().backward()

                def run(f=f):
                    f.featurize(prompts, responses)

                floor(), run()  # warm-up
                floors, runs = [], []
                for _ in range(args.repeats if kind != "dense" else 1):  # floor and run alternate
                    floors.append(median_seconds(floor, 1))
                    runs.append(median_seconds(run, 1))
                f.model.zero_grad(set_to_none=True)
                t_floor, t_run = float(np.median(floors)), float(np.median(runs))
                n = len(prompts)
                rows.append({"adapter": name, "d": d, "kind": kind, "floor_ms": 1e3 * t_floor / n,
                             "ms": 1e3 * t_run / n, "ratio": t_run / t_floor})  # fmt: skip
                print(rows[-1], flush=True)
    return rows


LLAMA_7B = {"q,k,v,o": [(4096, 4096)] * 4, "all seven": [(4096, 4096)] * 4 + [(4096, 11008)] * 2 + [(11008, 4096)]}


def seven_b(args) -> list[dict]:
    """Per-response projection cost on a 7B Llama's LoRA shapes, from synthetic factors of 512 tokens."""
    import torch

    from activedpo_server.projection import LoraMatrix, make_projection

    r, tokens, layers, b = 128, 512, 32, args.b7
    peak = matmul_gflops(2)
    rows = []
    for targets, shapes in LLAMA_7B.items():
        matrices, offset = [], 0
        for n_in, n_out in shapes:  # one layer's LoRA matrices; the model repeats them `layers` times
            matrices += [LoraMatrix(offset, r, n_in, 0), LoraMatrix(offset + r * n_in, n_out, r, 1)]
            offset += r * (n_in + n_out)
        d_total = offset * layers
        torch.manual_seed(0)
        factors = []  # per matrix: (left [b, T, rows], right [b, T, cols]) as the featurizer's hooks capture them
        for m in matrices:
            factors.append((torch.randn(b, tokens, m.rows), torch.randn(b, tokens, m.cols)))

        def capture(factors=factors):  # forming every per-example gradient: what the dense path does first
            for left, right in factors:
                torch.bmm(left.transpose(1, 2), right)

        t_capture = median_seconds(capture, args.repeats) * layers / b
        for d in args.dims:
            for kind in [k for k in ("sjlt", "kron") if k in args.kinds]:
                # one layer's matrices stand for all `layers`: the model's projection holds `layers` times the
                # state; kron splits d over every matrix of the model, so one layer gets d / layers of it
                share = d if kind == "sjlt" else max(len(matrices), d // layers)
                proj = make_projection(kind, matrices, share, seed=0)
                acc = proj.new(b)
                if kind == "sjlt":  # at 512 tokens sjlt forms each G (the capture), then hashes it: time the hashing
                    formed = [torch.bmm(left.transpose(1, 2), right) for left, right in factors]

                    def apply(proj=proj, acc=acc, formed=formed):
                        for k, g in enumerate(formed):
                            proj._add_full(acc, k, g)

                else:  # kron projects the factors: no capture at all

                    def apply(proj=proj, acc=acc, factors=factors):
                        for k, (left, right) in enumerate(factors):
                            proj.add(acc, k, left, right)

                t = median_seconds(apply, args.repeats) * layers / b
                state = proj.state_bytes() * layers / 2**20
                rows.append({"targets": targets, "D": d_total, "d": d, "kind": kind, "ms": 1e3 * t,
                             "capture_ms": 1e3 * t_capture, "state_mib": state})  # fmt: skip
                print(rows[-1], flush=True)
            rows.append({"targets": targets, "D": d_total, "d": d, "kind": "dense (estimated)",
                         "ms": 1e3 * 2 * d_total * d / (peak * 1e9), "capture_ms": 1e3 * t_capture,
                         "state_mib": d_total * d * 4 / 2**20})  # fmt: skip
            print(rows[-1], flush=True)
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--prompts", type=int, default=667)
    ap.add_argument("--dims", type=int, nargs="+", default=[2048, 8192])
    ap.add_argument("--speed-responses", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--b7", type=int, default=2, help="examples per batch in the 7B-shaped timing")
    ap.add_argument("--kinds", nargs="+", default=["sjlt", "kron", "dense"], help="projections to measure")
    ap.add_argument("--skip", nargs="*", default=[], choices=["quality", "speed", "7b"])
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/projection.md"))
    args = ap.parse_args()

    from activedpo_core.progress import quiet_libraries
    from activedpo_trainer.toyworld import ToyWorldConfig, build_toyworld

    quiet_libraries()
    world = build_toyworld(ToyWorldConfig.preset("default"))
    lines = [*header("Projection kinds: quality against exact gradients, speed, 7B-shaped cost"), ""]
    with tempfile.TemporaryDirectory() as tmp:
        adapter = random_adapter(world, Path(tmp))
        if "quality" not in args.skip:
            q = quality(world, adapter, args)
            lines += [
                f"**Quality** ({args.prompts * 3:,} responses of the default toy π_ref, exact LoRA gradients D = "
                "557,056 of an r = 128 adapter with A and B non-zero; pair features; means over 3 draws of 150 "
                "labeled pairs). Lower inner-product error is better; higher Spearman and pick overlap are better. "
                "A kind passes where it is at least as good as the yardstick on all three.",
                "",
                "| d | projection | inner-product rel. error | Spearman of φᵀV⁻¹φ | shared greedy picks (of 50) |",
                "|---|---|---|---|---|",
            ]
            for r in q:
                name = r["kind"] + (f" (seed {r['seed']})" if r["kind"] == "dense" else "")
                lines.append(f"| {r['d']} | {name} | {r['inner']:.4f} | {r['spearman']:.4f} | {r['picks']:.2f} |")
            lines.append("")
        if "speed" not in args.skip:
            s = speed(world, adapter, args)
            lines += [
                f"**Speed** (featurize end to end, {args.speed_responses} responses of the default toy π_ref, batch "
                f"16; medians of {args.repeats} alternating runs, the dense kind 1). The floor is a plain batched "
                "forward + backward into the LoRA parameters.",
                "",
                "| adapter | d | projection | floor ms/response | featurize ms/response | × floor |",
                "|---|---|---|---|---|---|",
            ]
            lines += [f"| {r['adapter']} | {r['d']} | {r['kind']} | {r['floor_ms']:.2f} | {r['ms']:.2f} | "
                      f"{r['ratio']:.2f} |" for r in s]  # fmt: skip
            lines.append("")
        if "7b" not in args.skip:
            b = seven_b(args)
            lines += [
                "**7B-shaped** (a 7B Llama's LoRA shapes, r = 128, 32 layers, synthetic factors of 512 tokens; one "
                "layer timed, times its count; per response). Capture = forming the per-example LoRA gradients from "
                "the same factors, which dense needs first and sjlt does at this length (it then hashes the formed "
                "gradient: its ms/response is that hashing); kron works on the factors and needs no capture.",
                "",
                "| LoRA targets | D | d | projection | projection state | ms/response | capture ms/response |",
                "|---|---|---|---|---|---|---|",
            ]
            lines += [f"| {r['targets']} | {r['D'] / 1e6:.0f} M | {r['d']} | {r['kind']} | "
                      f"{r['state_mib']:,.1f} MiB | {r['ms']:,.1f} | {r['capture_ms']:,.1f} |" for r in b]  # fmt: skip
            lines.append("")
    print("\n".join(lines))
    write(args.out, lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())
