"""``attnsearch demo``: the whole pipeline on the embedded toy video DiT, then the headline."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from .common import console, progress_bar, run, shown


def demo(
    out: Path = typer.Option(Path("out/demo"), help="Folder for the profile, plan, study and report."),
    steps: int = typer.Option(4, help="Denoising steps of toy-vdit to profile."),
    queries: int = typer.Option(128, help="Sampled query rows per call."),
    trials: int = typer.Option(30, help="Search trials."),
    validate: int = typer.Option(2, help="Model inputs each trial is validated on."),
    max_error: float = typer.Option(0.02, help="Budget of measured output error (relative L2)."),
    hardware: Optional[str] = typer.Option(None, help="Cost-model table (default: this GPU's, else H100)."),
) -> None:
    """The whole pipeline on the embedded toy video DiT, then the headline."""
    from ..demo import check_demo, run_demo

    def work():
        check_demo(out, steps=steps, queries=queries, trials=trials, validate=validate, max_error=max_error,
                   seed=0, hardware=hardware)
        with progress_bar() as bar:
            tasks: dict[str, int] = {}

            def on_stage(name: str) -> None:
                console.print(f"[bold]▸ {shown(name)}[/]")

            def on_progress(name: str, done: int, total: int) -> None:
                if name not in tasks:
                    tasks[name] = bar.add_task(name, total=total)
                bar.update(tasks[name], completed=done)

            h = run_demo(out, steps=steps, queries=queries, trials=trials, validate=validate, max_error=max_error,
                         hardware=hardware, on_stage=on_stage, on_progress=on_progress)
        classes = ", ".join(f"{n} {k}" for k, n in sorted(h["classes"].items(), key=lambda kv: -kv[1]))
        console.print()
        console.print(f"[bold]classes found[/]   {classes} ({h['match_planted']}/{h['heads']} match the planted truth)")
        console.print(f"[bold]plan[/]            mean block density {h['plan_density']:.2f} → {shown(h['plan'])}")
        console.print(f"[bold]predicted[/]       {h['predicted_speedup']:.2f}× attention speedup on {h['hardware']} "
                      "(toy size: ~23 µs per call, launch-bound)")
        if h.get("measured_rel_l2") is not None:
            console.print(f"[bold]measured error[/]  {h['measured_rel_l2']:.4f} relative L2, "
                          f"{h['measured_psnr_db']:.1f} dB PSNR vs dense (budget {max_error})")
        if h.get("measured_speedup"):
            console.print(f"[bold]measured[/]        {h['measured_speedup']:.2f}× on {h['gpu']}")
        console.print(f"[bold]report[/]          {shown(h['report'])}  ({h['seconds']:.0f} s)")

    run(work)
