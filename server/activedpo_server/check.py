"""A host check, end to end on the toy world: ``python -m activedpo_server.check`` (``deploy/gpu-check.sh``).

Builds (or reuses) the toy world, generates a pool with π_ref, featurizes it (batched per-example
LoRA gradients, projected), checks those features against the one-example-at-a-time autograd
reference and times both, selects a batch with greedy V⁻¹, writes and reads the features through
the FAISS store, and trains one DPO round on oracle labels. It prints one line per step with its
time, then a JSON summary. Sized to take a few minutes on a GPU host; ``--device cpu --preset
tiny`` runs it anywhere in seconds (CI does, so the script cannot rot).
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Annotated

import typer

from activedpo_core.lora import LoraSpec
from activedpo_core.settings import Dtype, ProjectionSpec, resolve_dtype
from activedpo_trainer.toyworld import Preset

CHECK_BUDGET = 50  # pairs the check selects: a round's worth, to time greedy V⁻¹ at a realistic size


def host_check(
    device: Annotated[str | None, typer.Option(help="cuda or cpu \\[default: cuda when present].")] = None,
    dtype: Annotated[Dtype, typer.Option(help="Model weights (auto: bfloat16 on a GPU that has it).")] = Dtype.auto,
    preset: Annotated[Preset, typer.Option(help="The toy world: default, or tiny (seconds on a CPU).")] = (
        Preset.default),
    responses: Annotated[int, typer.Option(help="Pool size in responses (2 per prompt).", min=2)] = 1024,
    reference: Annotated[int, typer.Option(
        help="Responses featurized one at a time, for the speed-up and the agreement.", min=1)] = 64,
    proj_dim: Annotated[int, typer.Option(help="Projection dimension d.", min=1)] = ProjectionSpec.dim,
    lora_r: Annotated[int, typer.Option(help="LoRA rank (α = 4r).", min=1)] = LoraSpec.r,
    budget: Annotated[int, typer.Option(help="Pairs to select.", min=1)] = CHECK_BUDGET,
) -> None:  # fmt: skip
    """Check a selection host end to end on the toy world: featurize (checked against one-at-a-time autograd and
    timed), select, write and read the FAISS store, train one DPO round; one line per step, then a JSON summary.
    Exit 1 when the batched features disagree with the reference."""
    import numpy as np
    import torch

    from activedpo_core.checkpoint import load_model, resolve_device
    from activedpo_core.progress import quiet_libraries
    from activedpo_server.features import GradientFeaturizer, pair_features
    from activedpo_server.featurestore import FeatureStore
    from activedpo_server.selection import greedy_select_scored
    from activedpo_trainer.dpo import DPOSettings, train_dpo
    from activedpo_trainer.generation import GenerationSettings, generate
    from activedpo_trainer.tasks import label_pairs
    from activedpo_trainer.toyworld import ToyWorldConfig, build_toyworld

    quiet_libraries()
    device = resolve_device(device)
    dtype = resolve_dtype(dtype) if device.startswith("cuda") or dtype != Dtype.auto else "float32"
    gpu = torch.cuda.get_device_name() if device.startswith("cuda") else "none"
    summary: dict = {"device": device, "gpu": gpu, "dtype": dtype, "proj_dim": proj_dim}
    print(f"device {device} ({gpu}), weights {dtype}, d = {proj_dim}", flush=True)

    def step(name: str, key: str, fn):
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        t = time.perf_counter()
        out = fn()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
        summary[f"{key}_s"] = round(time.perf_counter() - t, 3)
        print(f"{name:<28} {summary[f'{key}_s']:8.2f} s", flush=True)
        return out

    world = step("toy world", "world", lambda: build_toyworld(ToyWorldConfig.preset(preset.value)))
    prompts = world.task.train_prompts()[: max(1, responses // 2)]
    sft = load_model(world.sft_dir, device=device)
    settings = GenerationSettings(max_new_tokens=world.config.max_new_tokens)

    def sample():
        return generate(sft.model, sft.tokenizer, prompts, 2, settings, seed=0)

    groups = step(f"generate {2 * len(prompts)} responses", "generate", sample)
    groups = [[r if r.strip() else " a" for r in g] for g in groups]
    sft = None  # free the generation copy of the model
    resp_prompts = [p for p in prompts for _ in range(2)]
    responses = [r for g in groups for r in g]
    n = len(responses)

    f = GradientFeaturizer(world.sft_dir, proj_dim=proj_dim, device=device, dtype=dtype,
                           lora=LoraSpec(r=lora_r, alpha=4 * lora_r))  # fmt: skip
    step("featurize, first pass", "featurize_first", lambda: f.featurize(resp_prompts, responses))  # + kernels, blocks
    feats = step("featurize, steady state", "featurize", lambda: f.featurize(resp_prompts, responses))
    summary["featurize_responses_per_s"] = round(n / summary["featurize_s"], 1)
    m = min(reference, n)
    fast = f.featurize(resp_prompts[:m], responses[:m])
    step(f"featurize {m}, batched", "subset", lambda: f.featurize(resp_prompts[:m], responses[:m]))
    ref = step(f"featurize {m}, one at a time", "reference",
               lambda: f.featurize(resp_prompts[:m], responses[:m], reference=True))  # fmt: skip
    err = float((np.linalg.norm(fast - ref, axis=1) / np.linalg.norm(ref, axis=1)).max())
    summary["speedup_over_reference"] = round(summary["reference_s"] / summary["subset_s"], 2)
    summary["max_relative_feature_error"] = err
    print(f"featurizer speed-up over one-at-a-time autograd: {summary['speedup_over_reference']:.1f}× "
          f"(features agree to {err:.1e} relative)", flush=True)  # fmt: skip

    pairs = np.arange(n).reshape(-1, 2)
    cand = pair_features(feats, pairs)
    picks, _ = step(
        f"select {budget} of {len(cand)} pairs",
        "select",
        lambda: greedy_select_scored(cand, None, budget, 1.0),
    )

    with tempfile.TemporaryDirectory() as tmp:
        store = FeatureStore(Path(tmp) / "features", f.feature_key, proj_dim)
        step("FAISS add + save", "faiss_write", lambda: (store.add(np.arange(n), feats), store.save()))
        back = step("FAISS load + read", "faiss_read", lambda: FeatureStore(Path(tmp) / "features", f.feature_key,
                                                               proj_dim).get(np.arange(n)))  # fmt: skip
        assert np.array_equal(back, feats)
        chosen = [prompts[i] for i in picks]
        rows = label_pairs(world.task, chosen, [tuple(groups[i]) for i in picks], np.random.default_rng(0))
        step(
            f"DPO, {len(rows)} pairs, 1 epoch",
            "dpo",
            lambda: train_dpo(world.sft_checkpoint, rows, Path(tmp) / "dpo", DPOSettings(epochs=1.0, device=device)),
        )
    summary["faiss_gpu"] = _faiss_gpus()
    print(json.dumps(summary))
    ok = err < (1e-3 if dtype == "float32" else 5e-2)  # half-precision weights: batching changes roundings
    if not ok:
        print(f"FAILED: batched features differ from the reference by {err:.1e}", file=sys.stderr)
        raise typer.Exit(1)


def _faiss_gpus() -> int:
    import faiss

    return faiss.get_num_gpus() if hasattr(faiss, "StandardGpuResources") else 0


app = typer.Typer(add_completion=False)
app.command()(host_check)


def main(argv: list[str] | None = None) -> int:
    """Run the check with ``argv`` (the command line's when None); its exit status."""
    try:
        typer.main.get_command(app).main(args=argv if argv is not None else sys.argv[1:], prog_name="gpu-check")
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else 0 if e.code is None else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
