"""What every command group shares: consoles, error handling, options, and opening a workload."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from activedpo_core.settings import Dtype, Strategy, resolve_dtype
from activedpo_trainer.toyworld import Preset

__all__ = ["Dtype", "Strategy", "resolve_dtype"]  # shared with the server's command line; the commands import here

console = Console()
err = Console(stderr=True, soft_wrap=True)  # paths in errors stay on one line


class DPOMode(str, Enum):
    continue_ = "continue"
    retrain = "retrain"


class ChatTemplate(str, Enum):
    auto = "auto"
    on = "on"
    off = "off"


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
WorldSeedOpt = Annotated[int, typer.Option(help="Seed of the toy world (prompt split, corpus, initialisation).")]
TaskOpt = Annotated[
    str,
    typer.Option(help="The toy world's task: 'toy', 'signoff', 'mixed', or package.module:factory (see the README)."),
]
RunDirOpt = Annotated[Path, typer.Option(help="The run directory (all of a run's state; resumable).")]
ServerOpt = Annotated[str, typer.Option(envvar="ACTIVEDPO_SERVER", help="host:port, or 'embedded'.")]
# select and pool report: a server for this call, or one running elsewhere; the pool's tag on it
EmbeddedOrServerOpt = Annotated[
    str, typer.Option(envvar="ACTIVEDPO_SERVER", help="'embedded' (a server for this call) or host:port.")
]
PoolTagOpt = Annotated[str | None, typer.Option(help="Pool tag on the server \\[default: the candidates file's name].")]
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


# one option per setting, named and helped once; each command's default is the setting's field (RoundConfig.budget…)
BudgetOpt = Annotated[int, typer.Option(help="Labels per round (pairs selected for people to label).", min=1)]
DescribePairsOpt = Annotated[
    int,
    typer.Option(help="Pairs the pool report covers (the policy's margins and scores): a uniform sample of a larger "
                 "pool.", min=1, max=20_000),
]
AuditFractionOpt = Annotated[
    float,
    typer.Option(
        help="Share of each batch drawn uniformly at random from the pool (audit pairs, labeled with the rest): "
        "scored before training on them, they estimate the policy's preference accuracy without a reward model "
        "(0: off).",
        min=0.0,
        max=0.99,
    ),
]
ResponsesOpt = Annotated[int, typer.Option(help="Responses generated per prompt.", min=2)]
PromptFieldOpt = Annotated[str, typer.Option(help="The column holding the prompt.")]
TemperatureOpt = Annotated[float, typer.Option(help="Sampling temperature (0: greedy).", min=0.0)]
TopPOpt = Annotated[float, typer.Option(help="Nucleus sampling.", min=0.0, max=1.0)]
DPOModeOpt = Annotated[DPOMode, typer.Option(help="continue the last adapter, or retrain a fresh one on all labels.")]
DPOBetaOpt = Annotated[float, typer.Option(help="DPO β.", min=0.0)]
DPOLrOpt = Annotated[float, typer.Option(help="DPO learning rate.", min=0.0)]
DPOEpochsOpt = Annotated[float, typer.Option(help="DPO epochs.", min=0.0)]
DPOBatchSizeOpt = Annotated[int, typer.Option(help="DPO batch size (pairs per step).", min=1)]
LoraROpt = Annotated[int, typer.Option(help="LoRA rank: the adapter DPO trains, and round one's features.", min=1)]
LoraAlphaOpt = Annotated[int, typer.Option(help="LoRA α.", min=1)]
TargetModulesOpt = Annotated[
    str,
    typer.Option(help="LoRA targets: all-linear, auto (PEFT's defaults for the architecture), or q_proj,v_proj,…."),
]
EvalPromptsOpt = Annotated[int, typer.Option(help="Held-out prompts evaluated.", min=1)]
EvalSamplesOpt = Annotated[
    int, typer.Option(help="Responses sampled per held-out prompt for the reward (SE over prompts).", min=1)
]
EvalPairSamplesOpt = Annotated[
    int,
    typer.Option(
        help="π_ref responses per held-out prompt whose judged pairs measure the preference accuracy of the "
        "policy's implicit reward (0: off).",
        min=0,
    ),
]
StrategyOpt = Annotated[Strategy, typer.Option(help="Selection strategy: ActiveDPO, or a baseline to compare.")]
DtypeOpt = Annotated[Dtype, typer.Option(help="Model weights (auto: bfloat16 on a GPU that has it, else float32).")]
ProjDimOpt = Annotated[int, typer.Option(help="Embedded server: projection dimension d.", min=1)]
LsWaitOpt = Annotated[
    float,
    typer.Option(
        help="--annotator label-studio: seconds to wait for the batch to be labeled (0: push it and return; run the "
        "same command again to collect). Not all done by then: exit 3.",
        min=0,
    ),
]
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
