"""The ``attnsearch`` command line: the I/O edge of the pipeline.

One module per command (``profile``, ``classify``, ``optimize``, ``calibrate``, ``demo``, ``evaluate``,
``merge``, ``validate``, ``report``, ``bench``); ``common`` holds what they share. Every command turns bad
input into one clear line on stderr and exit code 2; library errors carry the field they are
about, so a command only has to print them.
"""

from __future__ import annotations

import typer

from .bench import bench
from .calibrate import calibrate
from .classify import classify_cmd
from .demo import demo
from .evaluate import evaluate
from .merge import merge
from .optimize import optimize
from .profile import profile
from .report import report
from .validate import validate

app = typer.Typer(add_completion=False, no_args_is_help=True,
                  help="Profile, search and run the sparse attention of video diffusion transformers.")
app.command()(profile)
app.command("classify")(classify_cmd)
app.command()(optimize)
app.command()(calibrate)
app.command()(demo)
app.command()(evaluate)
app.command()(merge)
app.command()(validate)
app.command()(report)
app.command()(bench)


def main() -> None:  # pragma: no cover - console entry point
    app()


__all__ = ["app", "main"]
