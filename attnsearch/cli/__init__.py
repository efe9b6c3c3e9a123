"""The ``attnsearch`` command line: the I/O edge of the pipeline.

One module per command (``profile``, ``classify``, ``sensitivity``, ``optimize``, ``calibrate``, ``demo``, ``evaluate``,
``merge``, ``validate``, ``report``, ``bench``, ``retarget``, ``info``); ``common`` holds what they share. Every
command turns bad
input into one clear line on stderr and exit code 2; library errors carry the field they are
about, so a command only has to print them. Usage errors (an unknown option, a value of the wrong
type) are one line and exit 2 too; ``attnsearch --version`` prints the version.
"""

from __future__ import annotations

import sys

import typer
from typer.core import TyperGroup

try:  # typer ≥ 0.17 carries its own click
    from typer._click import exceptions as click_errors
except ImportError:  # pragma: no cover - typer on the click package
    from click import exceptions as click_errors

from .bench import bench
from .calibrate import calibrate
from .classify import classify_cmd
from .demo import demo
from .evaluate import evaluate
from .info import info
from .merge import merge
from .optimize import optimize
from .profile import profile
from .report import report
from .retarget import retarget
from .sensitivity import sensitivity
from .validate import validate
from .common import err_console, shown


class _OneLineErrors(TyperGroup):
    """The command group: a usage error is ``error: ...`` on one line, exit 2 (not Rich's box)."""

    def main(self, args=None, prog_name=None, complete_var=None, standalone_mode=True, **extra):
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode, **extra)
        try:
            code = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except click_errors.NoArgsIsHelpError as err:
            err.show()
            sys.exit(err.exit_code)
        except click_errors.ClickException as err:
            where = f"{err.ctx.command_path}: " if getattr(err, "ctx", None) is not None else ""
            err_console.print(f"[bold red]error:[/] {shown(where + err.format_message())} (see --help)",
                              highlight=False, soft_wrap=True)
            sys.exit(2 if isinstance(err, click_errors.UsageError) else err.exit_code)
        except typer.Abort:
            err_console.print("aborted", highlight=False)
            sys.exit(1)
        sys.exit(code if isinstance(code, int) else 0)


app = typer.Typer(add_completion=False, no_args_is_help=True, cls=_OneLineErrors,
                  help="Profile, search and run the sparse attention of video diffusion transformers.")


def _version(value: bool) -> None:
    if value:
        from .. import __version__

        print(f"attnsearch {__version__}")
        raise typer.Exit(0)


@app.callback()
def _options(version: bool = typer.Option(False, "--version", is_eager=True, callback=_version,
                                          help="Print the version and exit.")) -> None:
    """Profile, search and run the sparse attention of video diffusion transformers."""

app.command()(profile)
app.command("classify")(classify_cmd)
app.command()(sensitivity)
app.command()(optimize)
app.command()(calibrate)
app.command()(demo)
app.command()(evaluate)
app.command()(merge)
app.command()(validate)
app.command()(report)
app.command()(bench)
app.command()(retarget)
app.command()(info)


def main() -> None:  # pragma: no cover - console entry point
    app()


__all__ = ["app", "main"]
