"""`activedpo-client toyworld …` and `eval`: the embedded toy world, its oracle and its held-out evaluation."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from activedpo_client.cli.common import (
    CacheDir,
    DeviceOpt,
    DPOBetaOpt,
    DPOEpochsOpt,
    DPOLrOpt,
    EvalPairSamplesOpt,
    EvalPromptsOpt,
    EvalSamplesOpt,
    PresetOpt,
    TaskOpt,
    TemperatureOpt,
    WorldDir,
    WorldSeedOpt,
    console,
    open_world,
    user_errors,
)
from activedpo_client.settings import RoundConfig
from activedpo_core.options import renamed
from activedpo_trainer.dpo import DPOSettings
from activedpo_trainer.generation import GenerationSettings
from activedpo_trainer.toyworld import ToyWorldConfig

app = typer.Typer(help="The embedded toy world: a task with a hidden oracle and a tiny SFT model.")

# old option names, still read for one release (eval's --seed now seeds the samples, as everywhere else)
WORLD_RENAMED = {"--seed": "--world-seed"}
CHECK_RENAMED = WORLD_RENAMED | {"--lr": "--dpo-lr", "--epochs": "--dpo-epochs", "--beta": "--dpo-beta",
                                 "--prompts": "--eval-prompts", "--pair-samples": "--eval-pair-samples"}  # fmt: skip
EVAL_RENAMED = {"--prompts": "--eval-prompts", "--sample-seed": "--seed"}


@app.command("build", cls=renamed(WORLD_RENAMED, "activedpo-client toyworld build"))
def toyworld_build(
    preset: PresetOpt = ToyWorldConfig.name,
    task: TaskOpt = ToyWorldConfig.task,
    world_seed: WorldSeedOpt = ToyWorldConfig.seed,
    cache_dir: CacheDir = None,
    force: Annotated[bool, typer.Option(help="Rebuild even when a cached world exists.")] = False,
) -> None:
    """Build the toy world (or reuse the cached one) and print pi_ref's held-out reward."""
    from activedpo_core.progress import progress_bars, quiet_libraries
    from activedpo_trainer.toyworld import ToyWorldConfig, build_toyworld, world_dir

    quiet_libraries()
    config = ToyWorldConfig.preset(preset.value, seed=world_seed, task=task)
    cached = (world_dir(config, cache_dir) / "world.json").is_file() and not force
    with user_errors(), progress_bars() as bar:
        world = build_toyworld(config, cache_dir=cache_dir, force=force, progress=bar)
    _print_world(world, cached)


@app.command("info", cls=renamed(WORLD_RENAMED, "activedpo-client toyworld info"))
def toyworld_info(
    world: WorldDir = None,
    preset: PresetOpt = ToyWorldConfig.name,
    task: TaskOpt = ToyWorldConfig.task,
    world_seed: WorldSeedOpt = ToyWorldConfig.seed,
    cache_dir: CacheDir = None,
) -> None:
    """Describe a toy world: where it lives, its model, its prompts and pi_ref's reward."""
    with user_errors():
        w = open_world(world, preset, world_seed, cache_dir, task)
    _print_world(w, cached=True)


@app.command("check", cls=renamed(CHECK_RENAMED, "activedpo-client toyworld check"))
def toyworld_check(
    out: Annotated[Path, typer.Option(help="Directory for the DPO checkpoint this check trains.")],
    pairs: Annotated[int, typer.Option(help="Oracle-labeled pairs of pi_ref's own samples to train on.", min=1)] = 200,
    label_seed: Annotated[int, typer.Option(help="Seed of the prompts, samples and Bradley-Terry draws.")] = 0,
    eval_prompts: EvalPromptsOpt = RoundConfig.eval_prompts,
    world: WorldDir = None,
    preset: PresetOpt = ToyWorldConfig.name,
    task: TaskOpt = ToyWorldConfig.task,
    world_seed: WorldSeedOpt = ToyWorldConfig.seed,
    cache_dir: CacheDir = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the result as JSON.")] = False,
    dpo_lr: DPOLrOpt = DPOSettings.lr,
    dpo_epochs: DPOEpochsOpt = DPOSettings.epochs,
    dpo_beta: DPOBetaOpt = DPOSettings.beta,
    eval_samples: EvalSamplesOpt = RoundConfig.eval_samples,
    eval_pair_samples: EvalPairSamplesOpt = RoundConfig.eval_pair_samples,
) -> None:
    """Check the world is a real problem: DPO on pi_ref's own oracle-labeled pairs must beat pi_ref."""
    from activedpo_core.progress import progress_bars, quiet_libraries
    from activedpo_trainer.dpo import DPOSettings
    from activedpo_trainer.heldout import dpo_check

    quiet_libraries()
    with user_errors():
        if eval_pair_samples == 1:
            raise ValueError("--eval-pair-samples must be 0 (off) or at least 2")
        settings = DPOSettings(lr=dpo_lr, epochs=dpo_epochs, beta=dpo_beta)
        w = open_world(world, preset, world_seed, cache_dir, task)
        with progress_bars(transient=True) as bar:
            result = dpo_check(w, out, n_pairs=pairs, seed=label_seed, eval_prompts=eval_prompts, settings=settings,
                               progress=bar, eval_samples=eval_samples, pair_samples=eval_pair_samples)  # fmt: skip
    if as_json:
        console.print_json(json.dumps(result.to_dict()))
        return
    r = result.report
    console.print(f"pi_ref (SFT):           mean held-out reward {r.ref_reward:.3f} ± {r.ref_se:.3f} (n={r.n})")
    console.print(f"DPO on {result.pairs} pairs:     mean held-out reward {r.reward:.3f} ± {r.se:.3f} (n={r.n})")
    console.print(
        f"win-rate vs pi_ref {r.win_rate:.1%}; mean reward gap within a pair {result.pair_reward_gap:.2f}; "
        f"DPO training {result.train_seconds:.1f} s"
    )
    if result.pref_acc is not None:
        console.print(
            f"preference accuracy of its implicit reward on {result.pref_pairs} judged held-out pairs: "
            f"{result.pref_acc:.1%} ± {result.pref_acc_se:.1%} (pi_ref 50%)"
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
        f"  SFT policy (pi_ref) mean held-out oracle reward: {sft['reward']:.3f} ± {sft['se']:.3f} (n={sft['n']})"
    )


def eval_cmd(
    checkpoint: Annotated[
        Path | None, typer.Option(help="Checkpoint directory or manifest \\[default: the toy world's SFT model].")
    ] = None,
    world: WorldDir = None,
    preset: PresetOpt = ToyWorldConfig.name,
    task: TaskOpt = ToyWorldConfig.task,
    world_seed: WorldSeedOpt = ToyWorldConfig.seed,
    cache_dir: CacheDir = None,
    eval_prompts: EvalPromptsOpt = RoundConfig.eval_prompts,
    seed: Annotated[int, typer.Option(help="Seed of the sampled responses.")] = 0,
    temperature: TemperatureOpt = GenerationSettings.temperature,
    vs_ref: Annotated[
        bool, typer.Option(help="Also sample pi_ref (adapter disabled) and report the win-rate against it.")
    ] = True,
    device: DeviceOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Mean oracle reward (± standard error) of a checkpoint on the toy world's held-out prompts."""
    from activedpo_core.checkpoint import load_model
    from activedpo_core.progress import progress_bars, quiet_libraries
    from activedpo_trainer.heldout import heldout_eval

    quiet_libraries()
    with user_errors():
        w = open_world(world, preset, world_seed, cache_dir, task)
        loaded = load_model(checkpoint if checkpoint is not None else w.sft_dir, device=device)
        with_ref = vs_ref and loaded.manifest.adapter is not None
        with progress_bars(transient=True) as bar:
            report = heldout_eval(loaded, w.config, eval_prompts, seed, with_ref, bar, temperature=temperature)
    name = loaded.manifest.id
    if as_json:
        console.print_json(json.dumps({"checkpoint": name, **report.to_dict()}))
    else:
        console.print(f"{name}: {report}")
