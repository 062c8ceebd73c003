"""Workloads: what a run of rounds aligns, and on what.

A workload is the policy's base checkpoint (π_ref, the model DPO starts from and is measured
against), a prompt source split into training and held-out prompts, generation settings, the
weights' dtype, and optionally a hidden oracle reward (the toy world's, for simulated labels and
evaluation). The round loop sees only this interface:

* :class:`ModelWorkload` — a user's own Hugging Face model (directory or hub id in the local
  cache) and prompt file: the product's main road;
* :class:`ToyWorkload` — the embedded toy world (tests, demo, benchmarks).

``describe()`` gives a JSON description that the run directory stores;
:func:`open_workload` reopens it, and a run refuses to continue on a different one.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from functools import cached_property
from pathlib import Path

from activedpo_core.checkpoint import CheckpointError, CheckpointManifest, resolve_checkpoint
from activedpo_trainer.generation import GenerationSettings

DTYPES = ("float32", "bfloat16", "float16")


def _local_or_id(ref: str) -> str:
    """Local paths become absolute (a run works from any directory); hub ids stay as they are."""
    p = Path(ref).expanduser()
    return str(p.resolve()) if p.exists() else ref


def _generation_from(data: dict | None, default_max_new_tokens: int) -> GenerationSettings:
    data = dict(data or {})
    data.setdefault("max_new_tokens", default_max_new_tokens)
    try:
        return GenerationSettings(**data)
    except TypeError as e:
        raise ValueError(f"unknown generation setting in the run's workload: {e}") from None


class Workload:
    """The interface the round loop uses; see the module docstring."""

    kind: str
    generation: GenerationSettings
    dtype: str
    default_targets: str  # LoRA targets when a run names none

    @property
    def base(self) -> CheckpointManifest:  # π_ref
        raise NotImplementedError

    def train_prompts(self) -> list[str]:
        raise NotImplementedError

    def heldout_prompts(self) -> list[str]:
        raise NotImplementedError

    def notes(self) -> list[str]:
        """What a user should know about the prompts before any work (one line each)."""
        return []

    def raw_prompt(self, rendered: str):
        """The prompt as the prompt file gave it (a string or messages) for one the policy sees rendered: what a
        reward model of another family renders with its own chat template."""
        return rendered

    @property
    def oracle(self):
        """The hidden reward (a :class:`~activedpo_trainer.tasks.Task`), or None outside a toy world."""
        return None

    def describe(self) -> dict:
        raise NotImplementedError

    def label(self) -> str:
        """One line naming the workload, for messages."""
        raise NotImplementedError


class ToyWorkload(Workload):
    """The embedded toy world: its SFT model, its task's prompts and its hidden oracle."""

    kind = "toy"
    default_targets = "all-linear"  # what every toy-world run has used

    def __init__(self, world, generation: GenerationSettings | None = None, dtype: str = "float32"):
        if dtype not in DTYPES:
            raise ValueError(f"unsupported dtype {dtype!r}; use {', '.join(DTYPES)}")
        self.world = world
        self.generation = generation or GenerationSettings(max_new_tokens=world.config.max_new_tokens)
        self.dtype = dtype

    @property
    def base(self) -> CheckpointManifest:
        return self.world.sft_checkpoint

    def train_prompts(self) -> list[str]:
        return self.world.task.train_prompts()

    def heldout_prompts(self) -> list[str]:
        return self.world.task.heldout_prompts()

    @property
    def oracle(self):
        return self.world.task

    def describe(self) -> dict:
        gen = asdict(self.generation)
        gen.pop("batch_size")
        return {"kind": "toy", "world": str(Path(self.world.root).resolve()), "generation": gen, "dtype": self.dtype}

    def label(self) -> str:
        return f"the toy world {self.world.root} (task {self.world.config.task})"


@dataclass(frozen=True)
class ModelSpec:
    """A user's model and prompts: what identifies a :class:`ModelWorkload`."""

    model: str  # Hugging Face model directory or hub id (from the local cache; nothing is downloaded)
    prompt_file: str  # JSONL, JSON, CSV, Parquet or a save_to_disk directory
    heldout_file: str | None = None  # evaluation prompts; else `heldout` prompts are split off prompt_file
    prompt_field: str = "prompt"
    chat_template: str = "auto"  # auto | on | off
    heldout: int = 0  # prompts of prompt_file held out for evaluation when there is no heldout_file
    split_seed: int = 0  # which ones (the same for every run on this workload)

    def __post_init__(self) -> None:
        if self.chat_template not in ("auto", "on", "off"):
            raise ValueError(f"--chat-template must be auto, on or off, got {self.chat_template!r}")
        if self.heldout < 0:
            raise ValueError(f"held-out prompts must be >= 0, got {self.heldout}")


class ModelWorkload(Workload):
    """A user's own causal LM and prompt file. Prompts are rendered with the chat template when it applies."""

    kind = "model"
    default_targets = "auto"  # PEFT's per-architecture defaults

    def __init__(self, spec: ModelSpec, generation: GenerationSettings | None = None, dtype: str = "float32"):
        if dtype not in DTYPES:
            raise ValueError(f"unsupported dtype {dtype!r}; use {', '.join(DTYPES)}")
        held = _local_or_id(spec.heldout_file) if spec.heldout_file else None
        spec = replace(spec, model=_local_or_id(spec.model), prompt_file=_local_or_id(spec.prompt_file),
                       heldout_file=held)  # fmt: skip
        for name in ("prompt_file", "heldout_file"):
            path = getattr(spec, name)
            if path is not None and not Path(path).exists():
                raise FileNotFoundError(f"--{name.replace('_', '-')} not found: {path}")
        self.spec = spec
        self.generation = generation or GenerationSettings(max_new_tokens=256)
        self.dtype = dtype
        manifest = resolve_checkpoint(spec.model)
        if manifest.adapter is not None:
            raise CheckpointError(
                f"--model {spec.model} is a checkpoint with a LoRA adapter; pass its base model (π_ref), "
                f"{manifest.base}, or merge the adapter first"
            )
        self._base = manifest

    @property
    def base(self) -> CheckpointManifest:
        return self._base

    @cached_property
    def tokenizer(self):
        from transformers import AutoTokenizer

        try:
            return AutoTokenizer.from_pretrained(self._base.base)
        except (OSError, ValueError) as e:
            raise CheckpointError(f"cannot load the tokenizer of {self._base.base}: {e}") from None

    @cached_property
    def renderer(self):
        from activedpo_trainer.prompts import PromptRenderer

        return PromptRenderer(self.tokenizer, self.spec.chat_template)

    @cached_property
    def _raw(self) -> dict[str, object]:
        return {}  # rendered prompt → the prompt file's own form, filled as prompts are read

    def _render(self, raw) -> str:
        rendered = self.renderer.prompt(raw)
        self._raw.setdefault(rendered, raw)
        return rendered

    def raw_prompt(self, rendered: str):
        self._split  # noqa: B018 - reads the prompt files once
        return self._raw.get(rendered, rendered)

    @cached_property
    def _split(self) -> tuple[list[str], list[str]]:
        import numpy as np

        from activedpo_trainer.prompts import read_prompts

        s = self.spec
        prompts = [self._render(p) for p in read_prompts(s.prompt_file, s.prompt_field)]
        if s.heldout_file:
            held = [self._render(p) for p in read_prompts(s.heldout_file, s.prompt_field)]
            kept = set(held)
            train = [p for p in prompts if p not in kept]  # a held-out prompt is never trained on
            self._overlap = len(set(prompts) & kept)
            if not train:
                raise ValueError(f"every prompt of {s.prompt_file} is also in --heldout-file {s.heldout_file}: none "
                                 f"is left to train on")  # fmt: skip
            return train, held
        if s.heldout == 0:
            return prompts, []
        if s.heldout >= len(prompts):
            raise ValueError(f"{s.prompt_file} has {len(prompts)} prompts; holding out {s.heldout} for evaluation "
                             f"leaves none to train on: pass --heldout-file or fewer --eval-prompts")  # fmt: skip
        order = np.random.default_rng([s.split_seed, 11]).permutation(len(prompts))
        held_idx = set(order[: s.heldout].tolist())
        train = [p for i, p in enumerate(prompts) if i not in held_idx]
        return train, [prompts[i] for i in sorted(held_idx)]

    def train_prompts(self) -> list[str]:
        return self._split[0]

    def heldout_prompts(self) -> list[str]:
        return self._split[1]

    def notes(self) -> list[str]:
        self._split  # noqa: B018 - reads the prompt files once
        n = getattr(self, "_overlap", 0)
        if not n:
            return []
        return [f"{n} of the {len(self._split[1])} held-out prompts of {self.spec.heldout_file} are also in "
                f"{self.spec.prompt_file}: they are held out, never trained on"]  # fmt: skip

    def describe(self) -> dict:
        gen = asdict(self.generation)
        gen.pop("batch_size")
        return {"kind": "model", **asdict(self.spec), "generation": gen, "dtype": self.dtype}

    def label(self) -> str:
        return f"the model {self.spec.model} on {self.spec.prompt_file}"


def open_workload(description: dict) -> Workload:
    """Reopen a workload from its stored description (``run.json``)."""
    d = dict(description)
    kind = d.pop("kind", None)
    generation, dtype = d.pop("generation", None), d.pop("dtype", "float32")
    if kind == "toy":
        from activedpo_trainer.toyworld import load_toyworld

        world = load_toyworld(d["world"])
        return ToyWorkload(world, _generation_from(generation, world.config.max_new_tokens), dtype)
    if kind == "model":
        try:
            spec = ModelSpec(**d)
        except TypeError as e:
            raise ValueError(f"unknown field in the stored model workload: {e}") from None
        return ModelWorkload(spec, _generation_from(generation, 256), dtype)
    raise ValueError(f"unknown workload kind {kind!r}")
