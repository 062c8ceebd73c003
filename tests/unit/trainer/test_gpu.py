"""The CUDA path: the same checkpoint scores the same on the GPU as on the CPU (skipped without CUDA)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from activedpo_core.checkpoint import load_model, resolve_device
from activedpo_core.sequences import sequence_logprobs

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


def test_default_device_is_cuda_when_present():
    assert resolve_device() == "cuda"


def test_gpu_logprobs_match_cpu(tiny_world, random_adapter):
    prompts = tiny_world.task.heldout_prompts()[:8]
    responses = [" wave tide bright", " sand dull", " the", " moss fern oak pine"] * 2
    cpu = load_model(random_adapter, device="cpu")
    gpu = load_model(random_adapter, device="cuda")
    assert next(gpu.model.parameters()).is_cuda
    np.testing.assert_allclose(
        sequence_logprobs(gpu.model, gpu.tokenizer, prompts, responses),
        sequence_logprobs(cpu.model, cpu.tokenizer, prompts, responses),
        rtol=1e-4,
        atol=1e-4,
    )
