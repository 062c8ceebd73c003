"""``docs/cli.md``, generated from both command lines: every command, its options with their defaults, the one
home of each setting's default, and the old option names still read.

``make docs`` (``python -m activedpo_client.cli.reference docs/cli.md``) rewrites it; a test fails when the
committed file differs from what the code says.
"""

from __future__ import annotations

import inspect
import sys
from enum import Enum
from pathlib import Path

from typer.main import get_command

HEADER = """# Command-line reference

Generated from the code by `make docs`; do not edit. Both programs take `--help` on every command.
`round`, `select`, `labelstudio sync` and `activedpo-server serve` also take `--config FILE` (TOML or YAML:
`dpo-lr = 1e-4`, or a table `[dpo]` with `lr = 1e-4`); options on the command line win, and each writes the
options it resolved to a `config.toml` that reruns it.
"""


def _default(p) -> str:
    if p.required and p.default is None:
        return "required"
    d = p.default
    if isinstance(d, Enum):
        d = d.value
    if isinstance(d, (list, tuple)):
        d = " ".join(str(x.value if isinstance(x, Enum) else x) for x in d)
    if d is None or d == "":
        return "—"
    if p.is_flag and p.secondary_opts:
        return f"`{p.opts[0] if d else p.secondary_opts[0]}`"
    if p.is_flag:
        return "on" if d else "off"
    return f"`{d}`"


def _kind(p) -> str:
    import typing

    t = p.type_descriptor.annotation
    many = typing.get_origin(t) is list
    if many:
        t = typing.get_args(t)[0]
    args = [a for a in typing.get_args(t) if a is not type(None)]  # X | None
    t = args[0] if args else t
    if isinstance(t, type) and issubclass(t, Enum):
        kind = " \\| ".join(str(m.value) for m in t)
    else:
        kind = {int: "integer", float: "number", str: "text", Path: "path", bool: "flag"}.get(t, str(t))
    return f"{kind} (repeatable)" if many else kind


def _help(p) -> str:
    h = " ".join((p.help or "").split()).replace("\\[", "[").replace("|", "\\|")
    return h


def _commands(cmd, path):
    if hasattr(cmd, "commands"):
        for name, sub in sorted(cmd.commands.items()):
            yield from _commands(sub, [*path, name])
    else:
        yield path, cmd


def _program(name: str, app) -> list[str]:
    out = [f"## {name}", ""]
    for path, cmd in _commands(get_command(app), [name]):
        if cmd.hidden:
            continue
        out += [f"### `{' '.join(path)}`", ""]
        doc = inspect.cleandoc(cmd.help or "").split("\n\n")[0].replace("\n", " ")
        out += [doc, ""]
        args = [p for p in cmd.params if type(p).__name__.endswith("Argument")]
        for a in args:
            out += [f"Argument `{a.name.upper()}`: {_help(a) or a.name}", ""]
        opts = [p for p in cmd.params if type(p).__name__.endswith("Option") and not p.hidden]
        if opts:
            out += ["| option | takes | default | what |", "|---|---|---|---|"]
            for p in opts:
                names = ", ".join(f"`{n}`" for n in p.opts)
                out.append(f"| {names} | {_kind(p)} | {_default(p)} | {_help(p)} |")
            out.append("")
        if not opts and cmd.context_settings.get("ignore_unknown_options"):
            out += ["Takes its own options: run it with `--help`.", ""]
    return out


def render() -> str:
    from activedpo_client.cli import app as client_app
    from activedpo_client.cli import jobs, labelstudio, toyworld
    from activedpo_client.cli.homes import HOMES
    from activedpo_server.cli import FEATURIZE_RENAMED, HEALTH_RENAMED, SERVE_RENAMED
    from activedpo_server.cli import app as server_app

    lines = [HEADER, "## Settings and their one home", "",
             "Each option below takes its default from one dataclass field, in every command that has it:", "",
             "| option | home | default |", "|---|---|---|"]  # fmt: skip
    for option, (cls, field) in HOMES.items():
        value = getattr(cls, field)
        value = value.value if isinstance(value, Enum) else value
        lines.append(f"| `{option}` | `{cls.__module__}.{cls.__name__}.{field}` | `{value}` |")
    lines += ["", "## Old option names", "",
              "Still read for one release, with a warning naming the new one; not in `--help`.", "",
              "| command | old | new |", "|---|---|---|"]  # fmt: skip
    renamed = [("activedpo-client generate", jobs.GENERATE_RENAMED),
               ("activedpo-client train dpo", jobs.TRAIN_DPO_RENAMED), ("activedpo-client eval", toyworld.EVAL_RENAMED),
               ("activedpo-client toyworld build, info", toyworld.WORLD_RENAMED),
               ("activedpo-client toyworld check", toyworld.CHECK_RENAMED),
               ("activedpo-client labelstudio sync", labelstudio.SYNC_RENAMED),
               ("activedpo-server serve", SERVE_RENAMED), ("activedpo-server featurize", FEATURIZE_RENAMED),
               ("activedpo-server health", HEALTH_RENAMED)]  # fmt: skip
    for command, names in renamed:
        for old, new in names.items():
            lines.append(f"| `{command}` | `{old}` | `{new}` |")
    lines += ["", "One old spelling changed its meaning instead: `activedpo-client eval --seed` was the toy world's "
              "seed and is now the sampling seed, as in every other command; the world's is `--world-seed`.", ""]
    lines += ["", *_program("activedpo-client", client_app), *_program("activedpo-server", server_app)]
    return "\n".join(lines).rstrip() + "\n"


if __name__ == "__main__":
    text = render()
    if len(sys.argv) > 1:
        Path(sys.argv[1]).write_text(text)
    else:
        sys.stdout.write(text)
