"""The error a checkpoint that cannot be used raises; its own module, so that :mod:`activedpo_core.lora` (which
checks LoRA targets against a model) and :mod:`activedpo_core.checkpoint` (which records LoRA shapes) both
raise it without importing each other."""


class CheckpointError(ValueError):
    """A checkpoint cannot be used: a missing path, a corrupt manifest, an incompatible adapter."""
