"""`activedpo-client generate` and `train dpo`: sampling responses and training DPO checkpoints from files."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from activedpo_client.cli.common import (
    ChatTemplate,
    ChatTemplateOpt,
    DPOMode,
    console,
    user_errors,
)
from activedpo_core.atomic import write_jsonl
from activedpo_core.lora import LoraSpec

train_app = typer.Typer(help="Train checkpoints: DPO on labeled pairs (TRL + PEFT LoRA).")


def generate_cmd(
    checkpoint: Annotated[Path, typer.Option(help="Checkpoint directory or manifest.")],
    prompts_file: Annotated[
        Path,
        typer.Option(
            "--prompts",
            help="Prompts: a .txt file (one per line), or JSONL, JSON, CSV, Parquet or a save_to_disk directory.",
        ),
    ],
    out: Annotated[Path, typer.Option(help="Output JSONL: one {'prompt', 'responses'} row per prompt.")],
    k: Annotated[int, typer.Option("--responses", "-k", help="Responses per prompt.", min=1)] = 3,
    temperature: Annotated[float, typer.Option(min=0.0)] = 1.0,
    top_p: Annotated[float, typer.Option(min=0.0, max=1.0)] = 1.0,
    max_new_tokens: Annotated[int, typer.Option(min=1)] = 128,
    batch_size: Annotated[int, typer.Option(min=1)] = 64,
    seed: Annotated[int, typer.Option()] = 0,
    device: Annotated[str | None, typer.Option(help="cuda or cpu \\[default: cuda when present].")] = None,
    prompt_field: Annotated[str, typer.Option(help="The column holding the prompt.")] = "prompt",
    chat_template: ChatTemplateOpt = ChatTemplate.auto,
) -> None:
    """Sample K responses per prompt from a checkpoint (prompts: text lines, or any prompt file `round` reads)."""
    from activedpo_core.checkpoint import load_model
    from activedpo_core.progress import progress_bars, quiet_libraries
    from activedpo_trainer.generation import GenerationSettings, generate

    quiet_libraries()
    with user_errors():
        from activedpo_trainer.prompts import PromptRenderer, read_prompts

        if not prompts_file.exists():
            raise FileNotFoundError(f"prompts file not found: {prompts_file}")
        raw = read_prompts(prompts_file, prompt_field)
        settings = GenerationSettings(
            temperature=temperature, top_p=top_p, max_new_tokens=max_new_tokens, batch_size=batch_size
        )
        loaded = load_model(checkpoint, device=device)
        prompts = [PromptRenderer(loaded.tokenizer, chat_template.value).prompt(p) for p in raw]
        with progress_bars() as bar:
            responses = generate(
                loaded.model,
                loaded.tokenizer,
                prompts,
                k,
                settings,
                seed=seed,
                progress=lambda d, t: bar("generate", d, t),
            )
        write_jsonl(out, ({"prompt": p, "responses": rs} for p, rs in zip(prompts, responses, strict=True)))
    console.print(f"wrote {len(prompts)} prompts × {k} responses to {out}")


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


@train_app.command("dpo")
def train_dpo_cmd(
    labels: Annotated[Path, typer.Option(help="JSONL of {'prompt', 'chosen', 'rejected'} rows.")],
    base: Annotated[str, typer.Option(help="Reference model: a base/SFT checkpoint, directory or Hugging Face id.")],
    out: Annotated[Path, typer.Option(help="Directory for the new checkpoint (adapter + manifest.json).")],
    parent: Annotated[
        Path | None, typer.Option(help="Checkpoint to continue from \\[default: a fresh adapter on the base].")
    ] = None,
    mode: Annotated[
        DPOMode, typer.Option(help="continue: start from --parent's adapter; retrain: fresh adapter.")
    ] = DPOMode.continue_,
    beta: Annotated[float, typer.Option(min=0.0)] = 0.1,
    lr: Annotated[float, typer.Option(min=0.0)] = 1e-4,
    epochs: Annotated[float, typer.Option(min=0.0)] = 4.0,
    batch_size: Annotated[int, typer.Option(min=1)] = 8,
    lora_r: Annotated[int, typer.Option(min=1)] = LoraSpec.r,
    lora_alpha: Annotated[int, typer.Option(min=1)] = LoraSpec.alpha,
    seed: Annotated[int, typer.Option()] = 0,
    device: Annotated[str | None, typer.Option(help="cuda or cpu \\[default: cuda when present].")] = None,
) -> None:
    """One DPO round on labeled pairs, LoRA on the base, reference = the base model."""
    from activedpo_core.checkpoint import resolve_checkpoint
    from activedpo_core.progress import progress_bars, quiet_libraries
    from activedpo_trainer.dpo import DPOSettings, train_dpo

    quiet_libraries()
    with user_errors():
        rows = _read_rows(labels)
        base_m = resolve_checkpoint(str(base))
        parent_m = resolve_checkpoint(str(parent)) if parent is not None else None
        settings = DPOSettings(
            beta=beta,
            lr=lr,
            epochs=epochs,
            batch_size=batch_size,
            lora_r=lora_r,
            lora_alpha=lora_alpha,
            seed=seed,
            device=device,
        )
        with progress_bars() as bar:
            manifest = train_dpo(
                base_m, rows, out, settings, parent=parent_m, mode=mode.value, progress=lambda d, t: bar("dpo", d, t)
            )
    console.print(f"checkpoint {manifest.id} (parent {manifest.parent_id}) written to {out}")
