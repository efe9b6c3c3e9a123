"""``attnsearch calibrate``: time the runtime kernels and dense cuDNN on this GPU and fit the cost model."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from .common import UsageError, console, shown
from .common import run as _run


def calibrate(
    out_dir: Path = typer.Option(Path("kernels"), "--out", help="Folder of hardware tables."),
    quick: bool = typer.Option(False, help="A coarser grid (for a first look)."),
    budget_s: float = typer.Option(1e9, help="Stop measuring after this many seconds."),
    points: Optional[Path] = typer.Option(None, help="Also save the raw measured points here (JSON)."),
    refit: Optional[Path] = typer.Option(None, help="Fit the table from points saved with --points instead of "
                                                    "measuring (no GPU needed)."),
) -> None:
    """Time the runtime kernels and dense cuDNN on this GPU and fit the cost model (CUDA), or refit
    a table from saved points (--refit)."""
    import torch

    def work():
        if refit is not None:
            if points is not None or quick:
                raise UsageError("--refit fits saved points: --points and --quick do not apply")
            from ..costmodel.calibrate import refit as refit_points

            path = refit_points(refit, out_dir)
            console.print(f"hardware table → [bold]{shown(path)}[/] (refitted from {shown(refit)})")
            return
        if not torch.cuda.is_available():
            raise UsageError("calibrate measures this machine's GPU and needs CUDA; without one, optimize uses "
                             "a shipped table (--hardware)")
        from ..costmodel.calibrate import calibrate as run_calibration

        path = run_calibration(out_dir, quick=quick, budget_s=budget_s, points_path=points)
        console.print(f"hardware table → [bold]{shown(path)}[/]")

    _run(work)
