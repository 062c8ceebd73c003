"""`activedpo-client select`: pick the pairs to label from an existing pool, with no generation and no training."""

from __future__ import annotations

import hashlib
import time
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from activedpo_client.cli.common import (
    ChatTemplateOpt,
    DeviceOpt,
    Dtype,
    DtypeOpt,
    LoraAlphaOpt,
    LoraROpt,
    LsInstructionsOpt,
    LsKeyOpt,
    LsOverlapOpt,
    LsProjectOpt,
    LsUrlOpt,
    LsWaitOpt,
    LsWebhookPortOpt,
    LsWebhookUrlOpt,
    ProjDimOpt,
    ServerBaseOpt,
    StrategyOpt,
    TargetModulesOpt,
    TlsCaOpt,
    TokenOpt,
    console,
    err,
    resolve_dtype,
    user_errors,
)
from activedpo_client.labelstudio import LabelStudioProject, ProjectSettings
from activedpo_client.settings import LabelStudioSpec, ServerSpec
from activedpo_core.lora import LoraSpec
from activedpo_core.options import ConfigOpt, write_config
from activedpo_core.settings import ProjectionSpec, SelectionSettings
from activedpo_trainer.workload import ModelSpec


class SelectAnnotator(str, Enum):
    file = "file"
    label_studio = "label-studio"


def select_cmd(
    ctx: typer.Context,
    model: Annotated[str, typer.Option(help="The policy (base model directory or hub id, or a checkpoint dir).")],
    candidates: Annotated[
        Path,
        typer.Option(
            help="Pool file: {prompt, responses} or {prompt, chosen, rejected} / {prompt, response_a, response_b} "
            "rows (JSONL, JSON, CSV, Parquet or a save_to_disk directory)."
        ),
    ],
    budget: Annotated[int, typer.Option(help="Pairs to select.", min=1)],
    out: Annotated[Path, typer.Option(help="Output JSONL: one selected pair per line (the rows people label).")],
    labeled: Annotated[
        Path | None,
        typer.Option(
            help="Labels so far, in any form: an earlier --out with {pair_id, preference} per row, TRL "
            "{prompt, chosen, rejected} rows (e.g. OUT.labels.jsonl or an export), or a Label Studio export. "
            "V is conditioned on them and their pairs are never offered again."
        ),
    ] = None,
    strategy: StrategyOpt = SelectionSettings.strategy,
    server: Annotated[
        str, typer.Option(envvar="ACTIVEDPO_SERVER", help="'embedded' (a server for this call) or host:port.")
    ] = ServerSpec.server,
    state_dir: Annotated[
        Path | None,
        typer.Option(help="Embedded server's state (a re-run reuses its features) \\[default: OUT's name + .server]."),
    ] = None,
    pool: Annotated[
        str | None, typer.Option(help="Pool tag on the server \\[default: the candidates file's name].")
    ] = None,
    chat_template: ChatTemplateOpt = ModelSpec.chat_template,
    proj_dim: ProjDimOpt = ProjectionSpec.dim,
    lora_r: LoraROpt = LoraSpec.r,
    lora_alpha: LoraAlphaOpt = LoraSpec.alpha,
    target_modules: TargetModulesOpt = LoraSpec.target_modules,
    dtype: DtypeOpt = Dtype.auto,
    device: DeviceOpt = None,
    seed: Annotated[int, typer.Option(help="Seed of the random strategy.")] = SelectionSettings.seed,
    lease_seconds: Annotated[
        int, typer.Option(help="How long the selected pairs are withheld from other selections.", min=1)
    ] = SelectionSettings.lease_seconds,
    server_base: ServerBaseOpt = None,
    token: TokenOpt = None,
    tls_ca: TlsCaOpt = None,
    annotator: Annotated[
        SelectAnnotator,
        typer.Option(
            help="file (write the batch out for labeling) or label-studio (push it as tasks to --ls-project and "
            "collect the labels)."
        ),
    ] = SelectAnnotator.file,
    ls_project: LsProjectOpt = None,
    ls_url: LsUrlOpt = None,
    ls_api_key: LsKeyOpt = None,
    ls_wait: LsWaitOpt = LabelStudioSpec.wait,
    ls_webhook_port: LsWebhookPortOpt = None,
    ls_webhook_url: LsWebhookUrlOpt = None,
    ls_instructions: LsInstructionsOpt = None,
    ls_overlap: LsOverlapOpt = ProjectSettings.overlap,
    config: ConfigOpt = None,
) -> None:
    """Select --budget pairs to label from an existing pool of candidates (no generation, no training).

    With --annotator label-studio the pairs become tasks in a Label Studio project; once every task is
    labeled (or skipped) the labels go to the server and to OUT.labels.jsonl ({prompt, chosen, rejected}
    rows for DPO). Running the same command again never imports the tasks twice. OUT.config.toml records the
    options resolved (`select --config OUT.config.toml` runs the same selection).
    """
    from contextlib import ExitStack

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from activedpo_client.labelfiles import write_label_files
    from activedpo_client.pool import add_pool, import_labeled, read_labeled, read_pool
    from activedpo_client.remote import Connection, EmbeddedServer, SelectorClient
    from activedpo_client.rounds import ensure_server_checkpoint
    from activedpo_core.checkpoint import resolve_checkpoint
    from activedpo_core.progress import progress_bars, quiet_libraries
    from activedpo_trainer.prompts import PromptRenderer

    quiet_libraries()
    t0 = time.perf_counter()
    with user_errors(), ExitStack() as stack:
        lora = LoraSpec(lora_r, lora_alpha, target_modules)  # the adapter round one's features are the gradient of
        ls = None
        if annotator == SelectAnnotator.label_studio:
            if not ls_project:
                raise ValueError("--annotator label-studio needs --ls-project (an id, or a title created on first use)")
            settings = ProjectSettings(ls_instructions, ls_overlap)
            ls = LabelStudioProject(ls_project, ls_url, ls_api_key, settings)  # checked before any work
        if not candidates.exists():
            raise FileNotFoundError(f"--candidates not found: {candidates}")
        if labeled is not None and not labeled.exists():
            raise FileNotFoundError(f"--labeled not found: {labeled}")
        ref = str(Path(model).resolve()) if Path(model).exists() else model
        write_config(out.with_name(out.stem + ".config.toml"), ctx.params, "activedpo-client select")
        manifest = resolve_checkpoint(ref)
        from transformers import AutoTokenizer

        try:
            tokenizer = AutoTokenizer.from_pretrained(manifest.base)
        except (OSError, ValueError) as e:
            raise ValueError(f"cannot load the tokenizer of {manifest.base}: {e}") from None
        render = PromptRenderer(tokenizer, chat_template.value)
        # the inputs are read before a server starts: a wrong column is one line, with nothing left behind
        if next(read_pool(candidates, render, {}), None) is None:
            raise ValueError(f"{candidates} holds no usable pair (each row needs two distinct responses)")
        answers, answer_stats = [], {}
        if labeled is not None:
            answers = list(read_labeled(labeled, render, answer_stats))
        state = None
        if server != "embedded" and state_dir is not None:
            err.print(f"[yellow]note:[/] --state-dir is an embedded server's; the server at {server} keeps its own")
        if server == "embedded":
            state = state_dir or out.with_name(out.stem + ".server")
            args = [
                "--proj-dim",
                str(proj_dim),
                "--lora-r",
                str(lora_r),
                "--lora-alpha",
                str(lora_alpha),
                "--target-modules",
                target_modules,
                "--dtype",
                resolve_dtype(dtype),
            ]
            if device:
                args += ["--device", device]
            for path in {Path(p).resolve() for p in (ref, manifest.base, manifest.adapter) if p and Path(p).exists()}:
                args += ["--checkpoint-root", str(path)]  # what it may load by path: this checkpoint only
            args.append("--allow-downloads")  # the user's own process: a hub id may download (unless offline)
            err.print(f"starting the embedded selection server (state in {state}) …")
            server = stack.enter_context(EmbeddedServer(state, ref, args=args, log=state / "server.log")).target
        embedded = state is not None
        connection = Connection(server, token=token, tls_ca=tls_ca, shares_disk=embedded, server_base=server_base)
        client = stack.enter_context(SelectorClient(connection))
        client.wait_ready(say=err.print)
        with progress_bars(transient=True) as bar:
            ensure_server_checkpoint(client, ref, lora, bar, say=err.print)
        if labeled is not None:
            got = import_labeled(client, answers, labeled, answer_stats.get("unanswered", 0))
            unanswered = f"; {got.unanswered} rows without an answer yet" if got.unanswered else ""
            err.print(f"{got.labels} labels from {labeled} condition the selection: {got.matched} on pairs the "
                      f"server holds, {got.added} added as labeled pairs, {got.replayed} already recorded"
                      f"{unanswered}")  # fmt: skip
        tag = pool or candidates.name
        stats: dict = {}
        columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
        with Progress(*columns, console=err, transient=True) as bars:
            read = bars.add_task("reading and sending the pool (pairs)", total=None)
            added = add_pool(
                client, read_pool(candidates, render, stats), tag, progress=lambda n: bars.update(read, completed=n)
            )
            if added.pairs == 0:
                raise ValueError(f"{candidates} holds no usable pair (each row needs two distinct responses)")
            t_add = time.perf_counter() - t0
            tasks: dict[str, int] = {}

            def progress(stage: str, done: int, total: int) -> None:
                if stage not in tasks:
                    tasks[stage] = bars.add_task(stage, total=total or None)
                bars.update(tasks[stage], completed=done, total=total or None)

            # the same command again (same --out, same labels) is a retry and gets the batch leased for it; another
            # --out or other labels (the next step of select → label → select) asks for a new batch
            request = hashlib.sha256(f"{tag}|{budget}|{strategy.value}|{seed}|{manifest.id}|{out.resolve()}|"
                                     f"{_digest(labeled)}".encode()).hexdigest()[:16]  # fmt: skip
            batch = client.select(
                budget,
                strategy.value,
                tag,
                lease_seconds,
                seed,
                "activedpo-client select",
                progress,
                request_id=f"select-{request}",
            )
        files = write_label_files(batch, out.parent, name=out.name, prefix=out.stem + ".")
        took = time.perf_counter() - t0
        if ls is not None:
            collect_from_label_studio(ls, client, batch, f"select-{request}", out, ls_wait, ls_webhook_port,
                                      ls_webhook_url, took)  # fmt: skip
            return
    skipped = ""
    if stats.get("skipped"):
        at = ", ".join(stats["skipped_at"]) + (", …" if stats["skipped"] > len(stats["skipped_at"]) else "")
        skipped = f", {stats['skipped']} rows skipped (fewer than two distinct responses: {at})"
    console.print(
        f"{len(batch.pairs)} of {added.pairs:,} pairs selected by {batch.strategy} under {batch.checkpoint_id} in "
        f"{took:.1f} s (pool sent in {t_add:.1f} s, {added.pairs / max(took, 1e-9):,.0f} pairs/s overall){skipped}"
    )
    console.print(f"to label: {files[0]}; Label Studio: {files[1]} with {files[2]}")


def _digest(path: Path | None) -> str:
    """SHA-256 of a file's bytes ("" for none)."""
    if path is None:
        return ""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def collect_from_label_studio(ls, client, batch, tag: str, out: Path, wait: float, webhook_port: int | None,
                              webhook_url: str | None, took: float) -> None:  # fmt: skip
    """Push ``batch`` to Label Studio (found again by ``tag``: never twice), wait up to ``wait`` seconds for
    every task to be done, then submit the labels and write them to OUT.labels.jsonl; exit 3 if not done."""
    from contextlib import nullcontext

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from activedpo_client.labelfiles import agreement_line
    from activedpo_client.labelstudio import WebhookReceiver, wait_for_labels
    from activedpo_core.atomic import write_jsonl

    tasks = ls.push(batch, tag)
    console.print(
        f"{len(batch.pairs)} pairs selected by {batch.strategy} in {took:.1f} s are tasks "
        f"{min(tasks)}–{max(tasks)} in Label Studio project {ls.id} ({ls.url}/projects/{ls.id})"
    )
    hooks = WebhookReceiver(ls, webhook_port, webhook_url) if webhook_port is not None else nullcontext()
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=err, transient=True) as bars, hooks as receiver:
        bar = bars.add_task("labeled in Label Studio (tasks)", total=len(tasks))
        pulled, finished = wait_for_labels(ls, tasks, wait, progress=lambda d, t: bars.update(bar, completed=d),
                                           wake=receiver.wake if receiver else None)  # fmt: skip
    held = ls.held(client)  # answers of this project the server holds, kept in step with Label Studio
    send = ls.changes(tasks, pulled, held)
    if not finished:  # answers the server holds are kept in step (edited, deleted); new ones wait for the batch
        edits = [x for x in send if x.idempotency_key in held]
        changed = sum(r.revised for r in client.submit_labels(edits)) if edits else 0
        empty = f"; {pulled.empty} saved with no choice (not answers: still open)" if pulled.empty else ""
        console.print(
            f"[yellow]waiting for labels:[/] {pulled.done} of {pulled.total} tasks done{empty}; run the same command "
            "again (with --ls-wait SECONDS to wait) to collect them"
            + (f" ({changed} answers the server held were revised)" if changed else "")
        )
        raise typer.Exit(3)
    results = dict(zip((x.idempotency_key for x in send), client.submit_labels(send), strict=True)) if send else {}
    refused = [r for r in results.values() if not r.accepted]
    if refused:
        raise ValueError(f"the server refused {len(refused)} labels, e.g. {refused[0].pair_id}: {refused[0].reason}")
    pairs = {p.pair_id: p for p in batch.pairs}
    rows = []
    for lab in pulled.labels:
        p = pairs[lab.pair_id]
        row = {"pair_id": p.pair_id, "preference": lab.preference, "annotator": lab.annotator,
               "idempotency_key": lab.idempotency_key, "revision": lab.revision}  # fmt: skip
        if lab.preference in ("A", "B"):  # a DPO row; ties and "both unacceptable" are recorded, never trained on
            a, b = (p.response_a, p.response_b) if lab.preference == "A" else (p.response_b, p.response_a)
            row = {"prompt": p.prompt, "chosen": a, "rejected": b} | row
        rows.append(row)
    labels_file = write_jsonl(out.with_name(out.stem + ".labels.jsonl"), rows)
    answers = [results[x.idempotency_key] for x in pulled.labels if x.idempotency_key in results]
    new = sum(not r.replayed and not r.revised for r in answers)
    revised = sum(r.revised for r in answers)
    gone = sum(r.revised for x in send if x.withdrawn for r in [results[x.idempotency_key]])
    c = pulled.counts()
    kinds = f"A {c['A']}, B {c['B']}, about the same {c['TIE']}, both unacceptable {c['BOTH_BAD']}"
    console.print(
        f"{len(rows)} labels from {pulled.total} tasks ({kinds}; {pulled.skipped} skipped) in {labels_file}; "
        f"{new} new on the server, {revised} revised, {len(rows) - new - revised} it already had"
        + (f", {gone} withdrawn (deleted or skipped since)" if gone else "")
    )
    if line := agreement_line(pulled.labels):
        console.print(line)
