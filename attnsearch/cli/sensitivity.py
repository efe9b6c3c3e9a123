"""``attnsearch sensitivity``: measure how much each step's and head's attention error moves the
model's final output, for ``optimize --sensitivity``."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from .common import check_at_least, check_output_paths, check_range, console, parse_options, progress_bar, run, shown


def sensitivity(
    profile_path: Path = typer.Argument(..., metavar="PROFILE", help="A profile written by `attnsearch profile`."),
    out: Path = typer.Option(..., help="Sensitivity JSON to write (for `optimize --sensitivity`)."),
    model: Optional[str] = typer.Option(None, "--model", "-m", help="The profiled model (default: the profile's)."),
    option: list[str] = typer.Option([], "--option", "-o", help="key=value for the model factory (as profiled)."),
    density: float = typer.Option(0.3, help="Mean density of the probe candidates (the range plans are searched in)."),
    trajectories: Optional[int] = typer.Option(None, help="Whole trajectories each probe runs (the model's own "
                                                          "noise and conditions; default: up to 2)."),
    per_layer: bool = typer.Option(False, "--per-layer", help="Probe each layer's heads together (steps + layers "
                                   "runs instead of steps + layers × heads; every head takes its layer's gain)."),
    backend: str = typer.Option("auto", help="Runtime backend the probes run on."),
) -> None:
    """Measure how much each step's and each head's attention error moves the final output.

    Runs steps + layers × heads probes of whole trajectories (steps + layers with --per-layer),
    each one site with the profile's probe candidate and everything else dense; writes the gains
    (output change per unit of the profile's squared error) that ``optimize --sensitivity`` weighs
    errors by."""
    from ..models import load_model
    from ..profiling.profile_io import Profile
    from ..search.sensitivity import check_inputs, measure_sensitivity

    def work():
        check_range("--density", density, low=0, high=1, low_open=True)
        if trajectories is not None:
            check_at_least("--trajectories", trajectories, 1)
        check_output_paths([out], [profile_path])
        prof = Profile.load(profile_path)
        spec = load_model(model or prof.model["name"], **parse_options(option))
        runs = check_inputs(prof, spec, density, trajectories)
        with progress_bar() as bar:
            runs_total = prof.num_steps + prof.num_layers * (1 if per_layer else prof.num_heads)
            task = bar.add_task("probing", total=runs_total)
            sens = measure_sensitivity(prof, spec, density=density, trajectories=runs, backend=backend,
                                       sites="layers" if per_layer else "heads",
                                       progress=lambda p: bar.update(task, completed=p["done"],
                                                                     description=f"probing {p['site']}"))
        sens.save(out)
        table = Table(title="gain (output change per unit of squared attention error), × the smallest")
        table.add_column("site")
        table.add_column("gains")
        low = min(sens.step_gain[sens.step_gain > 0].min(), sens.head_gain[sens.head_gain > 0].min())
        table.add_row("steps", " ".join(f"{g / low:.3g}" for g in sens.step_gain))
        for layer, row in enumerate(sens.head_gain):
            table.add_row(f"layer {layer} heads", " ".join(f"{g / low:.3g}" for g in row))
        console.print(table)
        s = sens.summary()
        console.print(f"steps differ up to {s['step_gain_ratio'] or 1:.3g}×, "
                      f"heads up to {s['head_gain_ratio'] or 1:.3g}×"
                      + (f"; unmeasured (probe error 0, axis mean used): {', '.join(sens.unmeasured)}"
                         if sens.unmeasured else ""))
        console.print(f"sensitivity → [bold]{shown(out)}[/] (optimize --sensitivity {shown(out)})")

    run(work)
