"""`activedpo-client generate` and `train dpo`: sampling responses and training DPO checkpoints from files."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from activedpo_client.cli.common import (
    ChatTemplateOpt,
    DeviceOpt,
    DPOBatchSizeOpt,
    DPOBetaOpt,
    DPOEpochsOpt,
    DPOLrOpt,
    DPOModeOpt,
    LoraAlphaOpt,
    LoraROpt,
    PromptFieldOpt,
    TargetModulesOpt,
    TemperatureOpt,
    TopPOpt,
    console,
    user_errors,
)
from activedpo_client.settings import RoundConfig
from activedpo_core.atomic import write_jsonl
from activedpo_core.lora import LoraSpec
from activedpo_core.options import renamed
from activedpo_trainer.dpo import DPOSettings
from activedpo_trainer.generation import GenerationSettings
from activedpo_trainer.workload import ModelSpec

train_app = typer.Typer(help="Train checkpoints: DPO on labeled pairs (TRL + PEFT LoRA).")


GENERATE_RENAMED = {"--prompts": "--prompt-file", "--batch-size": "--gen-batch-size"}
TRAIN_DPO_RENAMED = {"--base": "--model", "--mode": "--dpo-mode", "--beta": "--dpo-beta", "--lr": "--dpo-lr",
                     "--epochs": "--dpo-epochs", "--batch-size": "--dpo-batch-size"}  # fmt: skip


def generate_cmd(
    checkpoint: Annotated[Path, typer.Option(help="Checkpoint directory or manifest (or a base model directory).")],
    prompt_file: Annotated[
        Path,
        typer.Option(
            help="Prompts: a .txt file (one per line), or JSONL, JSON, CSV, Parquet or a save_to_disk directory.",
        ),
    ],
    out: Annotated[Path, typer.Option(help="Output JSONL: one {'prompt', 'responses'} row per prompt.")],
    responses: Annotated[int, typer.Option("--responses", "-k", help="Responses per prompt.", min=1)] = (
        RoundConfig.responses
    ),
    temperature: TemperatureOpt = GenerationSettings.temperature,
    top_p: TopPOpt = GenerationSettings.top_p,
    max_new_tokens: Annotated[int, typer.Option(help="Tokens per response.", min=1)] = (
        GenerationSettings.max_new_tokens
    ),
    gen_batch_size: Annotated[
        int, typer.Option(help="Prompts per generate() call.", min=1)
    ] = GenerationSettings.batch_size,
    seed: Annotated[int, typer.Option(help="Seed of the sampling.")] = 0,
    device: DeviceOpt = None,
    prompt_field: PromptFieldOpt = ModelSpec.prompt_field,
    chat_template: ChatTemplateOpt = ModelSpec.chat_template,
) -> None:
    """Sample K responses per prompt from a checkpoint (prompts: text lines, or any prompt file `round` reads)."""
    from activedpo_core.checkpoint import load_model
    from activedpo_core.progress import progress_bars, quiet_libraries
    from activedpo_trainer.generation import GenerationSettings, generate

    quiet_libraries()
    with user_errors():
        from activedpo_trainer.prompts import PromptRenderer, read_prompts

        if not prompt_file.exists():
            raise FileNotFoundError(f"prompts file not found: {prompt_file}")
        raw = read_prompts(prompt_file, prompt_field)
        settings = GenerationSettings(
            temperature=temperature, top_p=top_p, max_new_tokens=max_new_tokens, batch_size=gen_batch_size
        )
        loaded = load_model(checkpoint, device=device)
        prompts = [PromptRenderer(loaded.tokenizer, chat_template.value).prompt(p) for p in raw]
        with progress_bars() as bar:
            responses = generate(
                loaded.model,
                loaded.tokenizer,
                prompts,
                responses,
                settings,
                seed=seed,
                progress=lambda d, t: bar("generate", d, t),
            )
        write_jsonl(out, ({"prompt": p, "responses": rs} for p, rs in zip(prompts, responses, strict=True)))
    console.print(f"wrote {len(prompts)} prompts × {responses} responses to {out}")


def _read_rows(path: Path) -> list[dict]:
    from activedpo_trainer.prompts import iter_rows

    if not path.is_file():
        raise FileNotFoundError(f"labels file not found: {path}")
    rows = []
    for where, row in iter_rows(path):
        if str(row.get("preference", "")).upper() in ("TIE", "BOTH_BAD"):
            continue  # recorded answers (OUT.labels.jsonl keeps them), never trained on
        if not all(isinstance(row.get(k), str) for k in ("prompt", "chosen", "rejected")):
            raise ValueError(f"{path} {where}: expected an object with string 'prompt', 'chosen' and 'rejected'")
        rows.append(row)
    if not rows:
        raise ValueError(f"no labeled pairs in {path}")
    return rows


@train_app.command("dpo", cls=renamed(TRAIN_DPO_RENAMED, "activedpo-client train dpo"))
def train_dpo_cmd(
    labels: Annotated[Path, typer.Option(help="JSONL of {'prompt', 'chosen', 'rejected'} rows.")],
    model: Annotated[
        str, typer.Option(help="The reference model π_ref: a base/SFT model directory or Hugging Face id.")
    ],
    out: Annotated[Path, typer.Option(help="Directory for the new checkpoint (adapter + manifest.json).")],
    parent: Annotated[
        Path | None, typer.Option(help="Checkpoint to continue from \\[default: a fresh adapter on the base].")
    ] = None,
    dpo_mode: DPOModeOpt = DPOSettings.mode,
    dpo_beta: DPOBetaOpt = DPOSettings.beta,
    dpo_lr: DPOLrOpt = DPOSettings.lr,
    dpo_epochs: DPOEpochsOpt = DPOSettings.epochs,
    dpo_batch_size: DPOBatchSizeOpt = DPOSettings.batch_size,
    lora_r: LoraROpt = LoraSpec.r,
    lora_alpha: LoraAlphaOpt = LoraSpec.alpha,
    target_modules: TargetModulesOpt = LoraSpec.target_modules,
    seed: Annotated[int, typer.Option(help="Seed of DPO's shuffling and a fresh adapter.")] = DPOSettings.seed,
    device: DeviceOpt = None,
) -> None:
    """One DPO round on labeled pairs, LoRA on the base, reference = the base model."""
    from activedpo_core.checkpoint import resolve_checkpoint
    from activedpo_core.progress import progress_bars, quiet_libraries
    from activedpo_trainer.dpo import DPOSettings, train_dpo

    quiet_libraries()
    with user_errors():
        rows = _read_rows(labels)
        base_m = resolve_checkpoint(str(model))
        parent_m = resolve_checkpoint(str(parent)) if parent is not None else None
        settings = DPOSettings(beta=dpo_beta, lr=dpo_lr, epochs=dpo_epochs, batch_size=dpo_batch_size,
                               mode=dpo_mode.value, lora_r=lora_r, lora_alpha=lora_alpha, target_modules=target_modules,
                               seed=seed, device=device)  # fmt: skip
        with progress_bars() as bar:
            manifest = train_dpo(
                base_m, rows, out, settings, parent=parent_m, progress=lambda d, t: bar("dpo", d, t)
            )
    console.print(f"checkpoint {manifest.id} (parent {manifest.parent_id}) written to {out}")
