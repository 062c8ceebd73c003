"""Checkpoints: a base model (any Hugging Face path or directory) plus an optional LoRA adapter.

A checkpoint is described by a small manifest, ``manifest.json`` in the checkpoint directory:

    {"id": "...", "base": "<HF id or dir>", "adapter": "<adapter dir or null>",
     "parent_id": "...", "created": "2026-01-01T00:00:00Z",
     "lora": {"r": 128, "alpha": 512, "target_modules": "auto", "init_seed": 0}}

``lora`` is for a checkpoint without an adapter (round one): the fresh adapter whose gradients are
its features, the one DPO will train. A checkpoint with an adapter is featurized by that adapter.

Every model activedpo touches, the toy world's tiny Llama included, is loaded by
:func:`load_model`, so the code that serves a real 7B model is the code under test.
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from activedpo_core.errors import CheckpointError
from activedpo_core.lora import LoraSpec

MANIFEST = "manifest.json"


@dataclass(frozen=True)
class CheckpointManifest:
    """What a checkpoint is: ``base`` plus an optional LoRA ``adapter`` directory."""

    id: str
    base: str  # Hugging Face model id or local directory
    adapter: str | None  # PEFT adapter directory; None = the base model itself
    parent_id: str | None  # checkpoint this one was trained from
    created: str  # UTC, ISO 8601
    lora: LoraSpec | None = None  # without an adapter: the fresh adapter it is featurized with (None: the server's)

    def with_lora(self, lora: LoraSpec | None) -> CheckpointManifest:
        """This checkpoint featurized with the fresh adapter ``lora``; a checkpoint with an adapter is unchanged."""
        if self.adapter is not None or lora is None:
            return self
        return CheckpointManifest(self.id, self.base, None, self.parent_id, self.created, lora)

    def to_dict(self) -> dict:
        data = {"id": self.id, "base": self.base, "adapter": self.adapter, "parent_id": self.parent_id,
                "created": self.created}  # fmt: skip
        return data | ({"lora": self.lora.to_dict()} if self.lora is not None else {})

    @classmethod
    def new(cls, base: str, adapter: str | None, parent_id: str | None, id: str | None = None) -> CheckpointManifest:
        return cls(
            id=id or f"ckpt-{uuid.uuid4().hex[:12]}",
            base=str(base),
            adapter=str(adapter) if adapter is not None else None,
            parent_id=parent_id,
            created=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        )

    def save(self, directory: str | Path) -> Path:
        """Write ``directory/manifest.json`` atomically (temp file + rename)."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        from activedpo_core.atomic import write_json

        return write_json(directory / MANIFEST, self.to_dict(), indent=2)

    @classmethod
    def load(cls, path: str | Path) -> CheckpointManifest:
        """Read a manifest from its file or from the directory holding ``manifest.json``."""
        path = Path(path)
        if path.is_dir():
            path = path / MANIFEST
        if not path.is_file():
            raise CheckpointError(f"checkpoint manifest not found: {path}")
        try:
            data = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise CheckpointError(f"corrupt checkpoint manifest {path}: {e}") from e
        if not isinstance(data, dict):
            raise CheckpointError(f"corrupt checkpoint manifest {path}: expected a JSON object")
        missing = [k for k in ("id", "base") if not data.get(k)]
        if missing:
            raise CheckpointError(f"checkpoint manifest {path} lacks {', '.join(missing)}")
        known = {"id", "base", "adapter", "parent_id", "created", "lora"}
        unknown = sorted(set(data) - known)
        if unknown:
            raise CheckpointError(f"checkpoint manifest {path} has unknown keys {unknown}")
        try:
            lora = LoraSpec.from_dict(data["lora"]) if data.get("lora") else None
        except (KeyError, TypeError, ValueError) as e:
            raise CheckpointError(f"checkpoint manifest {path}: bad 'lora' ({e})") from None
        manifest = cls(
            id=str(data["id"]),
            base=str(data["base"]),
            adapter=data.get("adapter"),
            parent_id=data.get("parent_id"),
            created=str(data.get("created", "")),
            lora=lora if data.get("adapter") is None else None,
        )
        return manifest._resolved(path.parent)

    def _resolved(self, directory: Path) -> CheckpointManifest:
        """Relative local paths in a manifest are relative to the manifest's directory."""

        def fix(p: str | None) -> str | None:
            if p is None:
                return None
            candidate = directory / p
            return str(candidate) if not Path(p).is_absolute() and candidate.exists() else p

        return CheckpointManifest(self.id, fix(self.base) or self.base, fix(self.adapter), self.parent_id, self.created,
                                  self.lora)  # fmt: skip


def resolve_checkpoint(ref: str | Path | CheckpointManifest) -> CheckpointManifest:
    """A manifest for ``ref``: a manifest file, a directory holding ``manifest.json``, or a bare
    base model (Hugging Face id or directory), which gets a manifest without an adapter."""
    if isinstance(ref, CheckpointManifest):
        return ref
    path = Path(ref)
    if (path / MANIFEST).is_file() or path.suffix == ".json":
        return CheckpointManifest.load(path)
    _check_base(str(ref))
    return CheckpointManifest(id=f"base:{ref}", base=str(ref), adapter=None, parent_id=None, created="")


@dataclass
class LoadedModel:
    """A model ready to use, with its tokenizer and the manifest it came from."""

    model: Any  # transformers PreTrainedModel, or peft PeftModel when an adapter is loaded
    tokenizer: Any
    manifest: CheckpointManifest


def resolve_device(device: str | None = None) -> str:
    """``cuda`` when present, else ``cpu``, unless ``device`` says otherwise."""
    import torch

    if device:
        return device
    return "cuda" if torch.cuda.is_available() else "cpu"


# files that hold a tokenizer's vocabulary (a fast tokenizer's tokenizer.json, BPE's vocab.json, WordPiece's
# vocab.txt, SentencePiece and tiktoken models); without one, transformers builds an empty tokenizer instead of failing
VOCAB_FILES = ("tokenizer.json", "vocab.json", "vocab.txt", "tokenizer.model", "spiece.model")


def _holds_vocabulary(name: str) -> bool:
    return (name in VOCAB_FILES or name.startswith(("tokenizer.", "vocab")) or "merges" in name
            or name.endswith((".model", ".tiktoken")))  # fmt: skip


def check_tokenizer_files(directory: str | Path, what: str = "model directory") -> None:
    """A local model directory must hold its tokenizer: one line naming the directory when it does not."""
    p = Path(directory).expanduser()
    if p.is_dir() and not any(f.is_file() and _holds_vocabulary(f.name) for f in p.iterdir()):
        raise CheckpointError(f"{what} {p} has no tokenizer ({', '.join(VOCAB_FILES[:3])}, …); save it beside the "
                              f"weights with tokenizer.save_pretrained({p.name!r})")  # fmt: skip


def _check_base(base: str) -> None:
    p = Path(base).expanduser()
    if p.exists():
        if not (p / "config.json").is_file():
            raise CheckpointError(f"base model directory {p} has no config.json; is it a Hugging Face model directory?")
        check_tokenizer_files(p, "base model directory")
        return
    # "org/name" (one slash, no leading dot or slash) may be a Hugging Face id; anything else is a missing path
    parts = base.split("/")
    if base.startswith((".", "/", "~")) or len(parts) > 2 or not all(parts):
        raise CheckpointError(f"base model path does not exist: {base}")


def _check_adapter(adapter: str) -> Path:
    p = Path(adapter).expanduser()
    if not p.is_dir():
        raise CheckpointError(f"adapter directory does not exist: {adapter}")
    if not (p / "adapter_config.json").is_file():
        raise CheckpointError(f"adapter directory {adapter} has no adapter_config.json; is it a PEFT adapter?")
    return p


def load_model(
    checkpoint: str | Path | CheckpointManifest,
    adapter: str | Path | None = None,
    dtype: str = "float32",
    device: str | None = None,
    trainable: bool = False,
) -> LoadedModel:
    """Load a checkpoint (see :func:`resolve_checkpoint`), optionally with an ``adapter`` on a bare base.

    ``dtype`` is explicit (``float32``, ``bfloat16``, ``float16``): transformers 5 otherwise loads
    the saved dtype. With ``trainable`` the adapter's parameters require gradients.
    Errors name the offending path.
    """
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    manifest = resolve_checkpoint(checkpoint)
    if adapter is not None:
        if manifest.adapter is not None:
            raise CheckpointError(f"checkpoint {manifest.id} already has an adapter; pass a base model with `adapter`")
        manifest = CheckpointManifest(
            f"{manifest.id}+{Path(adapter).name}", manifest.base, str(adapter), manifest.id, ""
        )
    base, adapter = manifest.base, manifest.adapter

    torch_dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}.get(dtype)
    if torch_dtype is None:
        raise CheckpointError(f"unsupported dtype {dtype!r}; use float32, bfloat16 or float16")
    _check_base(base)
    adapter_dir = _check_adapter(str(adapter)) if adapter is not None else None
    device = resolve_device(device)

    try:
        tokenizer = AutoTokenizer.from_pretrained(base)
        model = AutoModelForCausalLM.from_pretrained(base, dtype=torch_dtype)
    except (OSError, ValueError) as e:  # missing files, offline hub ids, unknown architectures
        raise CheckpointError(f"cannot load base model {base}: {e}") from e
    if tokenizer.eos_token is None:
        raise CheckpointError(f"the tokenizer of {base} has no EOS token, and every response ends with one: "
                              f"set eos_token in its tokenizer_config.json")  # fmt: skip
    if tokenizer.pad_token is None:  # GPT-2 and many others: padding is masked, so EOS serves
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"

    if adapter_dir is not None:
        from peft import PeftModel

        try:
            model = PeftModel.from_pretrained(model, str(adapter_dir), is_trainable=trainable)
        except (RuntimeError, ValueError, KeyError) as e:
            raise CheckpointError(f"adapter {adapter_dir} does not fit base model {base}: {e}") from e
    model.to(device)
    if not trainable:
        model.eval()
    return LoadedModel(model=model, tokenizer=tokenizer, manifest=manifest)
