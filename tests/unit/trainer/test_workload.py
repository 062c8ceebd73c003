"""Workloads: a user's model and prompt file (held-out split, description, reopening) and the toy world."""

from __future__ import annotations

import json

import pytest

from activedpo_core.checkpoint import CheckpointError
from activedpo_trainer.generation import GenerationSettings
from activedpo_trainer.workload import ModelSpec, ModelWorkload, ToyWorkload, open_workload


@pytest.fixture
def prompt_file(tmp_path):
    path = tmp_path / "prompts.jsonl"
    path.write_text("".join(json.dumps({"prompt": f"tell me about the sea {i}"}) + "\n" for i in range(20)))
    return path


def test_held_out_prompts_are_split_off_and_never_trained_on(gpt2_dir, prompt_file):
    w = ModelWorkload(ModelSpec(str(gpt2_dir), str(prompt_file), heldout=5))
    train, held = w.train_prompts(), w.heldout_prompts()
    assert len(train) == 15 and len(held) == 5 and not set(train) & set(held)
    assert all(p.startswith("<|user|> tell me about the sea") and p.endswith("<|assistant|>") for p in train)
    again = ModelWorkload(ModelSpec(str(gpt2_dir), str(prompt_file), heldout=5))
    assert again.heldout_prompts() == held  # the same split every time: runs compare on the same prompts
    other = ModelWorkload(ModelSpec(str(gpt2_dir), str(prompt_file), heldout=5, split_seed=1))
    assert other.heldout_prompts() != held
    assert ModelWorkload(ModelSpec(str(gpt2_dir), str(prompt_file))).heldout_prompts() == []
    with pytest.raises(ValueError, match="has 20 prompts; holding out 20 for evaluation leaves none to train on"):
        ModelWorkload(ModelSpec(str(gpt2_dir), str(prompt_file), heldout=20)).train_prompts()


def test_description_reopens_the_same_workload(gpt2_dir, prompt_file, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    w = ModelWorkload(ModelSpec(str(gpt2_dir), "prompts.jsonl",
                                chat_template="off", heldout=3),
                      GenerationSettings(temperature=0.7, top_p=0.9, max_new_tokens=12), "bfloat16")  # fmt: skip
    d = w.describe()
    assert d["prompt_file"] == str(prompt_file.resolve())  # relative paths are made absolute
    assert d["generation"] == {"temperature": 0.7, "top_p": 0.9, "max_new_tokens": 12} and d["dtype"] == "bfloat16"
    back = open_workload(json.loads(json.dumps(d)))
    assert back.describe() == d and back.train_prompts() == w.train_prompts()
    assert back.train_prompts()[0].startswith("tell me")  # chat template off: the prompt as written
    assert back.oracle is None and back.base.id == f"base:{gpt2_dir.resolve()}"


def test_a_checkpoint_with_an_adapter_is_not_a_base_model(random_adapter, prompt_file, tmp_path):
    random_adapter.save(tmp_path / "ckpt")
    with pytest.raises(CheckpointError, match="is a checkpoint with a LoRA adapter; pass its base model"):
        ModelWorkload(ModelSpec(str(tmp_path / "ckpt"), str(prompt_file)))


def test_the_toy_world_is_a_workload_with_an_oracle(tiny_world):
    w = ToyWorkload(tiny_world)
    assert w.oracle is tiny_world.task and w.base.id == tiny_world.sft_checkpoint.id
    assert w.generation.max_new_tokens == tiny_world.config.max_new_tokens
    assert w.heldout_prompts() == tiny_world.task.heldout_prompts()
    assert open_workload(w.describe()).describe() == w.describe()
