"""Checkpoint manifests and loading: base + adapter reproduces the model exactly; bad paths say which."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from activedpo_core.checkpoint import CheckpointError, CheckpointManifest, load_model, resolve_checkpoint
from activedpo_core.sequences import sequence_logprobs


def test_manifest_round_trip_and_relative_paths(tmp_path):
    (tmp_path / "adapter").mkdir()
    m = CheckpointManifest.new(base="org/model", adapter="adapter", parent_id="p1", id="c1")
    m.save(tmp_path)
    back = CheckpointManifest.load(tmp_path)
    assert (back.id, back.base, back.parent_id, back.created) == ("c1", "org/model", "p1", m.created)
    assert back.adapter == str(tmp_path / "adapter")  # relative to the manifest's directory
    assert not (tmp_path / "manifest.json.tmp").exists()


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{oops", "corrupt checkpoint manifest"),
        ("[1, 2]", "expected a JSON object"),
        (json.dumps({"base": "x"}), "lacks id"),
        (json.dumps({"id": "a", "base": "x", "adaptor": "typo"}), r"unknown keys \['adaptor'\]"),
    ],
)
def test_bad_manifests_are_rejected_with_the_path(tmp_path, content, message):
    (tmp_path / "manifest.json").write_text(content)
    with pytest.raises(CheckpointError, match=message) as e:
        CheckpointManifest.load(tmp_path)
    assert str(tmp_path) in str(e.value)


def test_missing_paths_are_named(tmp_path, tiny_world):
    missing = tmp_path / "no-such-model"
    with pytest.raises(CheckpointError, match=f"base model path does not exist: {missing}"):
        load_model(str(missing))
    with pytest.raises(CheckpointError, match=f"checkpoint manifest not found: {missing}.json"):
        load_model(f"{missing}.json")
    with pytest.raises(CheckpointError, match=f"adapter directory does not exist: {missing}"):
        load_model(tiny_world.sft_dir, adapter=missing)
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match=r"has no config\.json"):
        load_model(tmp_path / "empty")
    with pytest.raises(CheckpointError, match=r"has no adapter_config\.json"):
        load_model(tiny_world.sft_dir, adapter=tmp_path / "empty")
    with pytest.raises(CheckpointError, match="unsupported dtype 'float8'"):
        load_model(tiny_world.sft_dir, dtype="float8")


def test_base_plus_adapter_reproduces_the_saved_models_logprobs_exactly(tiny_world, random_adapter):
    from peft import PeftModel

    task = tiny_world.task
    prompts = task.heldout_prompts()[:6]
    responses = [" wave tide bright", " sand dull", " the", " moss fern oak pine", " a a a", " calm"]

    # the model as it was trained in memory: base + the same adapter weights
    base = load_model(tiny_world.sft_dir)
    in_memory = PeftModel.from_pretrained(base.model, random_adapter.adapter).eval()
    expected = sequence_logprobs(in_memory, base.tokenizer, prompts, responses)

    loaded = load_model(random_adapter)
    got = sequence_logprobs(loaded.model, loaded.tokenizer, prompts, responses)
    np.testing.assert_array_equal(got, expected)

    # and the adapter matters: the base alone scores differently
    plain = load_model(tiny_world.sft_dir)
    assert not np.allclose(sequence_logprobs(plain.model, plain.tokenizer, prompts, responses), got)


def test_base_path_plus_adapter_path_equals_the_manifest(tiny_world, random_adapter):
    a = load_model(random_adapter)
    b = load_model(str(tiny_world.sft_dir), adapter=random_adapter.adapter)
    sa, sb = a.model.state_dict(), b.model.state_dict()
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_an_adapter_for_another_model_is_rejected(tmp_path, tiny_world):
    from peft import LoraConfig, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    other = LlamaForCausalLM(
        LlamaConfig(vocab_size=50, hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2)
    )
    get_peft_model(other, LoraConfig(r=2, target_modules=["q_proj"])).save_pretrained(tmp_path / "adapter")
    with pytest.raises(CheckpointError, match="does not fit base model"):
        load_model(tiny_world.sft_dir, adapter=tmp_path / "adapter")


def test_dtype_is_explicit(tiny_world):
    loaded = load_model(tiny_world.sft_dir, dtype="bfloat16")
    assert next(loaded.model.parameters()).dtype == torch.bfloat16
    assert next(load_model(tiny_world.sft_dir).model.parameters()).dtype == torch.float32


def test_resolve_checkpoint_accepts_bare_bases(tiny_world):
    m = resolve_checkpoint(str(tiny_world.sft_dir))
    assert m.id == tiny_world.sft_checkpoint.id  # the directory holds a manifest
    bare = resolve_checkpoint("org/some-model")  # a Hugging Face id: not checked for existence
    assert bare.base == "org/some-model" and bare.adapter is None and bare.id == "base:org/some-model"
