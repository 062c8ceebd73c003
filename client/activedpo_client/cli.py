"""``activedpo-client``: the toy world, generation, DPO training and evaluation from the shell.

Heavy imports (torch, transformers, trl) happen inside commands so that ``--help`` is instant.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from activedpo_client import __version__

app = typer.Typer(
    name="activedpo-client",
    help="Drive ActiveDPO: build the toy world, generate, train DPO rounds, evaluate.",
    no_args_is_help=True,
    add_completion=False,
)
labels_app = typer.Typer(help="Labels from people: import a finished labels file.")
toyworld_app = typer.Typer(help="The embedded toy world: a task with a hidden oracle and a tiny SFT model.")
train_app = typer.Typer(help="Train checkpoints: DPO on labeled pairs (TRL + PEFT LoRA).")
app.add_typer(toyworld_app, name="toyworld")
app.add_typer(train_app, name="train")
app.add_typer(labels_app, name="labels")

console = Console()
err = Console(stderr=True, soft_wrap=True)  # paths in errors stay on one line


class Preset(str, Enum):
    default = "default"
    tiny = "tiny"


class DPOMode(str, Enum):
    continue_ = "continue"
    retrain = "retrain"


@contextmanager
def user_errors() -> Iterator[None]:
    """Turn the errors a user can fix (bad paths, bad input) into one red line and exit code 2."""
    from activedpo_client.remote import ClientError
    from activedpo_trainer.checkpoint import CheckpointError

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


CacheDir = Annotated[
    Path | None,
    typer.Option(help="Cache directory for toy worlds [default: $ACTIVEDPO_CACHE or ~/.cache/activedpo]."),
]
WorldDir = Annotated[Path | None, typer.Option("--world", help="A built toy world's directory (overrides --preset).")]
PresetOpt = Annotated[Preset, typer.Option(help="Toy world size: 'default', or 'tiny' for tests.")]
SeedOpt = Annotated[int, typer.Option(help="Seed of the toy world (prompt split, corpus, initialisation).")]
TaskOpt = Annotated[
    str, typer.Option(help="The toy world's task: 'toy', 'signoff', or package.module:factory (see the README).")
]
RunDirOpt = Annotated[Path, typer.Option(help="The run directory (all of a run's state; resumable).")]
ServerOpt = Annotated[str, typer.Option(envvar="ACTIVEDPO_SERVER", help="host:port, or 'embedded'.")]
TokenOpt = Annotated[str | None, typer.Option(envvar="ACTIVEDPO_TOKEN", help="The server's bearer token.")]
TlsCaOpt = Annotated[Path | None, typer.Option(help="Use TLS, trusting this CA certificate.")]


def _world(world: Path | None, preset: Preset, seed: int, cache_dir: Path | None, task: str = "toy"):
    """Open ``--world``, or the cached world for ``--preset``/``--seed``/``--task``, building it when missing."""
    from activedpo_trainer.progress import progress_bars, quiet_libraries
    from activedpo_trainer.toyworld import ToyWorldConfig, build_toyworld, load_toyworld, world_dir

    if world is not None:
        return load_toyworld(world)
    config = ToyWorldConfig.preset(preset.value, seed=seed, task=task)
    if not (world_dir(config, cache_dir) / "world.json").is_file():
        err.print(f"building the {preset.value} toy world (task {task}, seed {seed}) first …")
    quiet_libraries()
    with progress_bars(transient=True) as bar:
        return build_toyworld(config, cache_dir=cache_dir, progress=bar)


@toyworld_app.command("build")
def toyworld_build(
    preset: PresetOpt = Preset.default,
    task: TaskOpt = "toy",
    seed: SeedOpt = 0,
    cache_dir: CacheDir = None,
    force: Annotated[bool, typer.Option(help="Rebuild even when a cached world exists.")] = False,
) -> None:
    """Build the toy world (or reuse the cached one) and print pi_ref's held-out reward."""
    from activedpo_trainer.progress import progress_bars, quiet_libraries
    from activedpo_trainer.toyworld import ToyWorldConfig, build_toyworld, world_dir

    quiet_libraries()
    config = ToyWorldConfig.preset(preset.value, seed=seed, task=task)
    cached = (world_dir(config, cache_dir) / "world.json").is_file() and not force
    with user_errors(), progress_bars() as bar:
        world = build_toyworld(config, cache_dir=cache_dir, force=force, progress=bar)
    _print_world(world, cached)


@toyworld_app.command("info")
def toyworld_info(
    world: WorldDir = None,
    preset: PresetOpt = Preset.default,
    task: TaskOpt = "toy",
    seed: SeedOpt = 0,
    cache_dir: CacheDir = None,
) -> None:
    """Describe a toy world: where it lives, its model, its prompts and pi_ref's reward."""
    with user_errors():
        w = _world(world, preset, seed, cache_dir, task)
    _print_world(w, cached=True)


@toyworld_app.command("check")
def toyworld_check(
    out: Annotated[Path, typer.Option(help="Directory for the DPO checkpoint this check trains.")],
    pairs: Annotated[int, typer.Option(help="Oracle-labeled pairs of pi_ref's own samples to train on.", min=1)] = 200,
    label_seed: Annotated[int, typer.Option(help="Seed of the prompts, samples and Bradley-Terry draws.")] = 0,
    prompts: Annotated[int, typer.Option(help="Held-out prompts to evaluate on.", min=1)] = 100,
    world: WorldDir = None,
    preset: PresetOpt = Preset.default,
    task: TaskOpt = "toy",
    seed: SeedOpt = 0,
    cache_dir: CacheDir = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
) -> None:
    """Check the world is a real problem: DPO on pi_ref's own oracle-labeled pairs must beat pi_ref."""
    from activedpo_trainer.progress import progress_bars, quiet_libraries
    from activedpo_trainer.toyworld import dpo_check

    quiet_libraries()
    with user_errors():
        w = _world(world, preset, seed, cache_dir, task)
        with progress_bars(transient=True) as bar:
            result = dpo_check(w, out, n_pairs=pairs, seed=label_seed, eval_prompts=prompts, progress=bar)
    if as_json:
        console.print_json(json.dumps(result.to_dict()))
        return
    r = result.report
    console.print(f"pi_ref (SFT):           mean held-out reward {r.ref_mean:.3f} ± {r.ref_se:.3f} (n={r.n})")
    console.print(f"DPO on {result.pairs} pairs:     mean held-out reward {r.mean:.3f} ± {r.se:.3f} (n={r.n})")
    console.print(
        f"win-rate vs pi_ref {r.win_rate:.1%}; mean reward gap within a pair {result.pair_reward_gap:.2f}; "
        f"DPO training {result.train_seconds:.1f} s"
    )


def _print_world(world, cached: bool) -> None:
    info, cfg = world.info, world.config
    sft = info["sft_eval"]
    task = world.task
    how = "reused from cache" if cached else "built"
    console.print(f"toy world [bold]{cfg.name}[/] (task {cfg.task}, seed {cfg.seed}) {how}: {world.root}")
    console.print(
        f"  model: Llama, {cfg.num_layers} layers, hidden {cfg.hidden_size}; SFT {cfg.sft_steps} steps "
        f"on {cfg.sft_examples} demonstrations; build time {info['build_seconds']:.1f} s"
    )
    console.print(f"  prompts: {len(task.train_prompts())} train, {len(task.heldout_prompts())} held out")
    console.print(
        f"  SFT policy (pi_ref) mean held-out oracle reward: {sft['mean']:.3f} ± {sft['se']:.3f} (n={sft['n']})"
    )


@app.command("eval")
def eval_cmd(
    checkpoint: Annotated[
        Path | None, typer.Option(help="Checkpoint directory or manifest [default: the toy world's SFT model].")
    ] = None,
    world: WorldDir = None,
    preset: PresetOpt = Preset.default,
    task: TaskOpt = "toy",
    seed: SeedOpt = 0,
    cache_dir: CacheDir = None,
    prompts: Annotated[int, typer.Option(help="Held-out prompts to evaluate on.", min=1)] = 100,
    sample_seed: Annotated[int, typer.Option(help="Seed of the sampled responses.")] = 0,
    temperature: Annotated[float, typer.Option(help="Sampling temperature (0 = greedy).", min=0.0)] = 1.0,
    vs_ref: Annotated[
        bool, typer.Option(help="Also sample pi_ref (adapter disabled) and report the win-rate against it.")
    ] = True,
    device: Annotated[str | None, typer.Option(help="cuda or cpu [default: cuda when present].")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Mean oracle reward (± standard error) of a checkpoint on the toy world's held-out prompts."""
    from activedpo_trainer.checkpoint import load_model
    from activedpo_trainer.progress import progress_bars, quiet_libraries
    from activedpo_trainer.toyworld import heldout_eval

    quiet_libraries()
    with user_errors():
        w = _world(world, preset, seed, cache_dir, task)
        loaded = load_model(checkpoint if checkpoint is not None else w.sft_dir, device=device)
        with_ref = vs_ref and loaded.manifest.adapter is not None
        with progress_bars(transient=True) as bar:
            report = heldout_eval(loaded, w.config, prompts, sample_seed, with_ref, bar, temperature=temperature)
    name = loaded.manifest.id
    if as_json:
        console.print_json(json.dumps({"checkpoint": name, **report.to_dict()}))
    else:
        console.print(f"{name}: {report}")


@app.command("generate")
def generate_cmd(
    checkpoint: Annotated[Path, typer.Option(help="Checkpoint directory or manifest.")],
    prompts_file: Annotated[Path, typer.Option("--prompts", help="Prompts, one per line (or JSONL with 'prompt').")],
    out: Annotated[Path, typer.Option(help="Output JSONL: one {'prompt', 'responses'} row per prompt.")],
    k: Annotated[int, typer.Option("--responses", "-k", help="Responses per prompt.", min=1)] = 3,
    temperature: Annotated[float, typer.Option(min=0.0)] = 1.0,
    top_p: Annotated[float, typer.Option(min=0.0, max=1.0)] = 1.0,
    max_new_tokens: Annotated[int, typer.Option(min=1)] = 128,
    batch_size: Annotated[int, typer.Option(min=1)] = 64,
    seed: Annotated[int, typer.Option()] = 0,
    device: Annotated[str | None, typer.Option(help="cuda or cpu [default: cuda when present].")] = None,
) -> None:
    """Sample K responses per prompt from a checkpoint."""
    from activedpo_trainer.checkpoint import load_model
    from activedpo_trainer.generation import GenerationSettings, generate
    from activedpo_trainer.progress import progress_bars, quiet_libraries

    quiet_libraries()
    with user_errors():
        prompts = _read_prompts(prompts_file)
        settings = GenerationSettings(
            temperature=temperature, top_p=top_p, max_new_tokens=max_new_tokens, batch_size=batch_size
        )
        loaded = load_model(checkpoint, device=device)
        with progress_bars() as bar:
            responses = generate(
                loaded.model,
                loaded.tokenizer,
                prompts,
                k,
                settings,
                seed=seed,
                progress=lambda d, t: bar("generate", d, t),
            )
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w") as f:
        for p, rs in zip(prompts, responses, strict=True):
            f.write(json.dumps({"prompt": p, "responses": rs}) + "\n")
    console.print(f"wrote {len(prompts)} prompts × {k} responses to {out}")


def _read_prompts(path: Path) -> list[str]:
    if not path.is_file():
        raise FileNotFoundError(f"prompts file not found: {path}")
    prompts = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        if line.lstrip().startswith("{"):
            try:
                prompt = json.loads(line)["prompt"]
            except (json.JSONDecodeError, KeyError, TypeError) as e:
                raise ValueError(f"{path}:{n}: expected a JSON object with a 'prompt' string ({e})") from e
            if not isinstance(prompt, str):
                raise ValueError(f"{path}:{n}: 'prompt' must be a string")
            prompts.append(prompt)
        else:
            prompts.append(line)
    if not prompts:
        raise ValueError(f"no prompts in {path}")
    return prompts


def _read_rows(path: Path) -> list[dict]:
    if not path.is_file():
        raise FileNotFoundError(f"labels file not found: {path}")
    rows = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}:{n}: not JSON ({e})") from e
        if not isinstance(row, dict) or not all(isinstance(row.get(k), str) for k in ("prompt", "chosen", "rejected")):
            raise ValueError(f"{path}:{n}: expected an object with string 'prompt', 'chosen' and 'rejected'")
        rows.append(row)
    if not rows:
        raise ValueError(f"no labeled pairs in {path}")
    return rows


@train_app.command("dpo")
def train_dpo_cmd(
    labels: Annotated[Path, typer.Option(help="JSONL of {'prompt', 'chosen', 'rejected'} rows.")],
    base: Annotated[str, typer.Option(help="Reference model: a base/SFT checkpoint, directory or Hugging Face id.")],
    out: Annotated[Path, typer.Option(help="Directory for the new checkpoint (adapter + manifest.json).")],
    parent: Annotated[
        Path | None, typer.Option(help="Checkpoint to continue from [default: a fresh adapter on the base].")
    ] = None,
    mode: Annotated[
        DPOMode, typer.Option(help="continue: start from --parent's adapter; retrain: fresh adapter.")
    ] = DPOMode.continue_,
    beta: Annotated[float, typer.Option(min=0.0)] = 0.1,
    lr: Annotated[float, typer.Option(min=0.0)] = 1e-4,
    epochs: Annotated[float, typer.Option(min=0.0)] = 4.0,
    batch_size: Annotated[int, typer.Option(min=1)] = 8,
    lora_r: Annotated[int, typer.Option(min=1)] = 128,
    lora_alpha: Annotated[int, typer.Option(min=1)] = 512,
    seed: Annotated[int, typer.Option()] = 0,
    device: Annotated[str | None, typer.Option(help="cuda or cpu [default: cuda when present].")] = None,
) -> None:
    """One DPO round on labeled pairs, LoRA on the base, reference = the base model."""
    from activedpo_trainer.checkpoint import resolve_checkpoint
    from activedpo_trainer.dpo import DPOSettings, train_dpo
    from activedpo_trainer.progress import progress_bars, quiet_libraries

    quiet_libraries()
    with user_errors():
        rows = _read_rows(labels)
        base_m = resolve_checkpoint(str(base))
        parent_m = resolve_checkpoint(str(parent)) if parent is not None else None
        settings = DPOSettings(
            beta=beta,
            lr=lr,
            epochs=epochs,
            batch_size=batch_size,
            lora_r=lora_r,
            lora_alpha=lora_alpha,
            seed=seed,
            device=device,
        )
        with progress_bars() as bar:
            manifest = train_dpo(
                base_m, rows, out, settings, parent=parent_m, mode=mode.value, progress=lambda d, t: bar("dpo", d, t)
            )
    console.print(f"checkpoint {manifest.id} (parent {manifest.parent_id}) written to {out}")


@app.command("round")
def round_cmd(
    budget: Annotated[int, typer.Option(help="Labels per round.")] = 50,
    prompts: Annotated[int, typer.Option(help="Prompts sampled per round.")] = 1000,
    responses: Annotated[int, typer.Option(help="Responses generated per prompt.")] = 3,
    rounds: Annotated[int, typer.Option(help="Rounds to run (resumes an interrupted one first).")] = 1,
    strategy: Annotated[str, typer.Option(help="activedpo, random, aplp or apo.")] = "activedpo",
    annotator: Annotated[
        str, typer.Option(help="Who labels: 'oracle' (the toy world's hidden reward) or 'file' (people).")
    ] = "oracle",
    dpo_mode: Annotated[DPOMode, typer.Option(help="Continue the last adapter or retrain from the base.")] = (
        DPOMode.continue_
    ),
    dpo_epochs: Annotated[float, typer.Option(help="DPO epochs per round.")] = 4.0,
    dpo_lr: Annotated[float, typer.Option(help="DPO learning rate.")] = 1e-4,
    eval_prompts: Annotated[int, typer.Option(help="Held-out prompts evaluated after each round.")] = 100,
    seed: Annotated[int, typer.Option(help="Seed of prompt sampling, generation and oracle draws.")] = 0,
    run_dir: RunDirOpt = Path("runs/default"),
    server: ServerOpt = "embedded",
    token: TokenOpt = None,
    tls_ca: TlsCaOpt = None,
    proj_dim: Annotated[int, typer.Option(help="Embedded server: projection dimension.")] = 8192,
    lora_r: Annotated[int, typer.Option(help="Embedded server: rank of round one's fresh adapter.")] = 128,
    device: Annotated[
        str | None,
        typer.Option(
            help="Generation, DPO, evaluation and an embedded server: cuda or cpu [default: cuda when present]."
        ),
    ] = None,
    world: WorldDir = None,
    preset: PresetOpt = Preset.default,
    task: TaskOpt = "toy",
    world_seed: SeedOpt = 0,
    cache_dir: CacheDir = None,
) -> None:
    """Run ActiveDPO rounds end to end: generate, select, label, train DPO, reload, evaluate."""
    from activedpo_client.rounds import RoundConfig
    from activedpo_trainer.progress import quiet_libraries

    quiet_libraries()
    with user_errors():
        w = _world(world, preset, world_seed, cache_dir, task)
        config = RoundConfig(budget=budget, prompts=prompts, responses=responses, strategy=strategy,
                             annotator=annotator, dpo_mode=dpo_mode.value, dpo_epochs=dpo_epochs, dpo_lr=dpo_lr,
                             seed=seed, eval_prompts=eval_prompts)  # fmt: skip
        from activedpo_client.rounds import AwaitingLabels

        try:
            _run_rounds(run_dir, w, config, rounds, server, token, tls_ca, proj_dim, lora_r, device)
        except AwaitingLabels as e:
            console.print(f"[yellow]waiting for labels:[/] {e}")
            raise typer.Exit(3) from None


def _run_rounds(run_dir, world, config, rounds, server, token, tls_ca, proj_dim, lora_r, device=None) -> list[dict]:
    from activedpo_client.rounds import ServerSpec, run_rounds
    from activedpo_trainer.progress import progress_bars

    def report(m: dict) -> None:
        console.print(
            f"{config.strategy} round {m['round']}: {m['labels']} labels, reward {m['reward']:.3f} "
            f"± {m['se']:.3f} (π_ref {m['ref_reward']:.3f}), win-rate {m['win_rate']:.1%}"
        )

    extra = ("--device", device) if device else ()  # the embedded server featurizes on the same device
    spec = ServerSpec(server, token, tls_ca, proj_dim, lora_r, extra)
    return run_rounds(run_dir, world, config, rounds, spec, progress_bars, say=err.print, report=report, device=device)


def _server_for(run_dir: Path, server: str, token: str | None, tls_ca: Path | None):
    """A client for ``server``; for ``embedded``, the run's own server started for the call."""
    from contextlib import ExitStack

    from activedpo_client.remote import Connection, EmbeddedServer, SelectorClient

    stack = ExitStack()
    if server == "embedded":
        if not (run_dir / "server").is_dir():
            raise FileNotFoundError(f"{run_dir} has no embedded server state; run `activedpo-client round` first")
        args_file = run_dir / "server" / "args.json"
        args = json.loads(args_file.read_text()) if args_file.exists() else []
        server = stack.enter_context(EmbeddedServer(run_dir / "server", args=args)).target
    client = stack.enter_context(SelectorClient(Connection(server, token=token, tls_ca=tls_ca)))
    client.wait_ready()
    return stack, client


@app.command("status")
def status_cmd(
    run_dir: RunDirOpt = Path("runs/default"),
    server: ServerOpt = "embedded",
    token: TokenOpt = None,
    tls_ca: TlsCaOpt = None,
) -> None:
    """Show a run: rounds done, labels and reward per round, and the server's state."""
    from rich.table import Table

    from activedpo_client.report import read_metrics
    from activedpo_client.rounds import Run

    with user_errors():
        run = Run.open(run_dir)
        rows = read_metrics(run_dir)
        table = Table(title=f"{run_dir}: {run.rounds_done} rounds of {run.config.strategy}, budget {run.config.budget}")
        for col in ("round", "labels", "reward ± SE", "π_ref", "win-rate", "wall s"):
            table.add_column(col, justify="right")
        for m in rows:
            cells = [str(m["round"]), str(m["labels"]), f"{m['reward']:.3f} ± {m['se']:.3f}"]
            cells += [f"{m['ref_reward']:.3f}", f"{m['win_rate']:.1%}", f"{sum(m['seconds'].values()):.0f}"]
            table.add_row(*cells)
        console.print(table)
        stack, client = _server_for(run_dir, server, token, tls_ca)
        with stack:
            s = client.status()
        console.print(
            f"server: checkpoint {s['checkpoint_id']}, {s['pool_size']} pairs, {s['labeled']} labeled "
            f"({s['annotations']} annotations), {s['leased']} leased, d = {s['feature_dim']}"
        )


@app.command("export")
def export_cmd(
    out: Annotated[Path, typer.Option(help="JSONL file of prompt/chosen/rejected rows.")],
    run_dir: RunDirOpt = Path("runs/default"),
    server: ServerOpt = "embedded",
    token: TokenOpt = None,
    tls_ca: TlsCaOpt = None,
) -> None:
    """Write every labeled pair as JSONL that `datasets.load_dataset("json", data_files=...)` reads."""
    with user_errors():
        stack, client = _server_for(run_dir, server, token, tls_ca)
        with stack:
            rows = [{"prompt": r["prompt"], "chosen": r["chosen"], "rejected": r["rejected"]}
                    for r in client.export_labels()]  # fmt: skip
        tmp = out.with_suffix(out.suffix + ".tmp")
        tmp.write_text("".join(json.dumps(r) + "\n" for r in rows))
        tmp.replace(out)
    console.print(f"{len(rows)} labeled pairs written to {out}")


@app.command(
    "bench", context_settings={"allow_extra_args": True, "ignore_unknown_options": True}, add_help_option=False
)
def bench_cmd(ctx: typer.Context) -> None:
    """The label-efficiency benchmark: strategies × tasks × seeds, resumable (`bench --help` lists its options)."""
    from activedpo_client.bench import main as bench_main

    with user_errors():
        code = bench_main(ctx.args)
    raise typer.Exit(code)


@app.command("quickstart")
def quickstart_cmd(
    rounds: Annotated[int, typer.Option(help="Rounds per strategy.")] = 3,
    budget: Annotated[int, typer.Option(help="Labels per round.")] = 50,
    prompts: Annotated[int, typer.Option(help="Prompts sampled per round.")] = 1000,
    responses: Annotated[int, typer.Option(help="Responses per prompt.")] = 3,
    compare: Annotated[list[str], typer.Option(help="Strategies run beside activedpo from the same start.")] = [  # noqa: B006
        "random"
    ],
    proj_dim: Annotated[
        int, typer.Option(help="Projection dimension (the paper's 8192 takes about 3× longer on two CPU cores).")
    ] = 2048,
    lora_r: Annotated[int, typer.Option(help="LoRA rank of round one's fresh adapter.")] = 128,
    eval_prompts: Annotated[int, typer.Option(help="Held-out prompts per evaluation.")] = 100,
    dpo_epochs: Annotated[float, typer.Option(help="DPO epochs per round.")] = 4.0,
    seed: Annotated[int, typer.Option(help="Seed shared by every strategy's run.")] = 0,
    run_dir: Annotated[Path, typer.Option(help="Parent directory of the runs.")] = Path("runs/quickstart"),
    world: WorldDir = None,
    preset: PresetOpt = Preset.default,
    task: TaskOpt = "toy",
    world_seed: SeedOpt = 0,
    cache_dir: CacheDir = None,
) -> None:
    """Build the toy world, run ActiveDPO and the baselines side by side, and print reward per round."""
    import time

    from rich.table import Table

    from activedpo_client.report import plot_rewards
    from activedpo_client.rounds import RoundConfig
    from activedpo_trainer.progress import quiet_libraries

    quiet_libraries()
    with user_errors():
        w = _world(world, preset, world_seed, cache_dir, task)
        if world is None and task != "toy":  # each task's runs in their own directory
            from activedpo_trainer.toyworld import task_slug

            run_dir = run_dir / task_slug(task)
        results: dict[str, list[dict]] = {}
        wall: dict[str, float] = {}
        for strategy in ["activedpo", *[c for c in compare if c != "activedpo"]]:
            config = RoundConfig(budget=budget, prompts=prompts, responses=responses, strategy=strategy, seed=seed,
                                 eval_prompts=eval_prompts, dpo_epochs=dpo_epochs)  # fmt: skip
            t0 = time.perf_counter()
            results[strategy] = _run_rounds(run_dir / strategy, w, config, rounds, "embedded", None, None, proj_dim,
                                            lora_r)  # fmt: skip
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
        table.add_row("0 (π_ref)", "0", *[f"{r[0]['ref_reward']:.3f}" if r else "—" for r in results.values()])
        for i, m in enumerate(first):
            cells = [f"{r[i]['reward']:.3f} ± {r[i]['se']:.3f}" if i < len(r) else "—" for r in results.values()]
            table.add_row(str(m["round"]), str(m["labels"]), *cells)
        console.print(table)
        for strategy, rows in results.items():
            steps = {s: sum(m["seconds"][s] for m in rows) for s in rows[0]["seconds"]} if rows else {}
            detail = ", ".join(f"{s} {v:.0f} s" for s, v in steps.items())
            console.print(f"{strategy}: {wall[strategy]:.0f} s this invocation; all rounds: {detail}")
        console.print(f"plot: {plot}")


@labels_app.command("import")
def labels_import_cmd(
    file: Annotated[
        Path, typer.Argument(help="JSONL ({pair_id, preference: A|B|TIE, annotator}) or a Label Studio export.")
    ],
    run_dir: RunDirOpt = Path("runs/default"),
) -> None:
    """Validate finished labels against the round's batch and keep the valid rows for `round` to submit."""
    from activedpo_client.rounds import Run, import_labels

    with user_errors():
        run = Run.open(run_dir)
        held, errors = import_labels(run, file)
    for e in errors:
        err.print(f"[red]rejected:[/] {e}")
    console.print(f"{held} labels held for round {run.rounds_done + 1}; run `activedpo-client round` to submit them")
    if errors:
        raise typer.Exit(1)


if __name__ == "__main__":  # pragma: no cover
    app()
