"""What the CLI tests run on: a snapshot of a folder and a CLI runner that reports exit code and
output (a small valid profile comes from the ``random_profile`` fixture)."""

from __future__ import annotations

from pathlib import Path

from typer.testing import CliRunner

from attnsearch.cli import app

runner = CliRunner()


def tree(root: Path) -> dict[str, bytes | None]:
    """Every path under ``root`` with its content (None for folders)."""
    return {str(p.relative_to(root)): None if p.is_dir() else p.read_bytes() for p in sorted(root.rglob("*"))}


def cli(*args) -> tuple[int, str]:
    res = runner.invoke(app, [str(a) for a in args])
    if res.exception is not None and not isinstance(res.exception, SystemExit):
        raise res.exception  # a traceback is a failure of the test, shown as such
    return res.exit_code, res.output


def one_error(code: int, output: str, *, alone: bool = True) -> str:
    """The single error line of a failed command: exit 2, one ``error:`` line, no traceback, and
    (``alone``: refused before any work) nothing else printed."""
    lines = [line for line in output.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error: ")]
    assert code == 2 and len(errors) == 1 and "Traceback" not in output, (code, output)
    if alone:
        assert len(lines) == 1, output
    return errors[0]
