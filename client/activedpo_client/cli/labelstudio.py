"""``activedpo-client labelstudio``: keep a Label Studio project supplied with pairs to label."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from activedpo_client.cli.common import (
    LsInstructionsOpt,
    LsKeyOpt,
    LsOverlapOpt,
    LsUrlOpt,
    LsWebhookPortOpt,
    LsWebhookUrlOpt,
    Strategy,
    TlsCaOpt,
    TokenOpt,
    err,
    terminate_as_interrupt,
    user_errors,
)
from activedpo_client.labelstudio import ProjectSettings
from activedpo_client.settings import RoundConfig
from activedpo_core.options import ConfigOpt, renamed, write_config

app = typer.Typer(help="A live Label Studio project fed by the selection server.", no_args_is_help=True)


SYNC_RENAMED = {"--state": "--state-file", "--project": "--server-project"}  # old names, read for one release


@app.command("sync", cls=renamed(SYNC_RENAMED, "activedpo-client labelstudio sync"))
def sync_cmd(
    ctx: typer.Context,
    server: Annotated[str, typer.Option(envvar="ACTIVEDPO_SERVER", help="The selection server, host:port.")],
    ls_project: Annotated[str, typer.Option(help="The Label Studio project: an id, or a title created on first use.")],
    budget: Annotated[
        int, typer.Option(help="Keep this many tasks open (unlabeled) in the project.", min=1)
    ] = RoundConfig.budget,
    every: Annotated[float, typer.Option(help="Seconds between passes.")] = 60.0,
    max_backoff: Annotated[
        float, typer.Option(help="After an error, retry in 1 s, then 2, 4, … at most this many seconds.", min=1)
    ] = 300.0,
    once: Annotated[bool, typer.Option("--once", help="One pass, then exit (errors exit 2).")] = False,
    state_file: Annotated[
        Path,
        typer.Option(
            help="Where the loop keeps its progress (request counter, submitted annotations); the options it runs "
            "with go beside it (STATE_FILE's name + .config.toml)."
        ),
    ] = Path("labelstudio-sync.json"),
    strategy: Annotated[Strategy | None, typer.Option(help="Selection strategy \\[default: the server's].")] = None,
    pool: Annotated[str | None, typer.Option(help="Only candidates with this pool tag \\[default: all].")] = None,
    server_project: Annotated[
        str, typer.Option(help="The selection server's project \\[default: its default one].")
    ] = "",
    token: TokenOpt = None,
    tls_ca: TlsCaOpt = None,
    ls_url: LsUrlOpt = None,
    ls_api_key: LsKeyOpt = None,
    ls_webhook_port: LsWebhookPortOpt = None,
    ls_webhook_url: LsWebhookUrlOpt = None,
    ls_instructions: LsInstructionsOpt = None,
    ls_overlap: LsOverlapOpt = ProjectSettings.overlap,
    config: ConfigOpt = None,
) -> None:
    """Whenever fewer than --budget tasks are open, select more pairs and push them; submit finished annotations.

    Runs until Ctrl-C or SIGTERM (or one pass with --once). Restart it at any time, even after kill -9: no task
    and no label is ever duplicated.
    """
    from contextlib import nullcontext

    from activedpo_client.labelstudio import LabelStudioProject, WebhookReceiver
    from activedpo_client.lssync import sync_loop
    from activedpo_client.remote import Connection, SelectorClient

    def say(message: str) -> None:  # one line, flushed: a log redirected to a file is readable as it grows
        err.print(message)
        err.file.flush()

    with user_errors(), terminate_as_interrupt():
        write_config(state_file.with_name(state_file.stem + ".config.toml"), ctx.params,
                     "activedpo-client labelstudio sync")  # fmt: skip
        ls = LabelStudioProject(ls_project, ls_url, ls_api_key, ProjectSettings(ls_instructions, ls_overlap))
        hooks = WebhookReceiver(ls, ls_webhook_port, ls_webhook_url) if ls_webhook_port is not None else nullcontext()
        connection = Connection(server, token=token, tls_ca=tls_ca)
        with SelectorClient(connection, project=server_project) as client, hooks as rx:
            if rx is not None:
                say(f"Label Studio's webhooks wake this loop ({rx.url})")
            try:
                wake = rx.wake if rx is not None else None
                sync_loop(ls, client, state_file, budget, every, once=once, say=say, wake=wake,
                          max_backoff=max_backoff, reconnect=lambda: SelectorClient(connection, project=server_project),
                          strategy=strategy.value if strategy else "", pool=pool or "")  # fmt: skip
            except KeyboardInterrupt:
                say("stopped")
