"""What both command lines share beyond their settings: ``--config FILE``, the resolved config a run records,
and old option names still read for one release.

``--config`` is Click's ``default_map``: a TOML or YAML file of option values, read before the command line,
so any option given on the command line wins. Keys are option names with or without dashes (``dpo-lr``,
``dpo_lr``); a table/mapping prefixes its keys (``[dpo] lr = 1e-4`` is ``dpo_lr``). A key no option of the
command has is an error naming it. :func:`write_config` writes the values a command resolved as such a file,
so ``--config run_dir/config.toml`` reruns a run.
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Iterable, Mapping
from enum import Enum
from pathlib import Path
from typing import Annotated, Any

import typer
from typer.core import TyperCommand

SECRETS = frozenset({"token", "ls_api_key"})  # never written to disk


def _flatten(data: Mapping, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in data.items():
        name = prefix + str(key).replace("-", "_")
        if isinstance(value, Mapping):
            out |= _flatten(value, name + "_")
        else:
            out[name] = value
    return out


def read_config(path: Path) -> dict[str, Any]:
    """A config file's values by parameter name (``dpo_lr``); TOML for ``.toml``, YAML for ``.yaml``/``.yml``."""
    path = Path(path)
    if not path.is_file():
        raise typer.BadParameter(f"config file not found: {path}", param_hint="--config")
    text = path.read_text()
    try:
        if path.suffix == ".toml":
            import tomllib

            data = tomllib.loads(text)
        elif path.suffix in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text) or {}
        else:
            raise typer.BadParameter(f"{path}: a config file is .toml, .yaml or .yml", param_hint="--config")
    except typer.BadParameter:
        raise
    except Exception as e:  # tomllib.TOMLDecodeError, yaml.YAMLError: one line naming the file
        raise typer.BadParameter(f"{path} is not valid {path.suffix[1:].upper()}: {e}".splitlines()[0],
                                 param_hint="--config") from None  # fmt: skip
    if not isinstance(data, Mapping):
        raise typer.BadParameter(f"{path}: expected a table of option values", param_hint="--config")
    return _flatten(data)


def _load_config(ctx: typer.Context, param, value: Path | None) -> Path | None:
    if value is None:
        return value
    values = read_config(value)
    names = {p.name for p in ctx.command.params if p.name != "config"}
    unknown = sorted(set(values) - names)
    if unknown:
        raise typer.BadParameter(
            f"{value}: no option {', '.join('--' + u.replace('_', '-') for u in unknown)} in "
            f"`{ctx.command_path}` (see --help)",
            param_hint="--config",
        )
    secret = sorted(set(values) & SECRETS)
    if secret:
        raise typer.BadParameter(f"{value}: keep {', '.join(secret)} out of files (use its environment variable)",
                                 param_hint="--config")  # fmt: skip
    ctx.default_map = {**(ctx.default_map or {}), **values}
    return value


ConfigOpt = Annotated[
    Path | None,
    typer.Option(
        "--config",
        help="A TOML or YAML file of option values (`dpo-lr = 1e-4`, or `[dpo] lr = 1e-4`); options given on the "
        "command line win.",
        is_eager=True,
        callback=_load_config,
        dir_okay=False,
    ),
]


def explicit(ctx: typer.Context) -> set[str]:
    """The parameters given on the command line, in a ``--config`` file or by an environment variable."""
    sources = {name: ctx.get_parameter_source(name) for name in ctx.params}  # Click's ParameterSource (vendored)
    return {name for name, source in sources.items() if source is not None and source.name != "DEFAULT"}


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value) if math.isfinite(value) else ("inf" if value > 0 else "-inf" if value < 0 else "nan")
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return json.dumps(str(value), ensure_ascii=False)  # JSON's string escapes are TOML's basic-string escapes


def plain(value: Any) -> Any:
    """A parameter value as a config file holds it: enums by value, paths absolute."""
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, Path):
        return str(value.expanduser().resolve())
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return value


def write_config(path: Path, values: Mapping[str, Any], command: str) -> Path:
    """Write ``values`` (parameter name → value; None and secrets left out) as a TOML file that
    ``command --config PATH`` reads back, atomically."""
    from activedpo_core.atomic import write_text

    lines = [f"# the resolved options of this run: `{command} --config {Path(path).name}` reruns it", ""]
    for name, value in values.items():
        if value is None or name in SECRETS or name == "config":
            continue
        lines.append(f"{name.replace('_', '-')} = {_toml_value(plain(value))}")
    return write_text(Path(path), "\n".join(lines) + "\n")


def renamed(names: Mapping[str, str], command: str) -> type[TyperCommand]:
    """A command class that still reads old option names (``{"--beta": "--dpo-beta"}``), saying once per name
    on stderr that it is now the new one. The old names are not in ``--help``."""

    class Renamed(TyperCommand):
        def parse_args(self, ctx, args: list[str]) -> list[str]:
            return super().parse_args(ctx, list(_rename(args, names, command)))

    return Renamed


def _rename(args: Iterable[str], names: Mapping[str, str], command: str) -> Iterable[str]:
    told: set[str] = set()
    rest = False
    for arg in args:
        if rest or arg == "--":
            rest = True
            yield arg
            continue
        name, eq, value = arg.partition("=")
        new = names.get(name)
        if new is None:
            yield arg
            continue
        if name not in told:
            told.add(name)
            print(f"warning: `{command} {name}` is now {new}; the old name goes away in the next release",
                  file=sys.stderr)  # fmt: skip
        yield new + eq + value
