"""docs/cli.md, rendered from the command line's own definitions: every command's help, arguments
and options with their defaults, as ``attnsearch COMMAND --help`` states them. The options are
defined once, in the command modules; this page is their rendering, and
``tests/cli/test_cli_reference.py`` keeps the committed file equal to it.

    python -m attnsearch.cli.reference [PATH]     # default docs/cli.md
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import typer.main

try:  # typer ≥ 0.17 carries its own click
    from typer import _click as click
except ImportError:  # pragma: no cover - typer on the click package
    import click

from ..atomic_io import write_text_atomic
from . import app

HEADER = """# CLI reference

Every command of `attnsearch` with its arguments and options, as `attnsearch COMMAND --help` states
them (this page is rendered from the commands' definitions: `python -m attnsearch.cli.reference`).
The workflow that chains them is in the [README](../README.md), the file formats in
[design.md](design.md). Every command turns bad input into one line on stderr naming the problem,
and exit code 2; `attnsearch --version` prints the version.
"""


def _markdown(text: str) -> str:
    """A docstring's reStructuredText literals (``x``) as Markdown code spans."""
    return re.sub(r"``(.+?)``", r"`\1`", text)


def _cell(text: str) -> str:
    return _markdown(" ".join(text.split())).replace("|", "\\|")


def _default(param) -> str:
    """An optional parameter's default as ``--help`` shows it ("" where it has none to show)."""
    value = param.default
    if value is None or value == [] or callable(value):
        return ""
    if isinstance(value, bool):
        if not getattr(param, "secondary_opts", None):  # a flag: absent is its default
            return ""
        return param.opts[0] if value else param.secondary_opts[0]
    if isinstance(value, (list, tuple)):
        return ", ".join(map(str, value))
    return str(value)


def _usage(name: str, command, ctx) -> str:
    """``attnsearch NAME`` with its arguments' metavars and its required options."""
    parts = [f"attnsearch {name}"]
    for p in command.params:
        if p.param_type_name == "argument":
            parts.append(p.get_help_record(ctx)[0].split()[0])
    parts += [f"{max(p.opts, key=len)} {p.name.upper()}" for p in command.params
              if p.param_type_name == "option" and p.required]
    if any(p.param_type_name == "option" and not p.required for p in command.params):
        parts.append("[OPTIONS]")
    return " ".join(parts)


def render() -> str:
    """The whole of docs/cli.md."""
    group = typer.main.get_command(app)
    root = click.Context(group, info_name="attnsearch")
    commands = list(group.commands.items())
    out = [HEADER, "| command | what it does |", "|---|---|"]
    for name, command in commands:
        out.append(f"| [`{name}`](#{name}) | {_cell((command.help or '').split(chr(10) + chr(10))[0])} |")
    for name, command in commands:
        ctx = click.Context(command, info_name=name, parent=root)
        out += ["", f"## {name}", "", f"    {_usage(name, command, ctx)}", "",
                _markdown((command.help or "").strip()), "",
                "| argument / option | default | meaning |", "|---|---|---|"]
        for p in command.params:
            record = p.get_help_record(ctx)
            if record is None:  # a hidden option
                continue
            default = _default(p)
            shown = "required" if p.required else f"`{default}`" if default else ""
            out.append(f"| `{record[0]}` | {shown} | {_cell(getattr(p, 'help', None) or '')} |")
    return "\n".join(out) + "\n"


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    path = Path(args[0]) if args else Path(__file__).resolve().parents[2] / "docs" / "cli.md"
    write_text_atomic(path, render())
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
