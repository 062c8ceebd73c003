"""LoRA adapters' shape (:class:`LoraSpec`) and which modules they wrap: ``auto`` (PEFT's per-architecture
defaults), ``all-linear`` or names."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class LoraSpec:
    """A LoRA adapter's shape: what DPO trains, and the fresh adapter a checkpoint without one is featurized with."""

    r: int = 128  # the paper's LoRA rank
    alpha: int = 512
    target_modules: str | tuple[str, ...] = "all-linear"  # or "auto" (PEFT's defaults) or names
    init_seed: int = 0  # a fresh adapter's A is drawn from this seed on the CPU: round-one features reproduce

    def __post_init__(self) -> None:
        if self.r < 1 or self.alpha < 1:
            raise ValueError(f"LoRA rank and alpha must be positive, got r={self.r}, alpha={self.alpha}")
        t = self.target_modules
        if isinstance(t, list):
            object.__setattr__(self, "target_modules", tuple(t))
        names = t.split(",") if isinstance(t, str) else list(t)
        if not names or any(not isinstance(n, str) or not n.strip() for n in names):
            raise ValueError(f"LoRA target modules must be auto, all-linear or a comma list, got {t!r}")

    @property
    def targets(self) -> str:
        """The targets as one string: ``auto``, ``all-linear`` or ``q_proj,v_proj``."""
        t = self.target_modules
        return t if isinstance(t, str) else ",".join(t)

    def key(self) -> str:
        return f"lora(r={self.r},alpha={self.alpha},targets={self.targets},seed={self.init_seed})"

    def to_dict(self) -> dict:
        return {"r": self.r, "alpha": self.alpha, "target_modules": self.targets, "init_seed": self.init_seed}

    @classmethod
    def from_dict(cls, data: dict) -> LoraSpec:
        return cls(int(data["r"]), int(data["alpha"]), str(data["target_modules"]), int(data.get("init_seed", 0)))

    def describe(self) -> str:
        """One line for people: ``r=4, α=8, targets auto``."""
        return f"r={self.r}, α={self.alpha}, targets {self.targets}"


def resolve_targets(targets: str | tuple[str, ...] | list[str] | None, model) -> str | list[str]:
    """``targets`` as ``LoraConfig(target_modules=...)`` takes them, for ``model``.

    ``None`` or ``"auto"`` looks up PEFT's default targets for the model's architecture
    (``gpt2: c_attn``, ``llama: q_proj, v_proj``, ``gpt_neox: query_key_value``, …) and names the
    way out when PEFT has none. A comma-separated string is a list of names.
    """
    from peft.utils import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING as DEFAULTS

    from activedpo_core.errors import CheckpointError

    if targets is None or targets == "auto":
        model_type = getattr(getattr(model, "config", None), "model_type", None)
        if model_type not in DEFAULTS:
            raise CheckpointError(
                f"PEFT has no default LoRA targets for model type {model_type!r}; pass --target-modules "
                f"all-linear or the names of its projection layers (e.g. q_proj,v_proj)"
            )
        return list(DEFAULTS[model_type])
    if isinstance(targets, str):
        return targets if targets == "all-linear" else [t.strip() for t in targets.split(",") if t.strip()]
    return list(targets)


def fan_in_fan_out(model, targets: str | list[str]) -> bool:
    """True when the targets wrap GPT-2-style ``Conv1D`` layers (weights stored [in, out]), as PEFT needs told."""
    from transformers.pytorch_utils import Conv1D

    for name, module in model.named_modules():
        if isinstance(module, Conv1D) and (
            targets == "all-linear" or any(name == t or name.endswith("." + t) for t in targets)
        ):
            return True
    return False
