"""``attnsearch report``: a static HTML page with PNG figures that opens from disk."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from .common import check_range, console, run, shown


def report(
    inputs: list[Path] = typer.Argument(..., metavar="FILE...", help="Profiles, plans, studies, bench results, "
                                                                      "sensitivity records and hardware tables."),
    out: Path = typer.Option(Path("reports/latest"), help="Output folder (index.html + PNGs)."),
    tau: float = typer.Option(0.95, help="Recall threshold for the profile's classes."),
    density_cap: float = typer.Option(0.75, help="Density cap for the profile's classes."),
    title: Optional[str] = typer.Option(None, help="Page title."),
) -> None:
    """Draw what was found: a static HTML page with PNG figures that opens from disk."""
    from ..report import write_report

    def work():
        check_range("--tau", tau, low=0, high=1)
        check_range("--density-cap", density_cap, low=0, high=1, low_open=True)
        page = write_report(list(inputs), out, tau=tau, density_cap=density_cap, title=title)
        console.print(f"report → [bold]{shown(page)}[/]")

    run(work)
