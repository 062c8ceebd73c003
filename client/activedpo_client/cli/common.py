"""What every command group shares: consoles, error handling, options, and opening a workload."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

console = Console()
err = Console(stderr=True, soft_wrap=True)  # paths in errors stay on one line


class Preset(str, Enum):
    default = "default"
    tiny = "tiny"


class DPOMode(str, Enum):
    continue_ = "continue"
    retrain = "retrain"


class ChatTemplate(str, Enum):
    auto = "auto"
    on = "on"
    off = "off"


class Dtype(str, Enum):
    auto = "auto"
    float32 = "float32"
    bfloat16 = "bfloat16"
    float16 = "float16"


@contextmanager
def user_errors() -> Iterator[None]:
    """Turn the errors a user can fix (bad paths, bad input) into one red line and exit code 2."""
    from activedpo_client.remote import ClientError
    from activedpo_core.checkpoint import CheckpointError

    try:
        yield
    except (CheckpointError, ClientError, FileNotFoundError, ValueError) as e:
        err.print(f"[bold red]error:[/] {e}")
        raise typer.Exit(2) from None
    except OSError as e:  # disk full, permissions: say which file
        err.print(
            f"[bold red]error:[/] {e.strerror or e}: {e.filename or ''}; free space or fix permissions, then re-run"
        )
        raise typer.Exit(2) from None


@contextmanager
def terminate_as_interrupt() -> Iterator[None]:
    """SIGTERM (``kill``, ``docker stop``, systemd) stops a long-running loop as Ctrl-C does, so it cleans up
    the same way; the previous handler is restored on leaving."""
    import signal

    def stop(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


CacheDir = Annotated[
    Path | None,
    typer.Option(help="Cache directory for toy worlds \\[default: $ACTIVEDPO_CACHE or ~/.cache/activedpo]."),
]
WorldDir = Annotated[Path | None, typer.Option("--world", help="A built toy world's directory (overrides --preset).")]
PresetOpt = Annotated[Preset, typer.Option(help="Toy world size: 'default', or 'tiny' for tests.")]
SeedOpt = Annotated[int, typer.Option(help="Seed of the toy world (prompt split, corpus, initialisation).")]
TaskOpt = Annotated[
    str,
    typer.Option(help="The toy world's task: 'toy', 'signoff', 'mixed', or package.module:factory (see the README)."),
]
RunDirOpt = Annotated[Path, typer.Option(help="The run directory (all of a run's state; resumable).")]
ServerOpt = Annotated[str, typer.Option(envvar="ACTIVEDPO_SERVER", help="host:port, or 'embedded'.")]
ServerBaseOpt = Annotated[
    str | None,
    typer.Option(
        help="Remote server: the base model as that server already has it (a path under its --checkpoint-root or "
        "a Hugging Face id in its cache) \\[default: a local base model directory is uploaded to it, once]."
    ),
]
TokenOpt = Annotated[str | None, typer.Option(envvar="ACTIVEDPO_TOKEN", help="The server's bearer token.")]
TlsCaOpt = Annotated[Path | None, typer.Option(help="Use TLS, trusting this CA certificate.")]
LsUrlOpt = Annotated[
    str | None, typer.Option(envvar="LABEL_STUDIO_URL", help="Label Studio's address (--annotator label-studio).")
]
LsKeyOpt = Annotated[
    str | None, typer.Option(envvar="LABEL_STUDIO_API_KEY", help="Label Studio's API token (never written to disk).")
]
LsProjectOpt = Annotated[
    str | None, typer.Option(help="The Label Studio project: an id, or a title created on first use.")
]
LsWebhookPortOpt = Annotated[
    int | None,
    typer.Option(
        help="Listen on this port for Label Studio's annotation webhooks, which wake the poller (polling alone "
        "is correct; this only picks labels up sooner).",
        min=0,
        max=65535,
    ),
]
LsWebhookUrlOpt = Annotated[
    str | None,
    typer.Option(help="The webhook address Label Studio posts to \\[default: http://127.0.0.1:PORT/]."),
]
LsInstructionsOpt = Annotated[
    Path | None,
    typer.Option(
        help="Instructions shown to labelers before they start (Markdown, or HTML for .html) in a Label Studio "
        "project created here \\[default: what \"better\" means, ties, both unacceptable, skip, hotkeys].",
        exists=True,
        dir_okay=False,
    ),
]
LsOverlapOpt = Annotated[
    int,
    typer.Option(help="People asked to answer each pair in a Label Studio project created here (its overlap).", min=1),
]
ChatTemplateOpt = Annotated[
    ChatTemplate, typer.Option(help="Render prompts with the tokenizer's chat template (auto: when it has one).")
]
DeviceOpt = Annotated[str | None, typer.Option(help="cuda or cpu \\[default: cuda when present].")]


def resolve_dtype(dtype: Dtype) -> str:
    """``auto``: bfloat16 on a GPU that supports it, else float32 (CPUs train and featurize in float32)."""
    if dtype != Dtype.auto:
        return dtype.value
    import torch

    return "bfloat16" if torch.cuda.is_available() and torch.cuda.is_bf16_supported() else "float32"


def open_world(world: Path | None, preset: Preset, seed: int, cache_dir: Path | None, task: str = "toy"):
    """Open ``--world``, or the cached world for ``--preset``/``--seed``/``--task``, building it when missing."""
    from activedpo_core.progress import progress_bars, quiet_libraries
    from activedpo_trainer.toyworld import ToyWorldConfig, build_toyworld, load_toyworld, world_dir

    if world is not None:
        return load_toyworld(world)
    config = ToyWorldConfig.preset(preset.value, seed=seed, task=task)
    if not (world_dir(config, cache_dir) / "world.json").is_file():
        err.print(f"building the {preset.value} toy world (task {task}, seed {seed}) first …")
    quiet_libraries()
    with progress_bars(transient=True) as bar:
        return build_toyworld(config, cache_dir=cache_dir, progress=bar)


def server_for(run_dir: Path, server: str, token: str | None, tls_ca: Path | None):
    """(ExitStack, client) for ``server``; for ``embedded``, the run's own server started for the call."""
    import json
    from contextlib import ExitStack

    from activedpo_client.remote import Connection, EmbeddedServer, SelectorClient

    stack = ExitStack()
    run_file = run_dir / "run.json"
    last = json.loads(run_file.read_text()).get("server", "") if run_file.is_file() else ""
    if server == "embedded" and last not in ("", "embedded") and not (run_dir / "server").is_dir():
        server = last  # the run's rounds ran against a remote server: ask that one
    embedded = server == "embedded"
    if embedded:
        if not (run_dir / "server").is_dir():
            raise FileNotFoundError(f"{run_dir} has no embedded server state; run `activedpo-client round` first")
        args_file = run_dir / "server" / "args.json"
        args = json.loads(args_file.read_text()) if args_file.exists() else []
        server = stack.enter_context(EmbeddedServer(run_dir / "server", args=args)).target
    project = json.loads(run_file.read_text()).get("project", "") if run_file.is_file() else ""
    connection = Connection(server, token=token, tls_ca=tls_ca, shares_disk=embedded)
    client = stack.enter_context(SelectorClient(connection, project=project))
    client.wait_ready()
    return stack, client
