"""LoRA-gradient features: batched per-example gradients against one-at-a-time autograd, and
the properties the selection relies on (reproducible, split-invariant, normalised)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

from activedpo_server.features import (
    EmbeddingFeaturizer,
    FeaturizerError,
    GradientFeaturizer,
    LoraSpec,
    pair_features,
)

SMALL = LoraSpec(r=8, alpha=16)  # a fresh adapter small enough for quick tests


@pytest.fixture(scope="module")
def texts(tiny_world):
    prompts = tiny_world.task.heldout_prompts()[:4]
    responses = [" wave tide bright", " bright", " moss tree calm calm", " a", " wave tide bright", " calm moss"]
    # varying lengths (padding inside a batch) and one exact repeat (rows 0 and 4)
    ps = [prompts[0], prompts[1], prompts[2], prompts[3], prompts[0], prompts[2]]
    return ps, responses


def rel_err(a, b):
    return ((a - b).norm(dim=1) / b.norm(dim=1)).max().item()


def test_batched_gradients_equal_per_example_autograd(random_adapter, texts):
    f = GradientFeaturizer(random_adapter, proj_dim=64, batch_size=4)  # A and B both non-zero
    batched = f.per_example_gradients(*texts)
    reference = f.reference_gradients(*texts)
    assert batched.shape == (6, f.dim) and batched.dtype == torch.float32
    assert rel_err(batched, reference) <= 1e-4
    assert (batched[:, f.layers[0].offset_A : f.layers[0].offset_B] != 0).any()  # A-gradients are used


def test_fresh_adapter_features_come_from_b_alone_and_still_separate_responses(tiny_world, texts):
    f = GradientFeaturizer(tiny_world.sft_dir, proj_dim=256, batch_size=4, lora=SMALL)
    assert f.fresh_adapter
    grads = f.per_example_gradients(*texts)
    torch.testing.assert_close(grads, f.reference_gradients(*texts), rtol=1e-4, atol=1e-6)
    for layer in f.layers:
        a = grads[:, layer.offset_A : layer.offset_B]
        b = grads[:, layer.offset_B : layer.offset_B + layer.lora_B.weight.numel()]
        assert (a == 0).all() and (b != 0).any()
    feats = f.featurize(*texts)
    cos = feats @ feats.T
    np.testing.assert_allclose(feats[0], feats[4], atol=1e-6)  # the same (prompt, response), the same feature
    distinct = [(i, j) for i in range(6) for j in range(i + 1, 6) if (i, j) != (0, 4)]
    assert max(cos[i, j] for i, j in distinct) < 0.99
    assert np.linalg.norm(pair_features(feats, np.array([[0, 1], [0, 4]])), axis=1)[0] > 0.1


def test_features_do_not_depend_on_batch_split_or_chunking(random_adapter, texts):
    a = GradientFeaturizer(random_adapter, proj_dim=512, batch_size=6).featurize(*texts)
    b = GradientFeaturizer(random_adapter, proj_dim=512, batch_size=2, chunk_bytes=1).featurize(*texts)
    c = np.concatenate(
        [
            GradientFeaturizer(random_adapter, proj_dim=512, batch_size=3).featurize(
                texts[0][i : i + 1], texts[1][i : i + 1]
            )
            for i in range(6)
        ]
    )
    for other in (b, c):
        assert (np.linalg.norm(other - a, axis=1) / np.linalg.norm(a, axis=1)).max() <= 1e-5


def test_features_are_unit_rows_float32_and_carry_the_checkpoint(random_adapter, tiny_world, texts):
    f = GradientFeaturizer(random_adapter, proj_dim=128, batch_size=4)
    feats = f.featurize(*texts)
    assert feats.shape == (6, 128) and feats.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(feats, axis=1), 1.0, rtol=1e-5)
    assert f.checkpoint_id == random_adapter.id and random_adapter.id in f.feature_key
    fresh = GradientFeaturizer(tiny_world.sft_dir, proj_dim=128, lora=SMALL)
    assert fresh.checkpoint_id == tiny_world.sft_checkpoint.id and fresh.feature_key != f.feature_key
    assert f.featurize([], []).shape == (0, 128)
    with pytest.raises(ValueError, match="2 prompts but 1 responses"):
        f.featurize(texts[0][:2], texts[1][:1])


def test_unnormalised_features_keep_the_gradient_norm(random_adapter, texts):
    f = GradientFeaturizer(random_adapter, proj_dim=4096, normalize=False, batch_size=4)
    norms = f.per_example_gradients(*texts).norm(dim=1).numpy()
    ratio = np.linalg.norm(f.featurize(*texts), axis=1) / norms
    assert np.all(np.abs(ratio - 1) < 0.1)  # Johnson–Lindenstrauss: E‖Pg‖² = ‖g‖²


def test_progress_is_reported_per_chunk(random_adapter, texts):
    seen = []
    GradientFeaturizer(random_adapter, proj_dim=32, batch_size=2, chunk_bytes=1).featurize(
        *texts, progress=lambda stage, done, total: seen.append((stage, done, total))
    )
    assert seen[0] == ("featurize", 0, 6) and seen[-1] == ("featurize", 6, 6)
    assert [d for _, d, _ in seen] == sorted(d for _, d, _ in seen) and len(seen) == 4


def test_same_features_in_a_fresh_process(tiny_world, texts):
    here = GradientFeaturizer(tiny_world.sft_dir, proj_dim=64, lora=SMALL, seed=3).featurize(*texts)
    code = (
        "import json, sys\n"
        "from activedpo_server.features import GradientFeaturizer, LoraSpec\n"
        "ps, rs, path = json.loads(sys.stdin.read())\n"
        "f = GradientFeaturizer(path, proj_dim=64, lora=LoraSpec(r=8, alpha=16), seed=3, batch_size=5)\n"
        "sys.stdout.buffer.write(f.featurize(ps, rs).tobytes())\n"
    )
    import json

    payload = json.dumps([*texts, str(tiny_world.sft_dir)])
    out = subprocess.run([sys.executable, "-c", code], input=payload.encode(), capture_output=True, check=True)
    there = np.frombuffer(out.stdout, dtype=np.float32).reshape(here.shape)
    assert (np.linalg.norm(there - here, axis=1) / np.linalg.norm(here, axis=1)).max() <= 1e-5


def test_bfloat16_weights_give_float32_features_close_to_float32_ones(random_adapter, texts):
    f32 = GradientFeaturizer(random_adapter, proj_dim=256).featurize(*texts)
    bf16 = GradientFeaturizer(random_adapter, proj_dim=256, dtype="bfloat16").featurize(*texts)
    assert bf16.dtype == np.float32 and np.isfinite(bf16).all()
    assert (f32 * bf16).sum(1).min() > 0.95  # unit rows: cosine similarity


def test_logprobs_policy_and_reference(random_adapter, tiny_world, texts):
    policy, ref = GradientFeaturizer(random_adapter, proj_dim=8).logprobs(*texts)
    assert policy.shape == ref.shape == (6,) and (policy != ref).all()
    fresh_policy, fresh_ref = GradientFeaturizer(tiny_world.sft_dir, proj_dim=8, lora=SMALL).logprobs(*texts)
    np.testing.assert_allclose(fresh_policy, fresh_ref)  # B = 0: the policy is π_ref
    np.testing.assert_allclose(fresh_ref, ref, rtol=1e-5)  # π_ref is the base either way


def test_a_missing_checkpoint_is_named_in_the_error(tmp_path):
    from activedpo_core.checkpoint import CheckpointError

    with pytest.raises(CheckpointError, match="does not exist"):
        GradientFeaturizer(tmp_path / "nowhere")
    with pytest.raises(ValueError, match="proj_dim and batch_size must be positive"):
        GradientFeaturizer(tmp_path, proj_dim=0)


def test_lora_variants_are_refused_with_a_clear_error(tiny_world):
    from peft import LoraConfig, get_peft_model

    from activedpo_core.checkpoint import LoadedModel, load_model

    loaded = load_model(tiny_world.sft_dir)
    dora = get_peft_model(loaded.model, LoraConfig(r=4, target_modules="all-linear", use_dora=True))
    with pytest.raises(FeaturizerError, match="LoRA variant"):
        GradientFeaturizer(LoadedModel(dora, loaded.tokenizer, loaded.manifest), proj_dim=8)


def test_embedding_featurizer_is_policy_independent(random_adapter, tiny_world, texts):
    e = EmbeddingFeaturizer(random_adapter)
    feats = e.featurize(*texts)
    assert feats.shape == (6, e.dim) and e.dim == e.model.config.hidden_size
    np.testing.assert_allclose(np.linalg.norm(feats, axis=1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(feats, EmbeddingFeaturizer(tiny_world.sft_dir).featurize(*texts), atol=1e-6)
    np.testing.assert_allclose(feats[0], feats[4], atol=1e-6)
    assert e.checkpoint_id == f"ref:{tiny_world.sft_dir}"
    # batching does not change a row
    np.testing.assert_allclose(
        EmbeddingFeaturizer(tiny_world.sft_dir, batch_size=1).featurize(*texts), feats, atol=1e-5
    )


@pytest.mark.parametrize("kind", ["sjlt", "kron", "dense"])
def test_every_projection_gives_the_features_of_the_exact_gradients(random_adapter, tiny_world, texts, kind):
    """The factored path (hooks' factors → projection, no gradient formed) equals projecting the
    one-at-a-time autograd gradients, for a trained-like adapter and a fresh round-one one."""
    for ckpt, lora in ((random_adapter, None), (tiny_world.sft_dir, SMALL)):
        f = GradientFeaturizer(ckpt, proj_dim=64, batch_size=4, projection=kind, lora=lora)
        fast = f.featurize(*texts)
        exact = f.project(f.reference_gradients(*texts)).numpy()
        np.testing.assert_allclose(fast, exact, atol=2e-5)
        np.testing.assert_allclose(np.linalg.norm(fast, axis=1), 1.0, rtol=1e-5)
        assert f"proj={f.projection.key()}" in f.feature_key


def test_the_feature_key_names_the_projection_and_the_weights_dtype(random_adapter):
    keys = {
        (kind, dtype): GradientFeaturizer(random_adapter, proj_dim=64, projection=kind, dtype=dtype).feature_key
        for kind in ("sjlt", "dense")
        for dtype in ("float32", "bfloat16")
    }
    assert len(set(keys.values())) == 4  # bf16 and fp32 features never share a FAISS file
    assert "dtype=bfloat16" in keys[("sjlt", "bfloat16")] and "proj=sjlt(groups=4)" in keys[("sjlt", "float32")]


# ---- other families: Qwen2 (GQA, tied embeddings), Bloom (ALiBi, fused qkv), Phi; ChatML on a BPE tokenizer ----

CHATS = [
    [{"role": "user", "content": "Tell me about the sea."}],
    [{"role": "system", "content": "Be kind."}, {"role": "user", "content": "Cats and dogs?"}],
    [
        {"role": "user", "content": "write a short poem"},
        {"role": "assistant", "content": "The sky is blue."},
        {"role": "user", "content": "Now `code`, please!"},
    ],
]
# markdown, code, punctuation, a newline list, non-ASCII bytes and a one-token reply: lengths vary, so rows are padded
REPLIES = [
    "**Routine:** run",
    "`x = 1`",
    "Yes, it is very nice!\n- the sea is blue\n- the sky is big.",
    " a",
    "café ☕?",
]
WRAPPED = {  # the layer names LoRA wraps: PEFT's defaults ("auto") and every linear layer but the LM head
    "auto": {"qwen2": {"q_proj", "v_proj"}, "bloom": {"query_key_value"}, "phi": {"q_proj", "v_proj", "fc1", "fc2"}},
    "all-linear": {
        "qwen2": {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"},
        "bloom": {"query_key_value", "dense", "dense_h_to_4h", "dense_4h_to_h"},
        "phi": {"q_proj", "k_proj", "v_proj", "dense", "fc1", "fc2"},
    },
}


@pytest.fixture(scope="module", params=["qwen2", "bloom", "phi"])
def family(request, tmp_path_factory):
    """A tiny ``arch`` base with no pad token, random adapters (A and B non-zero) on PEFT's default
    targets and on all-linear, and ChatML (prompt, response) pairs on it."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoTokenizer

    from activedpo_core.checkpoint import CheckpointManifest, load_model
    from activedpo_trainer.localmodels import build_local_model

    arch = request.param
    root = tmp_path_factory.mktemp(arch)
    base = build_local_model(root / "base", arch)
    assert AutoTokenizer.from_pretrained(base).pad_token is None  # load_model pads with EOS
    adapters = {}
    for i, targets in enumerate(("auto", "all-linear")):
        torch.manual_seed(10 + i)
        model = load_model(base).model
        cfg = LoraConfig(r=4, lora_alpha=8, target_modules=None if targets == "auto" else targets,
                         init_lora_weights=False, task_type="CAUSAL_LM")  # fmt: skip
        get_peft_model(model, cfg).save_pretrained(root / targets / "adapter")
        manifest = CheckpointManifest.new(base=str(base), adapter=str(root / targets / "adapter"), parent_id=None)
        manifest.save(root / targets)
        adapters[targets] = manifest
    tok = load_model(base).tokenizer
    prompts = [tok.apply_chat_template(c, tokenize=False, add_generation_prompt=True) for c in CHATS]
    ps = [prompts[0], prompts[1], prompts[2], prompts[1], prompts[0], prompts[2]]
    rs = [REPLIES[0], REPLIES[1], REPLIES[2], REPLIES[3], REPLIES[4], REPLIES[0]]
    return arch, base, adapters, (ps, rs)


def _check_padded(f, texts):
    from activedpo_core.sequences import encode_pairs

    assert f.tokenizer.pad_token_id == f.tokenizer.eos_token_id == f.tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert texts[0][0].startswith("<|im_start|>system\n") and texts[0][0].endswith("<|im_start|>assistant\n")
    _, att, _ = encode_pairs(f.tokenizer, *texts)
    assert len(set(att[: f.batch_size].sum(1).tolist())) >= 3  # one batch holds rows of several lengths


@pytest.mark.parametrize("targets", ["auto", "all-linear"])
def test_batched_gradients_equal_per_example_autograd_on_other_families(family, targets):
    arch, _, adapters, texts = family
    f = GradientFeaturizer(adapters[targets], proj_dim=64, batch_size=4)
    _check_padded(f, texts)
    assert {layer.name.rsplit(".", 1)[-1] for layer in f.layers} == WRAPPED[targets][arch]
    assert len(f.layers) == 2 * len(WRAPPED[targets][arch])  # two transformer blocks
    batched = f.per_example_gradients(*texts)
    reference = f.reference_gradients(*texts)
    assert batched.shape == (6, f.dim) and torch.isfinite(batched).all()
    assert rel_err(batched, reference) <= 1e-4
    for layer in f.layers:  # every layer's A- and B-gradients are used, not just some
        n_b = layer.lora_B.weight.numel()
        assert (batched[:, layer.offset_A : layer.offset_B] != 0).any(1).all()
        assert (batched[:, layer.offset_B : layer.offset_B + n_b] != 0).any(1).all()
    assert (batched[0] - batched[5]).norm() > 1e-3 * batched[0].norm()  # same reply, other prompt


def test_fresh_adapter_gradients_equal_per_example_autograd_on_other_families(family):
    arch, base, _, texts = family
    f = GradientFeaturizer(base, proj_dim=64, batch_size=4, lora=LoraSpec(r=4, alpha=8, target_modules="auto"))
    assert f.fresh_adapter
    _check_padded(f, texts)
    assert {layer.name.rsplit(".", 1)[-1] for layer in f.layers} == WRAPPED["auto"][arch]
    batched = f.per_example_gradients(*texts)
    reference = f.reference_gradients(*texts)
    assert rel_err(batched, reference) <= 1e-4
    for layer in f.layers:  # B = 0: the A-gradients vanish, the B-gradients carry everything
        n_b = layer.lora_B.weight.numel()
        assert (batched[:, layer.offset_A : layer.offset_B] == 0).all()
        assert (batched[:, layer.offset_B : layer.offset_B + n_b] != 0).any(1).all()


@pytest.mark.parametrize("kind", ["sjlt", "kron", "dense"])
def test_projected_features_equal_those_of_the_exact_gradients_on_other_families(family, kind):
    _, base, adapters, texts = family
    fresh = LoraSpec(r=4, alpha=8, target_modules="auto")
    for ckpt, lora in ((adapters["auto"], None), (adapters["all-linear"], None), (base, fresh)):
        f = GradientFeaturizer(ckpt, proj_dim=64, batch_size=4, projection=kind, lora=lora)
        fast = f.featurize(*texts)
        exact = f.project(f.reference_gradients(*texts)).numpy()
        np.testing.assert_allclose(fast, exact, atol=2e-5)
        np.testing.assert_allclose(np.linalg.norm(fast, axis=1), 1.0, rtol=1e-5)
        assert (fast[:5] @ fast[:5].T)[np.triu_indices(5, 1)].max() < 0.99  # five replies, five directions
