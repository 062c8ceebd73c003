"""`activedpo-client select`: pick the pairs to label from an existing pool, with no generation and no training."""

from __future__ import annotations

from contextlib import ExitStack
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer

from activedpo_client.cli.common import (
    AuditFractionOpt,
    ChatTemplateOpt,
    DescribePairsOpt,
    DeviceOpt,
    Dtype,
    DtypeOpt,
    EmbeddedOrServerOpt,
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
    PoolTagOpt,
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
from activedpo_client.labelstudio import ProjectSettings
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
    server: EmbeddedOrServerOpt = ServerSpec.server,
    state_dir: Annotated[
        Path | None,
        typer.Option(help="Embedded server's state (a re-run reuses its features) \\[default: OUT's name + .server]."),
    ] = None,
    pool: PoolTagOpt = None,
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
    audit_fraction: AuditFractionOpt = SelectionSettings.audit_fraction,
    describe_pairs: DescribePairsOpt = SelectionSettings.describe_pairs,
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
    from activedpo_client.audit import score, summary_line
    from activedpo_client.labelfiles import agreement_line
    from activedpo_client.offline import LabelsPending, SelectSettings, collect_from_label_studio, select_offline
    from activedpo_core.progress import progress_bars, quiet_libraries

    quiet_libraries()
    with user_errors(), ExitStack() as stack:
        settings = SelectSettings(
            model, candidates, budget, out, labeled, strategy.value, seed, lease_seconds, audit_fraction, pool,
            chat_template.value, LoraSpec(lora_r, lora_alpha, target_modules), resolve_dtype(dtype), device, state_dir,
            annotator.value, ls_project, describe_pairs,
        )  # fmt: skip
        spec = ServerSpec(server, token, tls_ca, proj_dim, server_base=server_base)
        ls = LabelStudioSpec(ls_url, ls_api_key, ls_wait, webhook_port=ls_webhook_port, webhook_url=ls_webhook_url,
                             project=ProjectSettings(ls_instructions, ls_overlap))  # fmt: skip
        write_config(settings.beside_out(".config.toml"), ctx.params, "activedpo-client select")
        selection, client, project = select_offline(settings, spec, stack, ls, progress_bars, say=err.print)
        console.print("the pool: " + "\n  ".join(selection.pool_report))
        if project is None:
            console.print(selection.line())
            files = selection.files
            console.print(f"to label: {files[0]}; Label Studio: {files[1]} with {files[2]}")
            return
        try:
            got = collect_from_label_studio(project, client, selection, out, ls, progress_bars, say=console.print)
        except LabelsPending as e:
            console.print(f"[yellow]waiting for labels:[/] {e}")
            raise typer.Exit(3) from None
    c = got.counts
    kinds = f"A {c['A']}, B {c['B']}, about the same {c['TIE']}, both unacceptable {c['BOTH_BAD']}"
    console.print(
        f"{got.rows} labels from {got.tasks} tasks ({kinds}; {got.skipped} skipped) in {got.labels_file}; "
        f"{got.new} new on the server, {got.revised} revised, {got.rows - got.new - got.revised} it already had"
        + (f", {got.withdrawn} withdrawn (deleted or skipped since)" if got.withdrawn else "")
    )
    if line := agreement_line(got.labels):
        console.print(line)
    pairs = {p.pair_id: p for p in selection.batch.pairs}
    answers = ((x.preference, pairs[x.pair_id].audit, pairs[x.pair_id].margin) for x in got.labels)
    if line := summary_line(*score(answers), f"the policy that selected them, {selection.batch.checkpoint_id}"):
        console.print(line)
