"""Which modules a LoRA adapter wraps: ``auto`` (PEFT's per-architecture defaults), ``all-linear`` or names."""

from __future__ import annotations

from activedpo_trainer.checkpoint import CheckpointError


def resolve_targets(targets: str | tuple[str, ...] | list[str] | None, model) -> str | list[str]:
    """``targets`` as ``LoraConfig(target_modules=...)`` takes them, for ``model``.

    ``None`` or ``"auto"`` looks up PEFT's default targets for the model's architecture
    (``gpt2: c_attn``, ``llama: q_proj, v_proj``, ``gpt_neox: query_key_value``, …) and names the
    way out when PEFT has none. A comma-separated string is a list of names.
    """
    from peft.utils import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING as DEFAULTS

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
