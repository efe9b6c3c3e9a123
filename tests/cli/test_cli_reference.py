"""docs/cli.md is the rendering of the command line's own definitions (``attnsearch.cli.reference``):
every command, argument and option of ``attnsearch`` is on it with its default, and a changed
option changes the page."""

from __future__ import annotations

from pathlib import Path

import typer.main

from attnsearch.cli import app
from attnsearch.cli.reference import render

DOC = Path(__file__).resolve().parents[2] / "docs" / "cli.md"


def test_docs_cli_md_is_the_rendered_reference():
    assert DOC.read_text(encoding="utf-8") == render(), \
        "docs/cli.md is stale: python -m attnsearch.cli.reference"


def test_every_command_and_option_is_on_the_page_with_its_help():
    page = render()
    group = typer.main.get_command(app)
    for name, command in group.commands.items():
        assert f"\n## {name}\n" in page
        for p in command.params:
            for opt in p.opts if p.param_type_name == "option" else ():
                assert opt in page, f"{name} {opt}"
            if p.param_type_name == "option":
                assert p.help, f"{name} {p.opts[-1]} has no help text"
