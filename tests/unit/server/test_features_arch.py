"""Per-example LoRA gradients on the architectures users bring: GPT-2 (Conv1D, fan_in_fan_out),
GPT-NeoX (fused query_key_value) and Llama, each against one-at-a-time autograd; and a clear refusal
of LoRA layers the batched path cannot handle."""

from __future__ import annotations

import pytest
import torch

from activedpo_core.checkpoint import CheckpointManifest, load_model
from activedpo_server.features import FeaturizerError, GradientFeaturizer, LoraSpec
from activedpo_trainer.prompts import PromptRenderer

ARCHS = {"gpt2": "c_attn", "gpt_neox": "query_key_value", "llama": "q_proj"}


def random_adapter(base_dir, out, targets):
    """An adapter whose A and B are both random, so both gradient blocks are exercised."""
    from peft import LoraConfig, get_peft_model

    from activedpo_core.lora import fan_in_fan_out, resolve_targets

    torch.manual_seed(3)
    model = load_model(str(base_dir)).model
    targets = resolve_targets(targets, model)
    cfg = LoraConfig(r=4, lora_alpha=8, target_modules=targets, init_lora_weights=False, task_type="CAUSAL_LM",
                     fan_in_fan_out=fan_in_fan_out(model, targets))  # fmt: skip
    get_peft_model(model, cfg).save_pretrained(out / "adapter")
    m = CheckpointManifest.new(base=str(base_dir), adapter=str(out / "adapter"), parent_id=None)
    m.save(out)
    return m


@pytest.fixture(scope="module", params=sorted(ARCHS))
def arch_model(request, tmp_path_factory):
    from conftest import build_user_model

    return request.param, build_user_model(tmp_path_factory.mktemp(request.param), request.param)


def texts(model_dir):
    render = PromptRenderer(load_model(str(model_dir)).tokenizer)
    prompts = [render.prompt("tell me about the sea"), render.prompt([{"role": "user", "content": "write a poem"}])]
    ps = [prompts[0], prompts[1], prompts[0], prompts[1], prompts[0]]
    rs = [" good nice", " a song about rain and sun", " bad", " cold", " very very big red dogs"]  # varying lengths
    return ps, rs


@pytest.mark.parametrize("targets", ["all-linear", "auto"])
def test_batched_gradients_equal_autograd_on_every_architecture(arch_model, targets, tmp_path):
    arch, model_dir = arch_model
    m = random_adapter(model_dir, tmp_path, targets if targets == "all-linear" else None)
    f = GradientFeaturizer(m, proj_dim=64, batch_size=3, device="cpu")
    names = [layer.name for layer in f.layers]
    if targets == "auto":  # PEFT's defaults for the family
        assert all(ARCHS[arch] in n or (arch == "llama" and "v_proj" in n) for n in names), names
    batched = f.per_example_gradients(*texts(model_dir))
    reference = f.reference_gradients(*texts(model_dir))
    err = ((batched - reference).norm(dim=1) / reference.norm(dim=1)).max().item()
    assert err <= 1e-4, (arch, targets, err)
    first = f.layers[0]
    assert (batched[:, first.offset_A : first.offset_B] != 0).any()  # A-gradients are there too


def test_gpt2_conv1d_layers_are_wrapped_with_fan_in_fan_out(gpt2_dir, tmp_path):
    m = random_adapter(gpt2_dir, tmp_path, None)
    f = GradientFeaturizer(m, proj_dim=32, device="cpu")
    module = dict(f.model.named_modules())[f.layers[0].name]
    assert type(module.get_base_layer()).__name__ == "Conv1D" and module.fan_in_fan_out


def test_fresh_round_one_adapter_with_auto_targets(gpt2_dir):
    f = GradientFeaturizer(str(gpt2_dir), proj_dim=32, device="cpu", lora=LoraSpec(r=4, alpha=8, target_modules="auto"))
    assert f.fresh_adapter and {layer.name.split(".")[-1] for layer in f.layers} == {"c_attn"}
    feats = f.featurize(*texts(gpt2_dir))
    assert feats.shape == (5, 32)
    assert "targets=auto" in f.feature_key


def test_lora_on_an_embedding_is_refused_by_name(gpt2_dir, tmp_path):
    m = random_adapter(gpt2_dir, tmp_path, ["wte", "c_attn"])
    with pytest.raises(FeaturizerError, match=r"LoRA layer .*wte wraps a Embedding; .*linear layers only"):
        GradientFeaturizer(m, proj_dim=32, device="cpu")


def test_auto_targets_on_an_unknown_architecture_name_the_way_out(gpt2_dir):
    from activedpo_core.checkpoint import CheckpointError
    from activedpo_core.lora import resolve_targets

    model = load_model(str(gpt2_dir)).model
    model.config.model_type = "my_own_arch"
    with pytest.raises(CheckpointError, match=r"no default LoRA targets for model type 'my_own_arch'; pass --target"):
        resolve_targets("auto", model)
    assert resolve_targets("q_proj, v_proj", model) == ["q_proj", "v_proj"]
