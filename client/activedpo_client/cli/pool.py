"""`activedpo-client pool report`: what a pool of candidate pairs is made of, and how the policy sees it."""

from __future__ import annotations

from contextlib import ExitStack
from pathlib import Path
from typing import Annotated

import typer

from activedpo_client.cli.common import (
    ChatTemplateOpt,
    DescribePairsOpt,
    DeviceOpt,
    Dtype,
    DtypeOpt,
    EmbeddedOrServerOpt,
    LoraAlphaOpt,
    LoraROpt,
    PoolTagOpt,
    ProjDimOpt,
    ServerBaseOpt,
    TargetModulesOpt,
    TlsCaOpt,
    TokenOpt,
    console,
    err,
    resolve_dtype,
    user_errors,
)
from activedpo_client.settings import ServerSpec
from activedpo_core.lora import LoraSpec
from activedpo_core.settings import ProjectionSpec, SelectionSettings
from activedpo_trainer.dpo import DPOSettings
from activedpo_trainer.workload import ModelSpec

app = typer.Typer(no_args_is_help=True, help="Look at a pool of candidate pairs before labeling it.")


@app.command("report")
def report_cmd(
    model: Annotated[str, typer.Option(help="The policy (base model directory or hub id, or a checkpoint dir).")],
    candidates: Annotated[Path, typer.Option(help="Pool file, in any form `select` reads.")],
    plot: Annotated[
        Path | None, typer.Option(help="The histograms (PNG) \\[default: the candidates file's name + .report.png].")
    ] = None,
    labeled: Annotated[
        Path | None, typer.Option(help="Labels so far (any form `select` reads): the scores are against them.")
    ] = None,
    server: EmbeddedOrServerOpt = ServerSpec.server,
    state_dir: Annotated[
        Path | None, typer.Option(help="Embedded server's state \\[default: the plot's name + .server].")
    ] = None,
    pool: PoolTagOpt = None,
    describe_pairs: DescribePairsOpt = SelectionSettings.describe_pairs,
    dpo_beta: Annotated[
        float, typer.Option(help="DPO's β: the margin shown is |β·Δ log π/π_ref|.", min=0)
    ] = DPOSettings.beta,
    chat_template: ChatTemplateOpt = ModelSpec.chat_template,
    proj_dim: ProjDimOpt = ProjectionSpec.dim,
    lora_r: LoraROpt = LoraSpec.r,
    lora_alpha: LoraAlphaOpt = LoraSpec.alpha,
    target_modules: TargetModulesOpt = LoraSpec.target_modules,
    dtype: DtypeOpt = Dtype.auto,
    device: DeviceOpt = None,
    server_base: ServerBaseOpt = None,
    token: TokenOpt = None,
    tls_ca: TlsCaOpt = None,
) -> None:
    """Pairs, prompts, distinct responses, exact and near duplicates and trivially different pairs (from the file);
    the policy's implicit-reward margins and ActiveDPO scores (from the server, leasing nothing), as quantiles and
    histograms; and what such a pool predicts, from the committed benchmark."""
    from activedpo_client.offline import SelectSettings, open_pool, pool_section
    from activedpo_client.poolreport import plot as draw
    from activedpo_core.progress import progress_bars, quiet_libraries

    quiet_libraries()
    plot = plot or candidates.with_name(candidates.name + ".report.png")
    with user_errors(), ExitStack() as stack:
        settings = SelectSettings(model, candidates, 0, plot, labeled, pool=pool, chat_template=chat_template.value,
                                  lora=LoraSpec(lora_r, lora_alpha, target_modules), dtype=resolve_dtype(dtype),
                                  device=device, state_dir=state_dir, describe_pairs=describe_pairs)  # fmt: skip
        spec = ServerSpec(server, token, tls_ca, proj_dim, server_base=server_base)
        opened = open_pool(settings, spec, stack, progress_bars, say=err.print)
        lines, view = pool_section(settings, opened.client, dpo_beta)
        for line in lines:
            console.print(line)
        if view.described:
            console.print(f"histograms: {draw(view, plot, dpo_beta)}")
