"""`activedpo-client round`, `status`, `export`, `quickstart`, `bench` and `labels import`: runs of the loop.

Why one module of this length: six commands' option lists; each only maps its options onto settings and calls
:mod:`activedpo_client.rounds` or :mod:`activedpo_client.rundir`.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Annotated

import typer

from activedpo_client.artifacts import RoundMetrics
from activedpo_client.cli.common import (
    AuditFractionOpt,
    BudgetOpt,
    CacheDir,
    ChatTemplate,
    ChatTemplateOpt,
    DPOModeOpt,
    Dtype,
    DtypeOpt,
    EvalPairSamplesOpt,
    EvalPromptsOpt,
    EvalSamplesOpt,
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
    PresetOpt,
    ProjDimOpt,
    PromptFieldOpt,
    ResponsesOpt,
    RunDirOpt,
    ServerBaseOpt,
    ServerOpt,
    Strategy,
    StrategyOpt,
    TargetModulesOpt,
    TaskOpt,
    TemperatureOpt,
    TlsCaOpt,
    TokenOpt,
    TopPOpt,
    WorldDir,
    WorldSeedOpt,
    console,
    err,
    open_world,
    resolve_dtype,
    server_for,
    user_errors,
)
from activedpo_client.labelstudio import ProjectSettings
from activedpo_client.settings import LabelStudioSpec, RoundConfig, ServerSpec
from activedpo_core.atomic import write_jsonl
from activedpo_core.lora import LoraSpec
from activedpo_core.options import ConfigOpt, explicit, write_config
from activedpo_core.settings import ProjectionSpec
from activedpo_trainer.dpo import DPOSettings
from activedpo_trainer.generation import GenerationSettings
from activedpo_trainer.toyworld import ToyWorldConfig
from activedpo_trainer.workload import ModelSpec

labels_app = typer.Typer(help="Labels from people: import a finished labels file.")


def round_cmd(
    ctx: typer.Context,
    model: Annotated[
        str | None,
        typer.Option(help="Your policy's base model (π_ref): a Hugging Face directory or hub id in the local cache."),
    ] = None,
    prompt_file: Annotated[
        Path | None,
        typer.Option(help="Prompts for --model: JSONL, JSON, CSV, Parquet or a datasets save_to_disk directory."),
    ] = None,
    heldout_file: Annotated[
        Path | None,
        typer.Option(
            help="Held-out prompts for evaluation \\[default: --eval-prompts of --prompt-file, never trained on]."
        ),
    ] = None,
    prompt_field: PromptFieldOpt = ModelSpec.prompt_field,
    chat_template: ChatTemplateOpt = ModelSpec.chat_template,
    budget: BudgetOpt = RoundConfig.budget,
    audit_fraction: AuditFractionOpt = RoundConfig.audit_fraction,
    prompts: Annotated[int, typer.Option(help="Prompts sampled per round.", min=1)] = RoundConfig.prompts,
    responses: ResponsesOpt = RoundConfig.responses,
    rounds: Annotated[int, typer.Option(help="Rounds to run (resumes an interrupted one first).")] = 1,
    strategy: StrategyOpt = RoundConfig.strategy,
    annotator: Annotated[
        str | None,
        typer.Option(
            help="Who labels: file (people: the batch is written out and the round waits), label-studio (people in "
            "a live Label Studio project: see --ls-*), reward-model:PATH, or oracle (the toy world's hidden reward, "
            "Bradley–Terry draws; oracle-deterministic: the higher reward, no label noise) "
            "\\[default: oracle in the toy world, file with --model]."
        ),
    ] = None,
    evaluate: Annotated[
        str | None,
        typer.Option(
            help="Held-out evaluation after each round: reward-model:PATH, none, or oracle (toy world) "
            "\\[default: oracle in the toy world, none with --model]."
        ),
    ] = None,
    max_new_tokens: Annotated[
        int | None,
        typer.Option(
            help=f"Tokens per response \\[default: {GenerationSettings.max_new_tokens}; the toy world's own length "
            "there].",
            min=1,
        ),
    ] = None,
    temperature: TemperatureOpt = GenerationSettings.temperature,
    top_p: TopPOpt = GenerationSettings.top_p,
    dtype: DtypeOpt = Dtype.auto,
    dpo_mode: DPOModeOpt = RoundConfig.dpo_mode,
    dpo_epochs: Annotated[
        float | None,
        typer.Option(help=f"DPO epochs per round \\[default: the toy task's recorded setting, else "
                     f"{DPOSettings.epochs:g}].", min=0),
    ] = None,
    dpo_lr: Annotated[
        float | None,
        typer.Option(help=f"DPO learning rate \\[default: the toy task's recorded setting, else {DPOSettings.lr:g}].",
                     min=0),
    ] = None,
    dpo_beta: Annotated[
        float | None,
        typer.Option(help=f"DPO β \\[default: the toy task's recorded setting, else {DPOSettings.beta:g}].", min=0),
    ] = None,
    lora_r: LoraROpt = LoraSpec.r,
    lora_alpha: LoraAlphaOpt = LoraSpec.alpha,
    target_modules: TargetModulesOpt = LoraSpec.target_modules,
    eval_prompts: EvalPromptsOpt = RoundConfig.eval_prompts,
    eval_samples: EvalSamplesOpt = RoundConfig.eval_samples,
    eval_pair_samples: EvalPairSamplesOpt = RoundConfig.eval_pair_samples,
    seed: Annotated[int, typer.Option(help="Seed of prompt sampling, generation and oracle draws.")] = RoundConfig.seed,
    run_dir: RunDirOpt = Path("runs/default"),
    server: ServerOpt = ServerSpec.server,
    token: TokenOpt = None,
    tls_ca: TlsCaOpt = None,
    proj_dim: ProjDimOpt = ProjectionSpec.dim,
    ls_url: LsUrlOpt = None,
    ls_api_key: LsKeyOpt = None,
    ls_project: LsProjectOpt = None,
    ls_wait: LsWaitOpt = LabelStudioSpec.wait,
    ls_webhook_port: LsWebhookPortOpt = None,
    ls_webhook_url: LsWebhookUrlOpt = None,
    ls_instructions: LsInstructionsOpt = None,
    ls_overlap: LsOverlapOpt = ProjectSettings.overlap,
    server_base: ServerBaseOpt = None,
    device: Annotated[
        str | None,
        typer.Option(
            help="Generation, DPO, evaluation and an embedded server: cuda or cpu \\[default: cuda when present]."
        ),
    ] = None,
    world: WorldDir = None,
    preset: PresetOpt = ToyWorldConfig.name,
    task: Annotated[
        str | None,
        typer.Option(
            help="Toy world task: toy, signoff, mixed or package.module:factory \\[default: toy without --model]."
        ),
    ] = None,
    world_seed: WorldSeedOpt = ToyWorldConfig.seed,
    cache_dir: CacheDir = None,
    config: ConfigOpt = None,
) -> None:
    """Run ActiveDPO rounds end to end on --model and --prompt-file (or the toy world): generate, select, label,
    train DPO, reload, evaluate.

    Re-running resumes: settings not given again are the run's own. RUN_DIR/config.toml records the options the
    run resolved (`round --config RUN_DIR/config.toml` reruns it)."""
    from activedpo_client.rundir import AwaitingLabels
    from activedpo_core.progress import quiet_libraries
    from activedpo_trainer.tasks import PAPER_DPO, recorded_dpo_settings

    quiet_libraries()
    with user_errors():
        resumed = _resumed(run_dir, explicit(ctx))  # a run that has done work: what was not given is its own
        if resumed:
            model, world = resumed.get("model", model), resumed.get("world", world)
            prompt_file = resumed.get("prompt_file", prompt_file)
            heldout_file = resumed.get("heldout_file", heldout_file)
            prompt_field = resumed.get("prompt_field", prompt_field)
            chat_template = ChatTemplate(resumed.get("chat_template", chat_template))
            evaluate, eval_prompts = resumed.get("evaluate", evaluate), resumed.get("eval_prompts", eval_prompts)
            max_new_tokens = resumed.get("max_new_tokens", max_new_tokens)
            temperature, top_p = resumed.get("temperature", temperature), resumed.get("top_p", top_p)
        if temperature == 0 and responses > 1:
            raise ValueError(f"--temperature 0 is greedy decoding: the --responses {responses} responses to a prompt "
                             f"would be one and the same; sample with a temperature above 0")  # fmt: skip
        if model is not None:
            from activedpo_trainer.workload import ModelWorkload

            if task is not None or world is not None:
                raise ValueError("--model names your own model; --task and --world name a toy world: pass one or the "
                                 "other")  # fmt: skip
            if prompt_file is None:
                raise ValueError("--model needs --prompt-file (a JSONL, JSON, CSV or Parquet file of prompts)")
            evaluate = evaluate or "none"
            held = 0 if heldout_file is not None or evaluate == "none" else eval_prompts
            spec = ModelSpec(model, str(prompt_file), str(heldout_file) if heldout_file else None, prompt_field,
                             chat_template.value, heldout=held)  # fmt: skip
            max_new_tokens = max_new_tokens or GenerationSettings.max_new_tokens
            workload = ModelWorkload(spec, GenerationSettings(temperature, top_p, max_new_tokens), resolve_dtype(dtype))
            annotator = annotator or "file"
            recorded = PAPER_DPO
        else:
            from activedpo_trainer.workload import ToyWorkload

            for name, value in (("--prompt-file", prompt_file), ("--heldout-file", heldout_file)):
                if value is not None:
                    raise ValueError(f"{name} needs --model (the toy world brings its own prompts)")
            task = task or ToyWorldConfig.task
            w = open_world(world, preset, world_seed, cache_dir, task)
            max_new_tokens = max_new_tokens or w.config.max_new_tokens
            gen = GenerationSettings(temperature, top_p, max_new_tokens)
            workload = ToyWorkload(w, gen, "float32" if dtype == Dtype.auto else dtype.value)
            annotator, evaluate = annotator or "oracle", evaluate or "oracle"
            recorded = recorded_dpo_settings(w.task)
        dpo_epochs, dpo_lr, dpo_beta = (v if v is not None else recorded[k] for k, v in
                                        (("epochs", dpo_epochs), ("lr", dpo_lr), ("beta", dpo_beta)))  # fmt: skip
        settings = RoundConfig(budget=budget, audit_fraction=audit_fraction, prompts=prompts, responses=responses,
                               strategy=strategy.value,
                               annotator=annotator, dpo_mode=dpo_mode.value, dpo_epochs=dpo_epochs, dpo_lr=dpo_lr,
                               dpo_beta=dpo_beta, seed=seed, eval_prompts=eval_prompts, eval_samples=eval_samples,
                               eval_pair_samples=eval_pair_samples, evaluate=evaluate, lora_r=lora_r,
                               lora_alpha=lora_alpha, target_modules=target_modules, device=device or "",
                               ls_project=ls_project or "")  # fmt: skip
        given = frozenset(explicit(ctx))
        resolved = ctx.params | {"task": task, "max_new_tokens": max_new_tokens}

        def record(run) -> None:  # the options this run resolved, its own settings where they were not given
            own = {k: v for k, v in asdict(run.config).items() if k in resolved and k not in ("device",)}
            write_config(run.dir / "config.toml", resolved | own, "activedpo-client round")

        try:
            ls = LabelStudioSpec(ls_url, ls_api_key, ls_wait, webhook_port=ls_webhook_port, webhook_url=ls_webhook_url,
                                 project=ProjectSettings(ls_instructions, ls_overlap))  # fmt: skip
            spec = ServerSpec(server, token, tls_ca, proj_dim, server_base=server_base)
            run_rounds_cli(run_dir, workload, settings, rounds, spec, ls, given=given, record=record)
        except AwaitingLabels as e:
            console.print(f"[yellow]waiting for labels:[/] {e}")
            raise typer.Exit(3) from None


def _resumed(run_dir: Path, given: set[str]) -> dict:
    """For a run that has done work, the workload options not given again, with the run's own values (so
    ``round --run-dir DIR`` alone resumes a run on ``--model`` too); empty for a new or untouched run."""
    from activedpo_client.rundir import Run

    if not (Path(run_dir) / "run.json").exists():
        return {}
    run = Run.open(run_dir)
    if not run.started():
        return {}
    w, gen = run.workload, run.workload.get("generation", {})
    own: dict = {"evaluate": run.config.evaluate, "eval_prompts": run.config.eval_prompts, **gen}
    if w.get("kind") == "model" and not given & {"world", "task"}:
        own |= {"model": w["model"], "prompt_file": Path(w["prompt_file"]), "prompt_field": w["prompt_field"],
                "chat_template": w["chat_template"],
                "heldout_file": Path(w["heldout_file"]) if w.get("heldout_file") else None}  # fmt: skip
    elif w.get("kind") == "toy" and not given & {"model", "preset", "world_seed", "task", "cache_dir"}:
        own["world"] = Path(w["world"])
    return {k: v for k, v in own.items() if k not in given}


def metrics_line(strategy: str, m: RoundMetrics) -> str:
    """One round's outcome; without an evaluator, the labels, the audit curve and the policy's agreement with
    the new labels; the audit hint on a line of its own."""
    agree = f", agreement with the new labels {m.agreement:.1%}" if m.agreement is not None else ""
    audit = f"\n  {m.audit_line()}" if m.audit_n else ""
    audit += f"\n  {m.drift_line()}" if m.kl_seq is not None else ""
    hint = f"\n  note: {m.hint}" if m.hint else ""
    if m.reward is None:
        return (f"{strategy} round {m.round}: {m.labels} labels{agree}; evaluation: none "
                f"(pass --evaluate reward-model:PATH for held-out reward){audit}{hint}")  # fmt: skip
    acc = (f", preference accuracy {m.pref_acc:.1%} ± {m.pref_acc_se:.1%} (π_ref 50%)"
           if m.pref_acc is not None else "")  # fmt: skip
    return (f"{strategy} round {m.round}: {m.labels} labels, reward {m.reward:.3f} ± {m.se:.3f} "
            f"(π_ref {m.ref_reward:.3f}), win-rate {m.win_rate:.1%}{acc}{agree}{audit}{hint}")  # fmt: skip


def run_rounds_cli(run_dir, workload, config, rounds, spec: ServerSpec | None = None, label_studio=None,
                   given=None, record=None) -> list[RoundMetrics]:  # fmt: skip
    from activedpo_client.rounds import run_rounds
    from activedpo_core.progress import progress_bars

    return run_rounds(run_dir, workload, config, rounds, spec or ServerSpec(), progress_bars, say=err.print,
                      report=lambda m: console.print(metrics_line(config.strategy, m)),
                      label_studio=label_studio, given=given, record=record)  # fmt: skip


def status_cmd(
    run_dir: RunDirOpt = Path("runs/default"),
    server: ServerOpt = "embedded",
    token: TokenOpt = None,
    tls_ca: TlsCaOpt = None,
) -> None:
    """Show a run: rounds done, labels and reward per round, and the server's state."""
    from rich.table import Table

    from activedpo_client.report import read_metrics
    from activedpo_client.rundir import Run

    with user_errors():
        run = Run.open(run_dir)
        rows = read_metrics(run_dir)
        table = Table(title=f"{run_dir}: {run.rounds_done} rounds of {run.config.strategy}, budget {run.config.budget}")
        for col in ("round", "labels", "reward ± SE", "π_ref", "win-rate", "agreement", "audit acc ± SE",
                    "picks acc", "gain / 100 labels [95%]", "wall s"):  # fmt: skip
            table.add_column(col, justify="right")
        for m in rows:
            cells = [str(m.round), str(m.labels)]
            if m.reward is None:
                cells += ["not evaluated", "—", "—"]
            else:
                cells += [f"{m.reward:.3f} ± {m.se:.3f}", f"{m.ref_reward:.3f}", f"{m.win_rate:.1%}"]
            cells += ["—" if m.agreement is None else f"{m.agreement:.1%}",
                      "—" if not m.audit_n else f"{m.audit_acc:.2f} ± {m.audit_se:.2f} (n {m.audit_n})",
                      "—" if not m.picks_n else f"{m.picks_acc:.2f}",
                      "—" if m.gain is None else
                      f"{100 * m.gain:+.1f} [{100 * m.gain_lo:+.1f}, {100 * m.gain_hi:+.1f}]",
                      f"{sum(m.seconds.values()):.0f}"]  # fmt: skip
            table.add_row(*cells)
        console.print(table)
        if rows and rows[-1].hint:
            console.print(f"note: {rows[-1].hint}")
        stack, client = server_for(run_dir, server, token, tls_ca)
        with stack:
            s = client.status()
        console.print(
            f"server: checkpoint {s.checkpoint_id} ({s.adapter_line()}), {s.pool_size} pairs, {s.labeled} labeled "
            f"({s.annotations} answers: {s.ties} ties, {s.both_bad} both unacceptable), {s.leased} leased, "
            f"d = {s.feature_dim}"
        )


def export_cmd(
    out: Annotated[Path, typer.Option(help="JSONL file of prompt/chosen/rejected rows.")],
    run_dir: RunDirOpt = Path("runs/default"),
    server: ServerOpt = "embedded",
    token: TokenOpt = None,
    tls_ca: TlsCaOpt = None,
) -> None:
    """Write every labeled pair as JSONL that `datasets.load_dataset("json", data_files=...)` reads.

    One row per person's current A/B answer; ties and "both unacceptable" answers are counted, not written,
    and where several people answered a pair their agreement is reported."""
    from activedpo_client.labelfiles import agreement_line

    with user_errors():
        stack, client = server_for(run_dir, server, token, tls_ca)
        with stack:
            answers = list(client.export_labels(include_ties=True))
        rows = [r.dpo_row() for r in answers if r.preference in ("A", "B")]
        write_jsonl(out, rows)
    prefs = [r.preference for r in answers]
    console.print(f"{len(rows)} labeled pairs written to {out} ({prefs.count('TIE')} ties and "
                  f"{prefs.count('BOTH_BAD')} both unacceptable recorded, not written)")  # fmt: skip
    if line := agreement_line(answers):
        console.print(line)


# the demo's projection: the paper's d = 8192 (every other command's default) makes the three rounds of two
# strategies take about 3× as long on two CPU cores, and the toy policy's LoRA gradients need no more than this
QUICKSTART_PROJ_DIM = 2048


def quickstart_cmd(
    rounds: Annotated[int, typer.Option(help="Rounds per strategy.")] = 3,
    budget: BudgetOpt = RoundConfig.budget,
    prompts: Annotated[int, typer.Option(help="Prompts sampled per round.", min=1)] = RoundConfig.prompts,
    responses: ResponsesOpt = RoundConfig.responses,
    compare: Annotated[list[Strategy], typer.Option(help="Strategies run beside activedpo from the same start.")] = [  # noqa: B006
        "random"
    ],
    proj_dim: Annotated[
        int, typer.Option(help="Projection dimension d (the paper's and every other command's is 8192: about 3× "
                          "longer here).", min=1)
    ] = QUICKSTART_PROJ_DIM,
    lora_r: Annotated[
        int, typer.Option(help="LoRA rank (α = 4r), for DPO and round one's fresh adapter.", min=1)
    ] = LoraSpec.r,
    eval_prompts: EvalPromptsOpt = RoundConfig.eval_prompts,
    dpo_epochs: Annotated[
        float | None, typer.Option(help="DPO epochs per round \\[default: the task's recorded setting].", min=0)
    ] = None,
    seed: Annotated[int, typer.Option(help="Seed shared by every strategy's run.")] = RoundConfig.seed,
    run_dir: Annotated[Path, typer.Option(help="Parent directory of the runs.")] = Path("runs/quickstart"),
    world: WorldDir = None,
    preset: PresetOpt = ToyWorldConfig.name,
    task: TaskOpt = ToyWorldConfig.task,
    world_seed: WorldSeedOpt = ToyWorldConfig.seed,
    cache_dir: CacheDir = None,
) -> None:
    """Build the toy world, run ActiveDPO and the baselines side by side, and print reward per round."""
    import time

    from rich.table import Table

    from activedpo_client.report import plot_rewards
    from activedpo_core.progress import quiet_libraries

    quiet_libraries()
    with user_errors():
        w = open_world(world, preset, world_seed, cache_dir, task)
        if world is None and task != "toy":  # each task's runs in their own directory
            from activedpo_trainer.tasks import task_slug

            run_dir = run_dir / task_slug(task)
        from activedpo_trainer.tasks import recorded_dpo_settings

        dpo = recorded_dpo_settings(w.task) | ({"epochs": dpo_epochs} if dpo_epochs is not None else {})
        results: dict[str, list[dict]] = {}
        wall: dict[str, float] = {}
        for strategy in ["activedpo", *[c.value for c in compare if c.value != "activedpo"]]:
            config = RoundConfig(budget=budget, prompts=prompts, responses=responses, strategy=strategy, seed=seed,
                                 eval_prompts=eval_prompts, dpo_epochs=dpo["epochs"], dpo_lr=dpo["lr"],
                                 dpo_beta=dpo["beta"], lora_r=lora_r, lora_alpha=4 * lora_r,
                                 audit_fraction=0.0)  # fmt: skip
            # audit_fraction 0: every pair chosen by the strategy, as the benchmark quoted below ran them
            t0 = time.perf_counter()
            spec = ServerSpec(proj_dim=proj_dim)
            results[strategy] = run_rounds_cli(run_dir / strategy, w, config, rounds, spec)
            wall[strategy] = time.perf_counter() - t0
        plot = plot_rewards(
            results, run_dir / "reward.png", title=f"{w.config.task} task: held-out reward per label budget"
        )
        table = Table(title=f"held-out oracle reward (mean ± SE over {eval_prompts} prompts)")
        table.add_column("round", justify="right")
        table.add_column("labels", justify="right")
        for strategy in results:
            table.add_column(strategy, justify="right")
        first = next(iter(results.values()))
        table.add_row("0 (π_ref)", "0", *[f"{r[0].ref_reward:.3f}" if r else "—" for r in results.values()])
        for i, m in enumerate(first):
            cells = [f"{r[i].reward:.3f} ± {r[i].se:.3f}" if i < len(r) else "—" for r in results.values()]
            table.add_row(str(m.round), str(m.labels), *cells)
        console.print(table)
        if all(r and r[0].pref_acc is not None for r in results.values()):
            acc = Table(title=f"preference accuracy of the implicit reward on {first[0].pref_pairs} judged held-out "
                              "pairs (mean ± SE; π_ref 50%)")  # fmt: skip
            acc.add_column("round", justify="right")
            acc.add_column("labels", justify="right")
            for strategy in results:
                acc.add_column(strategy, justify="right")
            for i, m in enumerate(first):
                cells = [f"{r[i].pref_acc:.1%} ± {r[i].pref_acc_se:.1%}" if i < len(r) else "—"
                         for r in results.values()]  # fmt: skip
                acc.add_row(str(m.round), str(m.labels), *cells)
            console.print(acc)
        from activedpo_client.report import multiseed_line

        console.print(multiseed_line(w.config.task))  # the committed multi-seed benchmark for this task
        for strategy, rows in results.items():
            steps = {s: sum(m.seconds[s] for m in rows) for s in rows[0].seconds} if rows else {}
            detail = ", ".join(f"{s} {v:.0f} s" for s, v in steps.items())
            console.print(f"{strategy}: {wall[strategy]:.0f} s this invocation; all rounds: {detail}")
        console.print(f"plot: {plot}")


@labels_app.command("import")
def labels_import_cmd(
    file: Annotated[
        Path | None,
        typer.Argument(
            help="to_label.jsonl rows answered with {pair_id, preference: A|B|TIE, annotator}, TRL {prompt, chosen, "
            "rejected} rows of the batch's pairs, or a Label Studio export (optional with --done)."
        ),
    ] = None,
    run_dir: RunDirOpt = Path("runs/default"),
    done: Annotated[
        bool,
        typer.Option(
            "--done",
            help="The batch is finished: the round trains on the labels held, and its unlabeled pairs go back to "
            "the pool (without it, the round waits for every pair's label).",
        ),
    ] = False,
) -> None:
    """Validate finished labels against the round's batch and keep the valid rows for `round` to submit."""
    from activedpo_client.rundir import Run, import_labels

    with user_errors():
        if file is None and not done:
            raise ValueError("name the labels FILE to import (or pass --done to finish the batch with what is held)")
        if file is not None and not file.exists():
            raise FileNotFoundError(f"labels file not found: {file}")
        run = Run.open(run_dir)
        held = import_labels(run, file, done)
    for e in held.errors:
        err.print(f"[red]rejected:[/] {e}")
    if held.unlabeled and not held.done:
        rest = (f"; {held.unlabeled} of its {held.pairs} pairs not labeled yet: import them too, or pass --done to "
                f"train on what is held")  # fmt: skip
    elif held.unlabeled:
        rest = f"; the batch is done: its {held.unlabeled} unlabeled pairs go back to the pool"
    else:
        rest = "; every pair of the batch is labeled"
    console.print(f"{held.labels} labels held for round {held.round}{rest}; run `activedpo-client round` to go on")
    if held.errors:
        raise typer.Exit(1)
