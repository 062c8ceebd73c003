"""``activedpo-server``: the selection server's command line.

Heavy imports (torch, transformers) happen inside commands so that ``--help`` is instant.
"""

from __future__ import annotations

import json
import logging
from typing import Annotated

import typer
from rich.console import Console

from activedpo_server import __version__

app = typer.Typer(
    name="activedpo-server",
    help="The ActiveDPO selection server: loads a LoRA checkpoint, featurizes candidates, selects pairs to label.",
    no_args_is_help=True,
    add_completion=False,
)
checkpoint_app = typer.Typer(help="Inspect the checkpoints the server would load.")
app.add_typer(checkpoint_app, name="checkpoint")

console = Console()
err = Console(stderr=True, soft_wrap=True)  # paths in errors stay on one line


def _version(value: bool) -> None:
    if value:
        console.print(f"activedpo-server {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log at INFO level.")] = False,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )


@checkpoint_app.command("check")
def checkpoint_check(
    checkpoint: Annotated[str, typer.Argument(help="Checkpoint directory, manifest, or base model path.")],
    device: Annotated[str | None, typer.Option(help="cuda or cpu [default: cuda when present].")] = None,
    dtype: Annotated[str, typer.Option(help="float32, bfloat16 or float16.")] = "float32",
) -> None:
    """Load a checkpoint exactly as the server will, and report what it holds."""
    from activedpo_trainer.checkpoint import CheckpointError, load_model
    from activedpo_trainer.progress import quiet_libraries

    quiet_libraries()
    try:
        loaded = load_model(checkpoint, dtype=dtype, device=device)
    except (CheckpointError, FileNotFoundError, ValueError) as e:
        err.print(f"[bold red]error:[/] {e}")
        raise typer.Exit(2) from None
    model, m = loaded.model, loaded.manifest
    lora = sum(p.numel() for n, p in model.named_parameters() if "lora_" in n)
    total = sum(p.numel() for p in model.parameters())
    report = {
        "id": m.id,
        "base": m.base,
        "adapter": m.adapter,
        "parent_id": m.parent_id,
        "parameters": total,
        "lora_parameters": lora,
        "device": str(next(model.parameters()).device),
        "dtype": dtype,
    }
    console.print_json(json.dumps(report))
