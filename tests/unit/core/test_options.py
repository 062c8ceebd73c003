"""One name and one default per setting across both command lines; --config files; old names still read."""

from __future__ import annotations

from enum import Enum

import pytest
import typer
from typer.main import get_command
from typer.testing import CliRunner

from activedpo_client.cli import app as client_app
from activedpo_client.cli.homes import HOMES as SETTING_HOMES
from activedpo_client.cli.homes import home_default
from activedpo_client.settings import RoundConfig
from activedpo_core.options import ConfigOpt, read_config, renamed, write_config
from activedpo_server.cli import FEATURIZE_RENAMED, SERVE_RENAMED
from activedpo_server.cli import app as server_app
from activedpo_trainer.dpo import DPOSettings

HOMES = {name: home_default(name) for name in SETTING_HOMES} | {"--dtype": "auto"}
# options whose default differs between commands on purpose (None: required, or derived and said in the help)
DIFFERS = {
    ("quickstart", "--rounds"): "the demo runs three rounds per strategy; `round` runs the one asked for",
    ("quickstart", "--run-dir"): "the parent of one run per strategy",
    ("quickstart", "--proj-dim"): "the demo's d = 2048 keeps it to minutes on two CPU cores (QUICKSTART_PROJ_DIM)",
    ("activedpo-server health", "--server"): "the server's own address: health checks a running server",
    # the benchmark is a study with settings of its own (BenchSettings), under which its committed results ran
    ("bench", "--proj-dim"): "the study's d = 2048 (BENCH_PROJ_DIM; --paper runs the paper's 8192 over 10 rounds)",
    ("bench", "--rounds"): "three rounds per run, as the quickstart",
    ("bench", "--prompts"): "a list of pool sizes (a pool-size study), 1000 as a round's",
    ("bench", "--eval-prompts"): "every one of a toy world's 200 held-out prompts: less noise between arms",
    ("bench", "--eval-samples"): "four samples per held-out prompt: less noise between arms",
    ("bench", "--eval-pair-samples"): "six π_ref samples per held-out prompt: up to 15 judged pairs each",
    ("bench", "--annotator"): "the toy world's oracle (the benchmark has no people; `round` picks by workload)",
}
OLD_NAMES = {"--prompts": "generate", "--base": "train dpo", "--beta": "train dpo", "--lr": "train dpo",
             "--epochs": "train dpo", "--mode": "train dpo", "--sample-seed": "eval",
             "--pair-samples": "toyworld check",
             "--address": "health", "--state": "labelstudio sync", "--project": "labelstudio sync",
             "--lora-targets": "serve", "--backend": "featurize"}  # fmt: skip


def options():
    """(command path, option name, default, hidden) for every option of both programs."""

    def walk(cmd, path):
        if hasattr(cmd, "commands"):
            for name, sub in cmd.commands.items():
                yield from walk(sub, [*path, name])
            return
        for p in cmd.params:
            if type(p).__name__.endswith("Option"):
                default = p.default.value if isinstance(p.default, Enum) else p.default
                for name in p.opts:
                    if name.startswith("--"):
                        yield " ".join(path), name, default, p.hidden

    yield from walk(get_command(client_app), [])
    yield from (("activedpo-server " + c, n, d, h) for c, n, d, h in walk(get_command(server_app), []))


def _home(value):
    return value.value if isinstance(value, Enum) else value


def test_every_setting_defaults_to_its_one_home_in_every_command():
    seen: dict[str, list[str]] = {}
    for command, name, default, _ in options():
        if name not in HOMES or default is None or (command, name) in DIFFERS:
            continue
        seen.setdefault(name, []).append(command)
        assert default == _home(HOMES[name]), f"{command} {name} defaults to {default!r}, its home to {HOMES[name]!r}"
    # the shared settings are in several commands, so this is a real cross-check
    assert {"round", "select", "activedpo-server serve", "activedpo-server featurize"} <= set(seen["--proj-dim"])
    assert {"round", "select", "train dpo", "activedpo-server serve"} <= set(seen["--target-modules"])
    assert {"train dpo", "toyworld check"} <= set(seen["--dpo-lr"])


def test_one_default_per_option_name_across_commands():
    defaults: dict[str, dict[str, object]] = {}
    for command, name, default, _ in options():
        if default is not None and default != [] and (command, name) not in DIFFERS:
            defaults.setdefault(name, {})[command] = default
    drift = {n: d for n, d in defaults.items() if len({repr(v) for v in d.values()}) > 1}
    assert drift == {}, f"options with more than one default: {drift}"


def test_old_names_are_gone_from_help_and_the_new_ones_are_there():
    names = {name for _, name, _, _ in options()}
    assert {"--prompt-file", "--dpo-beta", "--world-seed", "--eval-prompts", "--state-file", "--server-project",
            "--proj-seed", "--featurize-backend", "--gen-batch-size", "--dpo-batch-size"} <= names  # fmt: skip
    for old, command in OLD_NAMES.items():
        assert old not in {n for c, n, _, _ in options() if c.endswith(command)}, f"{command} still lists {old}"


def test_an_old_name_is_read_with_a_deprecation_line(tmp_path):
    result = CliRunner().invoke(server_app, ["health", "--address", "127.0.0.1:1", "--timeout", "0.2"])
    assert result.exit_code == 1
    assert "`activedpo-server health --address` is now --server" in result.stderr
    assert "not healthy: 127.0.0.1:1" in result.stderr  # the old name's value reached the new option
    assert set(SERVE_RENAMED) < set(FEATURIZE_RENAMED)


def _command(tmp_path):
    """A command with --config, whose run records its resolved options."""
    app = typer.Typer()

    @app.command(cls=renamed({"--beta": "--dpo-beta"}, "t"))
    def run(ctx: typer.Context, budget: int = RoundConfig.budget, dpo_beta: float = DPOSettings.beta,
            model: str = "", token: str = "", config: ConfigOpt = None) -> None:  # fmt: skip
        write_config(tmp_path / "resolved.toml", ctx.params, "t")
        print(budget, dpo_beta, model)

    return app


@pytest.mark.parametrize("suffix", [".toml", ".yaml"])
def test_a_config_file_sets_options_and_the_command_line_wins(tmp_path, suffix):
    body = ('budget = 7\nmodel = "Qwen/Qwen2-0.5B"\n[dpo]\nbeta = 0.25\n' if suffix == ".toml" else
            "budget: 7\nmodel: Qwen/Qwen2-0.5B\ndpo:\n  beta: 0.25\n")  # fmt: skip
    cfg = tmp_path / f"c{suffix}"
    cfg.write_text(body)
    app, runner = _command(tmp_path), CliRunner()
    assert runner.invoke(app, ["--config", str(cfg)]).stdout.split() == ["7", "0.25", "Qwen/Qwen2-0.5B"]
    got = runner.invoke(app, ["--config", str(cfg), "--budget", "9", "--beta", "0.5"])
    assert got.stdout.split() == ["9", "0.5", "Qwen/Qwen2-0.5B"]
    # the resolved file reruns it: the same values, read back
    assert read_config(tmp_path / "resolved.toml") == {"budget": 9, "dpo_beta": 0.5, "model": "Qwen/Qwen2-0.5B"}
    again = runner.invoke(app, ["--config", str(tmp_path / "resolved.toml")])
    assert again.stdout.split() == ["9", "0.5", "Qwen/Qwen2-0.5B"]


def test_resolved_config_never_holds_a_secret(tmp_path):
    path = write_config(tmp_path / "c.toml", {"budget": 3, "token": "s3cret", "ls_api_key": "k", "x": None}, "t")
    assert "s3cret" not in path.read_text() and read_config(path) == {"budget": 3}


@pytest.mark.parametrize(
    ("body", "message"),
    [("budjet = 7\n", "no option --budjet"), ("budget = [\n", "is not valid TOML"), ("token = 'x'\n", "keep token")],
)
def test_a_bad_config_file_is_one_line_naming_it(tmp_path, body, message):
    cfg = tmp_path / "c.toml"
    cfg.write_text(body)
    got = CliRunner().invoke(_command(tmp_path), ["--config", str(cfg)], env={"COLUMNS": "500"})
    line = next(x for x in got.output.splitlines() if message in x)  # one line, in Typer's error box
    assert got.exit_code == 2 and str(cfg) in line


def test_the_strategies_a_command_offers_are_those_a_server_answers():
    from activedpo_core.settings import Strategy
    from activedpo_server.strategies import STRATEGIES

    assert {s.value for s in Strategy} == set(STRATEGIES)
