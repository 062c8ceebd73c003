"""The embedded toy world: a synthetic instruction task, its hidden oracle and a tiny SFT model.

No network exists at run time, yet the main job has to run out of the box. So activedpo
builds its own small world, locally and deterministically from a seed:

* a prompt pool, ``write a <form> about <topic> for <audience> in <n> words :``, split into
  train and held-out prompts;
* a hidden oracle reward r*(x, y) over several independent attributes of the response: words
  on the prompt's topic, sentiment, length against the asked length, repetition (see
  :meth:`activedpo_trainer.toytasks.ToyTask.reward`). Two depend on the prompt, two do not;
* a word-level tokenizer trained with ``tokenizers`` and a tiny Llama-architecture causal LM
  SFT-trained from scratch on noisy demonstrations, saved in Hugging Face format. That model
  is pi_ref, and it is loaded through exactly the checkpoint code that loads a real 7B model.

The demonstrations are deliberately mediocre (some off-topic words, negative words, wrong
lengths, repeats), so the SFT policy has a mediocre mean reward and a wide spread between its
own samples: pairs of its responses carry signal, and different pairs teach different things.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path

import numpy as np

from activedpo_core.atomic import fsync_tree
from activedpo_core.checkpoint import CheckpointManifest
from activedpo_trainer.tasks import load_task, task_slug, task_vocabulary
from activedpo_trainer.toytasks import MAX_RESPONSE_WORDS

WORLD_FORMAT = 1  # bump when a change to this module changes what a given config builds

MAX_POSITIONS = 64  # tokens a toy-world model holds: prompt, response and end of sequence

PAD, EOS, UNK = "<pad>", "<eos>", "<unk>"


class Preset(str, Enum):
    """The toy world's sizes (:meth:`ToyWorldConfig.preset`): the demo's, and a tiny one for tests."""

    default = "default"
    tiny = "tiny"


@dataclass(frozen=True)
class ToyWorldConfig:
    """Everything that determines a toy world; its hash names the cache directory."""

    name: str = "default"
    seed: int = 0
    n_heldout: int = 200
    task: str = "toy"  # a built-in task or package.module:factory (see load_task)
    # model: a 2-layer Llama, ~0.35 M parameters; big enough to learn the task, small enough for CPUs
    hidden_size: int = 128
    intermediate_size: int = 256
    num_layers: int = 2
    num_heads: int = 4
    # SFT from scratch on the noisy demonstrations
    sft_examples: int = 20_000
    sft_steps: int = 1_200
    sft_batch_size: int = 64
    sft_lr: float = 3e-3
    # evaluation of pi_ref recorded at build time
    eval_prompts: int = 100
    max_new_tokens: int = MAX_RESPONSE_WORDS + 2

    @classmethod
    def preset(cls, name: str, seed: int = 0, task: str = "toy") -> ToyWorldConfig:
        """``default``: the world the quickstart uses. ``tiny``: builds in seconds, for tests."""
        if name == "default":
            return cls(name="default", seed=seed, task=task)
        if name == "tiny":
            return cls(
                name="tiny",
                seed=seed,
                task=task,
                hidden_size=32,
                intermediate_size=64,
                num_layers=1,
                num_heads=2,
                sft_examples=2_000,
                sft_steps=150,
                sft_batch_size=32,
                eval_prompts=20,
            )
        raise ValueError(f"unknown toy world preset {name!r}; choose 'default' or 'tiny'")

    def make_task(self):
        return load_task(self.task, seed=self.seed, n_heldout=self.n_heldout)

    def key(self) -> str:
        fields = dataclasses.asdict(self)
        if fields["task"] == "toy":  # worlds built before tasks were pluggable keep their key
            del fields["task"]
        payload = json.dumps({"format": WORLD_FORMAT, **fields}, sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()[:12]


@dataclass
class ToyWorld:
    """A built world on disk: ``root/world.json`` and the SFT checkpoint in ``root/sft``."""

    root: Path
    config: ToyWorldConfig
    info: dict
    _task: object = field(default=None, repr=False)

    @property
    def task(self):
        if self._task is None:
            self._task = self.config.make_task()
        return self._task

    @property
    def sft_dir(self) -> Path:
        return self.root / "sft"

    @property
    def sft_checkpoint(self) -> CheckpointManifest:
        return CheckpointManifest.load(self.sft_dir)


def default_cache_dir() -> Path:
    """``$ACTIVEDPO_CACHE``, else ``$XDG_CACHE_HOME/activedpo``, else ``~/.cache/activedpo``."""
    if os.environ.get("ACTIVEDPO_CACHE"):
        return Path(os.environ["ACTIVEDPO_CACHE"]).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "activedpo"


def world_dir(config: ToyWorldConfig, cache_dir: Path | None = None) -> Path:
    slug = "" if config.task == "toy" else task_slug(config.task) + "-"
    return Path(cache_dir or default_cache_dir()) / "toyworld" / f"{config.name}-{slug}{config.key()}"


def load_toyworld(path: str | Path) -> ToyWorld:
    """Open a built world from its directory; a clear error when it is missing or incomplete."""
    root = Path(path)
    info_path = root / "world.json"
    if not info_path.is_file():
        raise FileNotFoundError(
            f"no toy world at {root}: {info_path} is missing; build one with `activedpo-client toyworld build`"
        )
    try:
        info = json.loads(info_path.read_text())
        if "sft_eval" in info:  # a world cached by an earlier version named the reward "mean"
            from activedpo_trainer.evaluate import EvalReport

            info["sft_eval"] = EvalReport.from_dict(info["sft_eval"]).to_dict()
        config = ToyWorldConfig(**info["config"])
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise ValueError(f"corrupt toy world description {info_path}: {e}") from e
    return ToyWorld(root=root, config=config, info=info)


def build_toyworld(
    config: ToyWorldConfig | None = None,
    cache_dir: Path | None = None,
    force: bool = False,
    progress: Callable[[str, int, int], None] | None = None,
) -> ToyWorld:
    """Build the world for ``config`` (or reuse the cached one) and return it.

    The build is written to a temporary directory next to the cache entry and renamed into
    place at the end, so an interrupted build never leaves a half-world that looks complete.
    ``progress(stage, done, total)`` is called during SFT and evaluation.
    """
    import torch

    from activedpo_core.checkpoint import load_model
    from activedpo_trainer.heldout import heldout_eval
    from activedpo_trainer.sft import SFTSettings, train_sft

    config = config or ToyWorldConfig()
    root = world_dir(config, cache_dir)
    if (root / "world.json").is_file() and not force:
        return load_toyworld(root)

    root.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}.", dir=root.parent))
    try:
        t0 = time.perf_counter()
        task = config.make_task()
        longest = max(len(p.split()) for p in task.train_prompts() + task.heldout_prompts())
        if longest + config.max_new_tokens + 1 > MAX_POSITIONS:
            raise ValueError(f"task {config.task!r} has a prompt of {longest} words; a toy-world model holds "
                             f"{MAX_POSITIONS} tokens, {config.max_new_tokens} of them for the response")  # fmt: skip
        torch.manual_seed(config.seed)
        corpus = task.sft_corpus(config.sft_examples, seed=config.seed)
        tokenizer = build_tokenizer(task_vocabulary(task, corpus))
        model = _new_model(config, tokenizer)
        settings = SFTSettings(
            steps=config.sft_steps, batch_size=config.sft_batch_size, lr=config.sft_lr, seed=config.seed
        )
        losses = train_sft(model, tokenizer, corpus, settings, progress=progress)
        sft_dir = tmp / "sft"
        model.generation_config.max_new_tokens = config.max_new_tokens
        model.save_pretrained(sft_dir)
        tokenizer.save_pretrained(sft_dir)
        # base "." = this directory: the world stays loadable wherever the cache is moved
        manifest = CheckpointManifest.new(base=".", adapter=None, parent_id=None, id=f"toyworld-{config.key()}-sft")
        manifest.save(sft_dir)
        build_seconds = time.perf_counter() - t0

        # pi_ref's figures, through the same loading path every checkpoint takes
        n_eval = min(config.eval_prompts, len(task.heldout_prompts()))  # a small task may hold out fewer
        report = heldout_eval(load_model(sft_dir), config, n_eval, config.seed, progress=progress)
        info = {
            "format": WORLD_FORMAT,
            "config": dataclasses.asdict(config),
            "key": config.key(),
            "build_seconds": round(build_seconds, 2),
            "sft_final_loss": round(float(np.mean(losses[-20:])), 4),
            "sft_eval": report.to_dict(),
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        (tmp / "world.json").write_text(json.dumps(info, indent=2) + "\n")
        fsync_tree(tmp)  # the whole world is on disk before it gets its name
        if root.exists() and force:  # replace the old world only once the new one is complete
            shutil.rmtree(root)
        try:
            os.replace(tmp, root)
        except OSError:
            if not (root / "world.json").is_file():
                raise
            shutil.rmtree(tmp)  # another process finished the same world first: same config, same world
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return load_toyworld(root)


def build_tokenizer(vocabulary: list[str]):
    """A word-level tokenizer over ``vocabulary`` (trained with ``tokenizers``), wrapped for transformers."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel(unk_token=UNK))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.decoder = decoders.WordPiece(prefix="##", cleanup=False)  # joins words with single spaces
    trainer = trainers.WordLevelTrainer(special_tokens=[PAD, EOS, UNK], min_frequency=1)
    tok.train_from_iterator([" ".join(vocabulary)], trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token=PAD,
        eos_token=EOS,
        unk_token=UNK,
        model_max_length=MAX_POSITIONS,
        padding_side="left",  # generation pads on the left; training code sets what it needs
    )


def _new_model(config: ToyWorldConfig, tokenizer):
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=config.hidden_size,
        intermediate_size=config.intermediate_size,
        num_hidden_layers=config.num_layers,
        num_attention_heads=config.num_heads,
        num_key_value_heads=config.num_heads,
        max_position_embeddings=MAX_POSITIONS,
        tie_word_embeddings=True,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=None,
    )
    return LlamaForCausalLM(cfg)
