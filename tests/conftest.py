"""Shared fixtures: the tiny toy world (built once per session, in seconds) and checkpoints on it.

Nothing is downloaded: every model is built here, from the toy world's own corpus.
"""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")


@pytest.fixture(scope="session", autouse=True)
def _quiet():
    from activedpo_trainer.progress import quiet_libraries

    quiet_libraries()


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("cache")


@pytest.fixture(scope="session")
def tiny_world(cache_dir):
    from activedpo_trainer.toyworld import ToyWorldConfig, build_toyworld

    return build_toyworld(ToyWorldConfig.preset("tiny"), cache_dir=cache_dir)


@pytest.fixture(scope="session")
def random_adapter(tiny_world, tmp_path_factory):
    """A checkpoint on the tiny world with a LoRA adapter whose A and B are both random (non-zero)."""
    import torch
    from peft import LoraConfig, get_peft_model

    from activedpo_trainer.checkpoint import CheckpointManifest, load_model

    out = tmp_path_factory.mktemp("random_adapter")
    torch.manual_seed(1)
    base = load_model(tiny_world.sft_dir).model
    cfg = LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", init_lora_weights=False, task_type="CAUSAL_LM")
    peft_model = get_peft_model(base, cfg)
    peft_model.save_pretrained(out / "adapter")
    manifest = CheckpointManifest.new(
        base=str(tiny_world.sft_dir), adapter=str(out / "adapter"), parent_id=tiny_world.sft_checkpoint.id
    )
    manifest.save(out)
    return manifest
