"""`activedpo-client select`: pick the pairs to label from an existing pool, with no generation and no training."""

from __future__ import annotations

import hashlib
import time
from pathlib import Path
from typing import Annotated

import typer

from activedpo_client.cli.common import (
    ChatTemplate,
    ChatTemplateOpt,
    DeviceOpt,
    Dtype,
    TlsCaOpt,
    TokenOpt,
    console,
    err,
    resolve_dtype,
    user_errors,
)


def select_cmd(
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
            help="Labels so far ({prompt, chosen, rejected} rows, e.g. an export): V is "
            "conditioned on them and they are never picked again."
        ),
    ] = None,
    strategy: Annotated[str, typer.Option(help="activedpo, random, aplp or apo.")] = "activedpo",
    server: Annotated[
        str, typer.Option(envvar="ACTIVEDPO_SERVER", help="'embedded' (a server for this call) or host:port.")
    ] = "embedded",
    state_dir: Annotated[
        Path | None,
        typer.Option(help="Embedded server's state (a re-run reuses its features) \\[default: OUT's name + .server]."),
    ] = None,
    pool: Annotated[
        str | None, typer.Option(help="Pool tag on the server \\[default: the candidates file's name].")
    ] = None,
    chat_template: ChatTemplateOpt = ChatTemplate.auto,
    proj_dim: Annotated[int, typer.Option(help="Embedded server: projection dimension.", min=1)] = 8192,
    lora_r: Annotated[
        int, typer.Option(help="Embedded server: rank of the fresh adapter of a model without one.")
    ] = 128,
    lora_alpha: Annotated[int, typer.Option(help="Its LoRA α.")] = 512,
    target_modules: Annotated[
        str, typer.Option(help="Its targets: auto (PEFT's defaults), all-linear, or q_proj,v_proj,….")
    ] = "auto",
    dtype: Annotated[Dtype, typer.Option(help="Model weights (auto: bfloat16 on a GPU, else float32).")] = Dtype.auto,
    device: DeviceOpt = None,
    seed: Annotated[int, typer.Option(help="Seed of the random strategy.")] = 0,
    lease_seconds: Annotated[
        int, typer.Option(help="How long the selected pairs are withheld from other selections.", min=1)
    ] = 7 * 24 * 3600,
    token: TokenOpt = None,
    tls_ca: TlsCaOpt = None,
) -> None:
    """Select --budget pairs to label from an existing pool of candidates (no generation, no training)."""
    from contextlib import ExitStack

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from activedpo_client.labelfiles import write_label_files
    from activedpo_client.pool import add_pool, import_labeled, read_pool
    from activedpo_client.remote import Connection, EmbeddedServer, SelectorClient
    from activedpo_trainer.checkpoint import resolve_checkpoint
    from activedpo_trainer.progress import quiet_libraries
    from activedpo_trainer.prompts import PromptRenderer

    quiet_libraries()
    t0 = time.perf_counter()
    with user_errors(), ExitStack() as stack:
        if not candidates.exists():
            raise FileNotFoundError(f"--candidates not found: {candidates}")
        if labeled is not None and not labeled.exists():
            raise FileNotFoundError(f"--labeled not found: {labeled}")
        ref = str(Path(model).resolve()) if Path(model).exists() else model
        manifest = resolve_checkpoint(ref)
        from transformers import AutoTokenizer

        try:
            tokenizer = AutoTokenizer.from_pretrained(manifest.base)
        except (OSError, ValueError) as e:
            raise ValueError(f"cannot load the tokenizer of {manifest.base}: {e}") from None
        render = PromptRenderer(tokenizer, chat_template.value)
        state = None
        if server == "embedded":
            state = state_dir or out.with_name(out.stem + ".server")
            args = [
                "--proj-dim",
                str(proj_dim),
                "--lora-r",
                str(lora_r),
                "--lora-alpha",
                str(lora_alpha),
                "--lora-targets",
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
        connection = Connection(server, token=token, tls_ca=tls_ca, shares_disk=embedded)
        client = stack.enter_context(SelectorClient(connection))
        client.wait_ready()
        if client.status().checkpoint_id != manifest.id:
            upload = not embedded and manifest.adapter
            err.print(f"loading {manifest.id} into the server{' (uploading its adapter)' if upload else ''} …")
            client.push_checkpoint(ref)
        if labeled is not None:
            n = import_labeled(client, labeled, render)
            err.print(f"{n} labels from {labeled} condition the selection")
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

            request = hashlib.sha256(f"{tag}|{budget}|{strategy}|{seed}|{manifest.id}".encode()).hexdigest()[:16]
            batch = client.select(
                budget,
                strategy,
                tag,
                lease_seconds,
                seed,
                "activedpo-client select",
                progress,
                request_id=f"select-{request}",
            )
        files = write_label_files(batch, out.parent, name=out.name, prefix=out.stem + ".")
    took = time.perf_counter() - t0
    skipped = f", {stats['skipped']} rows skipped (fewer than two distinct responses)" if stats.get("skipped") else ""
    console.print(
        f"{len(batch.pairs)} of {added.pairs:,} pairs selected by {batch.strategy} under {batch.checkpoint_id} in "
        f"{took:.1f} s (pool sent in {t_add:.1f} s, {added.pairs / max(took, 1e-9):,.0f} pairs/s overall){skipped}"
    )
    console.print(f"to label: {files[0]}; Label Studio: {files[1]} with {files[2]}")
