"""``activedpo-client``: rounds on your own model or the toy world, offline selection, generation, DPO, evaluation.

One module per command group (``rounds``, ``select``, ``jobs``, ``toyworld``); heavy imports
(torch, transformers, trl) happen inside commands so that ``--help`` is instant.
"""

from __future__ import annotations

import logging
from typing import Annotated

import typer

from activedpo_client import __version__
from activedpo_client.cli import jobs, labelstudio, pool, rounds, select, toyworld
from activedpo_client.cli.bench import ListsCommand, bench_cmd
from activedpo_client.cli.common import console
from activedpo_core.options import renamed

app = typer.Typer(
    name="activedpo-client",
    help="Drive ActiveDPO on your own model or the toy world: rounds, offline selection, generation, DPO, evaluation.",
    no_args_is_help=True,
    add_completion=False,
)


def _version(value: bool) -> None:
    if value:
        console.print(f"activedpo-client {__version__}")
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


app.command("round")(rounds.round_cmd)
app.command("select")(select.select_cmd)
app.command("status")(rounds.status_cmd)
app.command("export")(rounds.export_cmd)
app.command("quickstart")(rounds.quickstart_cmd)
app.command("bench", cls=ListsCommand)(bench_cmd)
app.command("generate", cls=renamed(jobs.GENERATE_RENAMED, "activedpo-client generate"))(jobs.generate_cmd)
app.command("eval", cls=renamed(toyworld.EVAL_RENAMED, "activedpo-client eval"))(toyworld.eval_cmd)
app.add_typer(toyworld.app, name="toyworld")
app.add_typer(jobs.train_app, name="train")
app.add_typer(rounds.labels_app, name="labels")
app.add_typer(labelstudio.app, name="labelstudio")
app.add_typer(pool.app, name="pool")


def program() -> None:
    """The ``activedpo-client`` program: the app, then an exit without the interpreter's teardown (about a
    second with torch and gRPC loaded; :mod:`activedpo_core.program`)."""
    from activedpo_core.program import run

    run(app)
