"""DPO rounds: TRL's ``DPOTrainer`` on a LoRA adapter, with pi_ref = the base model.

Each round trains on all labels so far and writes a new checkpoint (adapter + manifest).
Two modes:

* ``continue`` — start from the parent checkpoint's adapter;
* ``retrain`` — start a fresh adapter from the base.

In both, the reference policy is the base (SFT) model with the adapter disabled, never a
frozen copy of the previous adapter. TRL, handed a ``PeftModel`` that already carries an
adapter, adds a ``"ref"`` adapter copying it; we delete that adapter before training, so
TRL's reference pass falls back to disabling adapters (see shared STACK.md).
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from activedpo_core.checkpoint import CheckpointError, CheckpointManifest, load_model, resolve_device
from activedpo_core.lora import LoraSpec

MODES = ("continue", "retrain")


@dataclass(frozen=True)
class DPOSettings:
    """DPO hyper-parameters; the defaults are the ActiveDPO paper's."""

    beta: float = 0.1
    lr: float = 1e-4
    epochs: float = 4.0
    batch_size: int = 8
    mode: str = "continue"  # continue the parent's adapter, or "retrain" a fresh one on all labels so far
    lora_r: int = LoraSpec.r
    lora_alpha: int = LoraSpec.alpha
    lora_dropout: float = 0.0  # dropout makes per-example features noisy; the paper does not use it
    target_modules: str | tuple[str, ...] | None = LoraSpec.target_modules  # all-linear: all but the LM head
    max_length: int | None = 1024  # tokens of prompt + response; longer rows are truncated by TRL
    warmup_steps: float = 0.0  # an int counts steps, a float in (0, 1) is a fraction of them
    seed: int = 0
    dtype: str = "float32"
    device: str | None = None  # cuda when present, else cpu
    extra: dict = field(default_factory=dict)  # any further DPOConfig field, passed through

    def __post_init__(self) -> None:
        if self.beta <= 0 or self.lr <= 0 or self.epochs <= 0:
            raise ValueError("beta, lr and epochs must be positive")
        if self.mode not in MODES:
            raise ValueError(f"DPO mode must be continue or retrain, got {self.mode!r}")
        if self.lora_r < 1 or self.lora_alpha <= 0 or self.batch_size < 1:
            raise ValueError("lora_r, lora_alpha and batch_size must be positive")


def _lora_config(settings: DPOSettings, model):
    from peft import LoraConfig

    from activedpo_core.lora import fan_in_fan_out, resolve_targets

    targets = resolve_targets(settings.target_modules, model)
    return LoraConfig(
        r=settings.lora_r,
        lora_alpha=settings.lora_alpha,
        lora_dropout=settings.lora_dropout,
        target_modules=targets,
        fan_in_fan_out=fan_in_fan_out(model, targets),
        bias="none",
        task_type="CAUSAL_LM",
    )


def _canonical_base(base: str) -> str:
    """Local directories become absolute paths, so a manifest works from any working directory."""
    p = Path(base).expanduser()
    return str(p.resolve()) if p.exists() else base


def _same_base(a: str, b: str) -> bool:
    return _canonical_base(a) == _canonical_base(b)


def _validate_rows(rows: Sequence[dict]) -> list[dict]:
    if not rows:
        raise ValueError("no labeled pairs to train on")
    clean = []
    for i, row in enumerate(rows):
        missing = [k for k in ("prompt", "chosen", "rejected") if not isinstance(row.get(k), str)]
        if missing:
            raise ValueError(f"pair {i} lacks string field(s) {', '.join(missing)}")
        clean.append({"prompt": row["prompt"], "chosen": row["chosen"], "rejected": row["rejected"]})
    return clean


def build_dpo_trainer(
    base: CheckpointManifest,
    rows: Sequence[dict],
    output_dir: str | Path,
    settings: DPOSettings | None = None,
    parent: CheckpointManifest | None = None,
    mode: str | None = None,
    progress: Callable[[int, int], None] | None = None,
):
    """A ready-to-train TRL ``DPOTrainer`` whose reference policy is ``base`` (adapter disabled).

    ``base`` is the reference checkpoint (a base model without an adapter); in ``continue``
    mode training starts from ``parent``'s adapter, otherwise from a fresh one. ``rows`` are
    ``{"prompt", "chosen", "rejected"}`` dicts whose chosen/rejected continue the prompt.
    """
    from datasets import Dataset
    from peft import PeftModel
    from transformers import TrainerCallback
    from transformers.trainer_callback import PrinterCallback
    from trl import DPOConfig, DPOTrainer

    settings = settings or DPOSettings()
    mode = mode or settings.mode
    if mode not in MODES:
        raise ValueError(f"unknown DPO mode {mode!r}; choose one of {', '.join(MODES)}")
    if base.adapter is not None:
        raise CheckpointError(f"the reference checkpoint {base.id} must be a base model, but it has an adapter")
    if parent is not None and not _same_base(parent.base, base.base):
        raise CheckpointError(f"parent checkpoint {parent.id} is on base {parent.base}, not {base.base}")
    data = Dataset.from_list(_validate_rows(rows))
    device = resolve_device(settings.device)

    loaded = load_model(base, dtype=settings.dtype, device=device, trainable=True)
    model, tokenizer = loaded.model, loaded.tokenizer
    tokenizer.padding_side = "right"
    start_from = parent.adapter if (mode == "continue" and parent is not None) else None
    peft_config = None
    if start_from is not None:
        model = PeftModel.from_pretrained(model, start_from, is_trainable=True)
    else:
        peft_config = _lora_config(settings, model)

    class _Progress(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if progress:
                progress(state.global_step, state.max_steps)

    args = DPOConfig(
        output_dir=str(output_dir),
        beta=settings.beta,
        learning_rate=settings.lr,
        num_train_epochs=settings.epochs,
        per_device_train_batch_size=settings.batch_size,
        max_length=settings.max_length,
        warmup_steps=settings.warmup_steps,
        seed=settings.seed,
        data_seed=settings.seed,
        bf16=False,  # TRL's default is bf16 mixed precision; features and tests want fp32
        use_cpu=device == "cpu",
        gradient_checkpointing=False,
        report_to="none",
        save_strategy="no",
        logging_steps=10,
        disable_tqdm=True,
        dataloader_num_workers=0,
        **settings.extra,
    )
    trainer = DPOTrainer(
        model=model,
        ref_model=None,
        args=args,
        train_dataset=data,
        processing_class=tokenizer,
        peft_config=peft_config,
        callbacks=[_Progress()],
    )
    trainer.remove_callback(PrinterCallback)  # our progress callback reports instead of printed log dicts
    if "ref" in trainer.model.peft_config:  # TRL copied the parent adapter as reference: use the base instead
        trainer.model.delete_adapter("ref")
        trainer.model.set_adapter("default")
    return trainer


def train_dpo(
    base: CheckpointManifest,
    rows: Sequence[dict],
    out_dir: str | Path,
    settings: DPOSettings | None = None,
    parent: CheckpointManifest | None = None,
    mode: str | None = None,  # default: settings.mode
    checkpoint_id: str | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> CheckpointManifest:
    """Train one DPO round (see :func:`build_dpo_trainer`) and write the new checkpoint:
    ``out_dir/adapter`` and ``out_dir/manifest.json``. Returns its manifest."""
    out_dir = Path(out_dir)
    work = Path(tempfile.mkdtemp(prefix="activedpo-dpo-"))
    try:
        trainer = build_dpo_trainer(base, rows, work, settings, parent, mode, progress)
        trainer.train()
        adapter_dir = out_dir / "adapter"
        if adapter_dir.exists():
            shutil.rmtree(adapter_dir)
        trainer.model.save_pretrained(str(adapter_dir))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    manifest = CheckpointManifest.new(
        base=_canonical_base(base.base),
        adapter=str(adapter_dir.resolve()),
        parent_id=parent.id if parent else base.id,
        id=checkpoint_id,
    )
    manifest.save(out_dir)
    return manifest
