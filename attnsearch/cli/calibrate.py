"""``attnsearch calibrate``: time the runtime kernels and dense cuDNN on this GPU and fit the cost model."""

from __future__ import annotations

from pathlib import Path

import typer

from .common import UsageError, console
from .common import run as _run


def calibrate(
    out_dir: Path = typer.Option(Path("kernels"), "--out", help="Folder of hardware tables."),
    quick: bool = typer.Option(False, help="A coarser grid (for a first look)."),
    budget_s: float = typer.Option(1e9, help="Stop measuring after this many seconds."),
) -> None:
    """Time the runtime kernels and dense cuDNN on this GPU and fit the cost model (CUDA)."""
    import torch

    def work():
        if not torch.cuda.is_available():
            raise UsageError("calibrate measures this machine's GPU and needs CUDA; without one, optimize uses "
                             "a shipped table (--hardware)")
        from ..calibrate import calibrate_command

        path = calibrate_command(str(out_dir), quick=quick, budget_s=budget_s)
        console.print(f"hardware table → [bold]{path}[/]")

    _run(work)
