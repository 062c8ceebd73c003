"""deploy/gpu-check.sh runs end to end: on the CPU here (tiny sizes), on the GPU where there is one."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[2] / "deploy" / "gpu-check.sh"


def check(cache_dir, *args) -> dict:
    env = os.environ | {"PYTHON": sys.executable, "ACTIVEDPO_CACHE": str(cache_dir)}
    out = subprocess.run(["bash", str(SCRIPT), "--preset", "tiny", "--responses", "48", "--reference", "16",
                          "--budget", "8", "--proj-dim", "256", "--lora-r", "8", *args],
                         capture_output=True, text=True, env=env, timeout=600)  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr
    assert "featurizer speed-up over one-at-a-time autograd" in out.stdout
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_the_host_check_runs_on_the_cpu(tiny_world, cache_dir):
    s = check(cache_dir, "--device", "cpu")
    assert s["device"] == "cpu" and s["dtype"] == "float32" and s["proj_dim"] == 256
    assert s["max_relative_feature_error"] < 1e-4 and s["faiss_gpu"] == 0  # its timings are reported, not tested
    assert {"speedup_over_reference", "featurize_responses_per_s", "dpo_s"} <= set(s)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_the_host_check_runs_on_the_gpu(tiny_world, cache_dir):
    s = check(cache_dir)
    assert s["device"].startswith("cuda") and s["dtype"] == "bfloat16"
    assert s["max_relative_feature_error"] < 5e-2  # bf16 weights
