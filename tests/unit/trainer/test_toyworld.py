"""Building the toy world: deterministic for a seed, cached, atomic, loadable by the checkpoint path."""

from __future__ import annotations

import json
import os

import pytest
import torch

from activedpo_core.checkpoint import load_model
from activedpo_trainer.toyworld import ToyWorldConfig, build_toyworld, load_toyworld, world_dir


def _weights(path):
    return load_model(path).model.state_dict()


def test_world_layout_and_figures(tiny_world):
    root = tiny_world.root
    assert (root / "world.json").is_file()
    for name in ("config.json", "model.safetensors", "tokenizer.json", "manifest.json"):
        assert (root / "sft" / name).is_file(), name
    info = json.loads((root / "world.json").read_text())
    assert info["sft_eval"]["n"] == tiny_world.config.eval_prompts
    m = tiny_world.sft_checkpoint
    assert m.adapter is None and m.id.startswith("toyworld-")
    assert os.path.samefile(m.base, root / "sft")  # "." in the manifest: relocatable


def test_same_seed_builds_the_same_world_and_another_seed_does_not(tiny_world, tmp_path):
    again = build_toyworld(ToyWorldConfig.preset("tiny"), cache_dir=tmp_path / "a")
    assert again.root != tiny_world.root
    a, b = _weights(tiny_world.sft_dir), _weights(again.sft_dir)
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert again.info["sft_eval"] == tiny_world.info["sft_eval"]
    assert (again.sft_dir / "tokenizer.json").read_text() == (tiny_world.sft_dir / "tokenizer.json").read_text()

    other = build_toyworld(ToyWorldConfig.preset("tiny", seed=1), cache_dir=tmp_path / "b")
    c = _weights(other.sft_dir)
    assert not all(torch.equal(a[k], c[k]) for k in a)
    assert other.task.heldout_prompts() != tiny_world.task.heldout_prompts()


def test_a_cached_world_is_reused_and_force_rebuilds(tiny_world, cache_dir):
    stamp = (tiny_world.root / "world.json").stat().st_mtime_ns
    reused = build_toyworld(ToyWorldConfig.preset("tiny"), cache_dir=cache_dir)
    assert reused.root == tiny_world.root
    assert (reused.root / "world.json").stat().st_mtime_ns == stamp


def test_force_replaces_the_world_atomically(tmp_path):
    cfg = ToyWorldConfig.preset("tiny")
    first = build_toyworld(cfg, cache_dir=tmp_path)
    created = first.info["created"]
    second = build_toyworld(cfg, cache_dir=tmp_path, force=True)
    assert second.root == first.root and (second.root / "world.json").is_file()
    assert second.info["sft_eval"] == first.info["sft_eval"]
    leftovers = [p.name for p in second.root.parent.iterdir() if p.name.startswith(".")]
    assert leftovers == [], "temporary build directories must not survive"
    assert created  # both builds stamped


def test_an_interrupted_build_leaves_no_world(tmp_path):
    cfg = ToyWorldConfig.preset("tiny")

    def interrupt(stage, done, total):
        if stage == "sft" and done == 5:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        build_toyworld(cfg, cache_dir=tmp_path, progress=interrupt)
    assert not world_dir(cfg, tmp_path).exists()
    assert list((tmp_path / "toyworld").iterdir()) == []


def test_config_key_tracks_every_field():
    base = ToyWorldConfig.preset("tiny")
    assert base.key() == ToyWorldConfig.preset("tiny").key()
    assert base.key() != ToyWorldConfig.preset("tiny", seed=1).key()
    assert base.key() != ToyWorldConfig.preset("default").key()
    with pytest.raises(ValueError, match="unknown toy world preset 'huge'"):
        ToyWorldConfig.preset("huge")


def test_load_errors_name_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match=str(tmp_path / "nowhere")):
        load_toyworld(tmp_path / "nowhere")
    (tmp_path / "w").mkdir()
    (tmp_path / "w" / "world.json").write_text("{not json")
    with pytest.raises(ValueError, match=r"corrupt toy world description .*world\.json"):
        load_toyworld(tmp_path / "w")


def test_the_sft_model_learned_the_task_format(tiny_world):
    """Even the tiny world's pi_ref ends its answers, as its demonstrations do; the same network untrained
    runs on to the token limit: a sanity check of SFT."""
    from transformers import AutoModelForCausalLM

    from activedpo_trainer.generation import GenerationSettings, generate

    loaded = load_model(tiny_world.sft_dir)
    torch.manual_seed(0)
    untrained = AutoModelForCausalLM.from_config(loaded.model.config)
    prompts, settings = tiny_world.task.heldout_prompts()[:8], GenerationSettings(max_new_tokens=16)

    def stopped(model) -> int:  # answers ended before the limit (a word is a token here)
        return sum(len(r.split()) < 16 for group in generate(model, loaded.tokenizer, prompts, 2, settings)
                   for r in group)  # fmt: skip

    assert stopped(loaded.model) >= 14 and stopped(untrained) <= 8  # 16 and 5 when this was written


def test_a_world_finished_meanwhile_by_another_process_wins(tiny_world, tmp_path):
    """Two builds of one config race: the loser discards its copy and opens the winner's."""
    import shutil

    cfg = ToyWorldConfig.preset("tiny")
    target = world_dir(cfg, tmp_path)

    def other_process_finishes(stage, done, total):
        if stage == "sft" and done == 1:
            shutil.copytree(tiny_world.root, target)

    world = build_toyworld(cfg, cache_dir=tmp_path, progress=other_process_finishes)
    assert world.root == target
    assert world.info["created"] == tiny_world.info["created"]  # the other build's world, untouched
    assert [p.name for p in target.parent.iterdir()] == [target.name]
