"""``attnsearch demo``: the whole pipeline on mini-vdit (or the planted toy-vdit), then the headline."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from .common import console, progress_bar, run, shown


def demo(
    out: Path = typer.Option(Path("out/demo"), help="Folder for the profile, plan, study and report."),
    model: str = typer.Option("mini-vdit", help="mini-vdit (trained; videos evaluated) or toy-vdit (planted "
                                                "heads; classes checked against the truth)."),
    steps: int = typer.Option(8, help="Denoising steps to profile (and, on mini-vdit, to sample)."),
    queries: int = typer.Option(128, help="Sampled query rows per call."),
    trials: Optional[int] = typer.Option(None, help="Search trials (default: 100 weighted by the sensitivity, 15 "
                                                    "validated on the model)."),
    validate: Optional[int] = typer.Option(None, help="Model inputs (steps) each trial is validated on "
                                                      "(default: none on mini-vdit, whose errors are weighted by the "
                                                      "measured sensitivity; 2 on toy-vdit)."),
    max_error: float = typer.Option(0.02, help="toy-vdit: budget of measured output error (relative L2)."),
    max_density: float = typer.Option(0.3, help="mini-vdit: mean kept-block density of the plan."),
    hardware: Optional[str] = typer.Option(None, help="Cost-model table (default: this GPU's, else H100)."),
) -> None:
    """The whole pipeline on mini-vdit (or toy-vdit), then the headline."""
    from ..demo import check_demo, run_demo

    def work():
        check_demo(out, model=model, steps=steps, queries=queries, trials=trials, validate=validate,
                   max_error=max_error, max_density=max_density, seed=0, hardware=hardware)
        with progress_bar() as bar:
            tasks: dict[str, int] = {}

            def on_stage(name: str) -> None:
                console.print(f"[bold]▸ {shown(name)}[/]")

            def on_progress(name: str, done: int, total: int) -> None:
                if name not in tasks:
                    tasks[name] = bar.add_task(name, total=total)
                bar.update(tasks[name], completed=done)

            h = run_demo(out, model=model, steps=steps, queries=queries, trials=trials, validate=validate,
                         max_error=max_error, max_density=max_density, hardware=hardware, on_stage=on_stage,
                         on_progress=on_progress)
        classes = ", ".join(f"{n} {k}" for k, n in sorted(h["classes"].items(), key=lambda kv: -kv[1]))
        truth = f" ({h['match_planted']}/{h['heads']} match the planted truth)" if "match_planted" in h else ""
        console.print()
        console.print(f"[bold]model[/]           {h['model']}, geometry {h['geometry']}")
        console.print(f"[bold]classes found[/]   {classes}{truth}")
        if h.get("sensitivity"):
            sens = h["sensitivity"]
            console.print(f"[bold]sensitivity[/]     steps {sens['step_gain_ratio'] or 1:.3g}× apart, layers "
                          f"{sens['head_gain_ratio'] or 1:.3g}× apart → {shown(sens['path'])}")
        console.print(f"[bold]plan[/]            mean block density {h['plan_density']:.2f} → {shown(h['plan'])}")
        console.print(f"[bold]predicted[/]       {h['predicted_speedup']:.2f}× attention speedup on {h['hardware']} "
                      "(demo size: launch-bound; the speedups live at video scale)")
        if h.get("measured_rel_l2") is not None:
            console.print(f"[bold]measured error[/]  {h['measured_rel_l2']:.4f} relative L2 of the model's outputs "
                          f"vs dense over {h['validated_steps']} validated step(s)")
        for label, q in h.get("quality", {}).items():
            console.print(f"[bold]videos[/]          {label} (density {q['density']:.2f}): "
                          f"{q['psnr_db']:.1f} dB PSNR, SSIM {q['ssim']:.3f} vs dense on held-out seeds")
        if h.get("evaluation"):
            console.print(f"[bold]frames[/]          {shown(h['evaluation'])}")
        if h.get("measured_speedup"):
            console.print(f"[bold]measured[/]        {h['measured_speedup']:.2f}× on {h['gpu']}")
        console.print(f"[bold]report[/]          {shown(h['report'])}  ({h['seconds']:.0f} s)")

    run(work)
