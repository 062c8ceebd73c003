"""``activedpo-client bench``: its options map one to one onto :class:`BenchSettings` (which holds every default).

A list option takes its values space-separated after one flag (``--seeds 0 1 2``; ``--tasks``, ``--seeds`` and
``--prompts`` also comma-separated, ``--arms`` not, as an arm's settings are comma-separated); given twice, the
last one counts."""

from __future__ import annotations

import sys
from dataclasses import fields
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer
from typer.core import TyperCommand

from activedpo_client.bench.arms import ABLATION_ARMS, DEFAULT_ARMS
from activedpo_client.bench.runner import BenchSettings
from activedpo_client.cli.common import (
    BudgetOpt,
    DPOModeOpt,
    EvalPairSamplesOpt,
    EvalSamplesOpt,
    LoraROpt,
    PresetOpt,
    ResponsesOpt,
    user_errors,
)

B = BenchSettings
LISTS = ("--tasks", "--arms", "--seeds", "--prompts")


class ListsCommand(TyperCommand):
    """Reads the words after a list option, up to the next option, as its values (``--seeds 0 1 2``); a list
    option given twice keeps its last values, as a script that appends to a base command line expects."""

    def parse_args(self, ctx, args: list[str]) -> list[str]:
        lists: dict[str, list[str]] = {}
        out: list[str] = []
        i = 0
        while i < len(args):
            arg = args[i]
            i += 1
            if arg not in LISTS:
                out.append(arg)
                continue
            values = []
            while i < len(args) and not args[i].startswith("--"):
                values.append(args[i])
                i += 1
            lists[arg] = values or [""]  # no value: Click says the option needs one
        for name, values in lists.items():
            out += [a for v in values for a in (name, v)] if values != [""] else [name]
        return super().parse_args(ctx, out)


def _split(values: list[str] | None, commas: bool = True) -> tuple[str, ...]:
    return tuple(v.strip() for x in values or () for v in (x.split(",") if commas else [x]) if v.strip())


def _ints(values: list[str] | None, name: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in _split(values))
    except ValueError:
        raise ValueError(f"{name} takes whole numbers, got {' '.join(values or [])!r}") from None


class BenchAnnotator(str, Enum):
    oracle = "oracle"
    oracle_deterministic = "oracle-deterministic"


def bench_cmd(
    ctx: typer.Context,
    tasks: Annotated[list[str] | None, typer.Option(metavar="TASK,...",
        help=f"Built-in tasks or package.module:factory \\[default: {','.join(B.tasks)}].")] = None,
    arms: Annotated[list[str] | None, typer.Option(metavar="ARM,...",
        help=f"strategy\\[@settings] \\[default: {','.join(DEFAULT_ARMS)}].")] = None,
    ablations: Annotated[bool, typer.Option(
        help=f"Run ActiveDPO's ablation arms on the first task ({','.join(ABLATION_ARMS)}).")] = B.ablations,
    seeds: Annotated[list[str] | None, typer.Option(metavar="SEED,...",
        help=f"Seeds \\[default: {','.join(map(str, B.seeds))}].")] = None,
    rounds: Annotated[int, typer.Option(help="Rounds per run.", min=1)] = B.rounds,
    budget: BudgetOpt = B.budget,
    prompts: Annotated[list[str] | None, typer.Option(metavar="N,...",
        help=f"Prompts per round; several: a pool-size study \\[default: {B.prompts[0]}].")] = None,
    responses: ResponsesOpt = B.responses,
    proj_dim: Annotated[int, typer.Option(help="Projection dimension (an arm may override it: @d=N).", min=1)] = (
        B.proj_dim),
    lora_r: LoraROpt = B.lora_r,
    dpo_epochs: Annotated[float | None, typer.Option(help="DPO epochs \\[default: the task's recorded setting].")] = (
        B.dpo_epochs),
    dpo_lr: Annotated[float | None, typer.Option(help="DPO learning rate \\[default: the task's].")] = B.dpo_lr,
    dpo_beta: Annotated[float | None, typer.Option(help="DPO β \\[default: the task's].")] = B.dpo_beta,
    dpo_mode: DPOModeOpt = B.dpo_mode,
    annotator: Annotated[BenchAnnotator, typer.Option(
        help="Labels: Bradley–Terry draws from the oracle, or the higher reward (no label noise).")] = B.annotator,
    eval_prompts: Annotated[int, typer.Option(help="Held-out prompts (the toy worlds hold out 200).", min=1)] = (
        B.eval_prompts),
    eval_samples: EvalSamplesOpt = B.eval_samples,
    eval_pair_samples: EvalPairSamplesOpt = B.eval_pair_samples,
    paper: Annotated[bool, typer.Option(help="The paper's d = 8192 over 10 rounds (hours).")] = B.paper,
    preset: PresetOpt = B.preset,
    jobs: Annotated[int, typer.Option(
        help="Runs at once, each on cpu_count/jobs threads (helpers share the work dir).", min=1)] = B.jobs,
    work_dir: Annotated[Path, typer.Option(help="One run directory per (task, pool, arm, seed).")] = B.work_dir,
    out: Annotated[Path | None, typer.Option(
        help="Where the report goes \\[default: WORK_DIR/report]; the committed results: "
             "benchmarks/results/label_efficiency.")] = B.out,
    helper: Annotated[bool, typer.Option(hidden=True)] = B.helper,
) -> None:  # fmt: skip
    """The label-efficiency benchmark: held-out oracle reward and preference accuracy against labels, per arm
    (strategy and server settings), task, pool size and seed; resumable and shared between processes.

    Every run is the real loop (an embedded selection server, oracle labels, DPO, held-out evaluation) in its
    own run directory under --work-dir, all arms of a task from the same SFT model; the seed fixes prompt
    sampling, generation and oracle draws. An arm is ``strategy\\[@setting,...]``: d=N, lam=X, proj=sjlt|kron|dense,
    raw (no gradient normalisation), frozen (round one's features throughout), rounds=N / budget=N (a schedule of
    its own), seeds=N (its first N seeds only). Research strategies (activedpo-topb, activedpo-fisher, ...) get
    servers started with --research-strategies. See benchmarks/README.md.
    """
    from activedpo_client.bench.report import write_report
    from activedpo_client.bench.runner import run_grid

    with user_errors():
        settings = BenchSettings(
            tasks=_split(tasks) or B.tasks, arms=_split(arms, commas=False), ablations=ablations,
            seeds=_ints(seeds, "--seeds") or B.seeds, rounds=rounds, budget=budget,
            prompts=_ints(prompts, "--prompts") or B.prompts, responses=responses, proj_dim=proj_dim, lora_r=lora_r,
            dpo_epochs=dpo_epochs, dpo_lr=dpo_lr, dpo_beta=dpo_beta, dpo_mode=getattr(dpo_mode, "value", dpo_mode),
            annotator=getattr(annotator, "value", annotator), eval_prompts=eval_prompts, eval_samples=eval_samples,
            eval_pair_samples=eval_pair_samples, paper=paper, preset=getattr(preset, "value", preset), jobs=jobs,
            work_dir=work_dir, out=out, helper=helper,
        ).resolved()  # fmt: skip
        arm_list = settings.arm_list()  # a bad arm: one line, before any work
        results = run_grid(settings, _argv(ctx))
        if results is not None:
            write_report(settings, arm_list, results)


def _argv(ctx: typer.Context) -> list[str]:
    """The options this invocation was given, as helpers are started with them."""
    out: list[str] = []
    for f in fields(BenchSettings):
        name = f.name
        if name == "helper" or ctx.get_parameter_source(name).name == "DEFAULT":
            continue
        value = ctx.params[name]
        flag = "--" + name.replace("_", "-")
        if isinstance(value, bool):
            out.append(flag if value else "--no-" + flag[2:])
        elif isinstance(value, list):
            out += [flag, *value]
        else:
            out += [flag, str(getattr(value, "value", value))]
    return out


app = typer.Typer(add_completion=False)
app.command("bench", cls=ListsCommand)(bench_cmd)


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark with ``argv`` (the command line's when None) and return its exit status: how
    ``benchmarks/*.py`` and ``python -m activedpo_client.bench`` (a --jobs helper) run it."""
    command = typer.main.get_command(app)
    try:
        command.main(args=argv if argv is not None else sys.argv[1:], prog_name="activedpo-client bench")
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else 0 if e.code is None else 1
    return 0
