"""DPO rounds through TRL: every LoRA parameter trains, the base never moves, pi_ref is the base."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from activedpo_core.checkpoint import CheckpointError, CheckpointManifest, load_model
from activedpo_trainer.dpo import DPOSettings, build_dpo_trainer, train_dpo
from activedpo_trainer.generation import GenerationSettings, generate
from activedpo_trainer.tasks import label_pairs

FAST = DPOSettings(epochs=2, batch_size=4, lr=1e-3, lora_r=4, lora_alpha=8)


@pytest.fixture(scope="module")
def rows(tiny_world):
    sft = load_model(tiny_world.sft_dir)
    prompts = tiny_world.task.train_prompts()[:16]
    out = generate(sft.model, sft.tokenizer, prompts, 2, GenerationSettings(max_new_tokens=12), seed=3)
    return label_pairs(tiny_world.task, prompts, [(g[0], g[1]) for g in out], deterministic=True)


def _base_params(model) -> dict[str, torch.Tensor]:
    """Base-model weights of a (possibly PEFT-wrapped) model, under their plain names."""
    out = {}
    for name, p in model.named_parameters():
        if "lora_" in name:
            continue
        plain = name.replace("base_model.model.", "").replace(".base_layer", "")
        out[plain] = p.detach().clone()
    return out


def _completion_logps(model, batch) -> torch.Tensor:
    ids, att, comp = batch["input_ids"], batch["attention_mask"], batch["completion_mask"]
    with torch.no_grad():
        logits = model(input_ids=ids, attention_mask=att).logits[:, :-1].float()
    logp = torch.log_softmax(logits, -1).gather(-1, ids[:, 1:, None]).squeeze(-1)
    return (logp * comp[:, 1:]).sum(1)


def test_fresh_round_trains_the_adapter_and_leaves_the_base(tiny_world, rows, tmp_path):
    base = tiny_world.sft_checkpoint
    seen = []
    m = train_dpo(base, rows, tmp_path / "r1", FAST, progress=lambda d, t: seen.append((d, t)))
    assert seen and seen[-1][0] == seen[-1][1] == 8  # 16 pairs / 4 per step × 2 epochs
    assert CheckpointManifest.load(tmp_path / "r1") == m
    assert m.parent_id == base.id and m.adapter == str((tmp_path / "r1" / "adapter").resolve())
    trained = load_model(m)
    lora_b = {k: v for k, v in trained.model.named_parameters() if "lora_B" in k}
    assert lora_b and all(v.abs().sum() > 0 for v in lora_b.values())  # B starts at 0; every one moved


def test_training_moves_every_lora_weight_and_no_base_weight_in_memory(tiny_world, rows, random_adapter, tmp_path):
    # the weights the optimizer holds, before and after trainer.train(): not two reads of one file
    trainer = build_dpo_trainer(tiny_world.sft_checkpoint, rows, tmp_path / "work", FAST, parent=random_adapter)
    base_before = _base_params(trainer.model)
    lora_before = {k: p.detach().clone() for k, p in trainer.model.named_parameters() if "lora_" in k}
    trainer.train()
    base_after = _base_params(trainer.model)
    lora_after = {k: p.detach() for k, p in trainer.model.named_parameters() if "lora_" in k}
    assert base_before.keys() == base_after.keys() and len(base_before) > 0
    assert all(torch.equal(base_before[k], base_after[k]) for k in base_before)
    assert lora_before.keys() == lora_after.keys() and len(lora_before) > 0
    assert all(not torch.equal(lora_before[k], lora_after[k]) for k in lora_before)


def test_continue_round_uses_the_base_as_reference_not_the_parent(tiny_world, rows, random_adapter, tmp_path):
    trainer = build_dpo_trainer(tiny_world.sft_checkpoint, rows, tmp_path / "work", FAST, parent=random_adapter)
    model = trainer.model
    assert "ref" not in model.peft_config  # TRL's copy of the parent adapter is gone
    assert model.active_adapter == "default"

    batch = next(iter(trainer.get_train_dataloader()))
    ref_chosen, ref_rejected = trainer.compute_ref_log_probs(model, batch)
    ref = torch.cat([ref_chosen, ref_rejected])
    base_logps = _completion_logps(load_model(tiny_world.sft_dir).model, batch)
    torch.testing.assert_close(ref, base_logps, rtol=1e-5, atol=1e-5)
    policy_logps = _completion_logps(model, batch)  # the parent adapter is active for the policy
    assert not torch.allclose(policy_logps, base_logps, atol=1e-3)


def test_continue_round_changes_every_lora_parameter(tiny_world, rows, random_adapter, tmp_path):
    m = train_dpo(tiny_world.sft_checkpoint, rows, tmp_path / "r2", FAST, parent=random_adapter, mode="continue")
    assert m.parent_id == random_adapter.id
    before = load_file(f"{random_adapter.adapter}/adapter_model.safetensors")
    after = load_file(f"{m.adapter}/adapter_model.safetensors")
    assert before.keys() == after.keys() and len(before) > 0
    unchanged = [k for k in before if torch.equal(before[k], after[k])]
    assert unchanged == []
    trained = _base_params(load_model(m).model)
    fresh = _base_params(load_model(tiny_world.sft_dir).model)
    assert all(torch.equal(fresh[k], trained[k]) for k in fresh)


def test_retrain_mode_starts_from_a_fresh_adapter(tiny_world, rows, random_adapter, tmp_path):
    trainer = build_dpo_trainer(tiny_world.sft_checkpoint, rows, tmp_path, FAST, parent=random_adapter, mode="retrain")
    b = [p for n, p in trainer.model.named_parameters() if "lora_B" in n]
    assert b and all(torch.count_nonzero(p) == 0 for p in b)
    assert trainer.model.peft_config["default"].r == FAST.lora_r


def test_bad_inputs_are_rejected(tiny_world, rows, random_adapter, tmp_path):
    base = tiny_world.sft_checkpoint
    with pytest.raises(ValueError, match="unknown DPO mode 'resume'"):
        build_dpo_trainer(base, rows, tmp_path, FAST, mode="resume")
    with pytest.raises(CheckpointError, match="must be a base model"):
        build_dpo_trainer(random_adapter, rows, tmp_path, FAST)
    other = CheckpointManifest.new(base="org/other", adapter=None, parent_id=None)
    with pytest.raises(CheckpointError, match="is on base org/other"):
        build_dpo_trainer(base, rows, tmp_path, FAST, parent=CheckpointManifest.new("org/other", "x", None))
    assert other.adapter is None
    with pytest.raises(ValueError, match="no labeled pairs"):
        build_dpo_trainer(base, [], tmp_path, FAST)
    with pytest.raises(ValueError, match="pair 1 lacks string field"):
        build_dpo_trainer(base, [rows[0], {"prompt": "p", "chosen": "c"}], tmp_path, FAST)
    with pytest.raises(ValueError, match="must be positive"):
        DPOSettings(beta=0)


def test_training_moves_the_implicit_reward_margin(tiny_world, rows, tmp_path):
    """After DPO the policy prefers chosen over rejected more than pi_ref does, on the training pairs."""
    from activedpo_core.sequences import sequence_logprobs

    m = train_dpo(
        tiny_world.sft_checkpoint,
        rows,
        tmp_path / "r3",
        DPOSettings(epochs=10, batch_size=4, lr=3e-3, lora_r=4, lora_alpha=8),
    )
    policy, ref = load_model(m), load_model(tiny_world.sft_dir)
    prompts = [r["prompt"] for r in rows]

    def margin(model, tok):
        c = sequence_logprobs(model, tok, prompts, [r["chosen"] for r in rows])
        r = sequence_logprobs(model, tok, prompts, [r["rejected"] for r in rows])
        return c - r

    implicit = margin(policy.model, policy.tokenizer) - margin(ref.model, ref.tokenizer)
    assert np.mean(implicit) > 0.5 and np.mean(implicit > 0) > 0.7
