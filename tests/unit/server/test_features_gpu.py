"""The featurizer on CUDA gives the CPU's features (skipped without CUDA)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from activedpo_server.features import GradientFeaturizer, LoraSpec

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


@pytest.mark.parametrize("fresh", [True, False])
def test_gpu_features_match_cpu(tiny_world, random_adapter, fresh):
    ckpt = tiny_world.sft_dir if fresh else random_adapter
    prompts = tiny_world.task.heldout_prompts()[:6]
    responses = [" wave tide bright", " sand dull", " the", " moss fern oak pine", " calm", " bright bright"]
    kw = dict(proj_dim=1024, lora=LoraSpec(r=16, alpha=32), batch_size=4)
    cpu = GradientFeaturizer(ckpt, device="cpu", **kw).featurize(prompts, responses)
    gpu_f = GradientFeaturizer(ckpt, device="cuda", **kw)
    assert gpu_f.device.type == "cuda" and gpu_f.projector.device.type == "cuda"
    gpu = gpu_f.featurize(prompts, responses)
    assert (np.linalg.norm(gpu - cpu, axis=1) / np.linalg.norm(cpu, axis=1)).max() <= 1e-4
