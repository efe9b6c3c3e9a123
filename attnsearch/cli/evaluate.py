"""``attnsearch evaluate``: generate videos dense and under each plan from identical noise; report
PSNR/SSIM of the frames, relative L2 of the final latents, kept-block density and predicted speedup."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from .common import console, parse_options, run


def evaluate(
    plans: list[Path] = typer.Argument(..., metavar="PLAN...", help="Plan JSON file(s); several = a density sweep."),
    model: str = typer.Option(..., "--model", "-m", help="mini-vdit, or diffusers:DIR (a saved pipeline folder)."),
    seeds: int = typer.Option(4, help="Videos to generate, on held-out seeds (10000, 10001, ...)."),
    steps: Optional[int] = typer.Option(None, help="Sampler steps (default: the plans' steps)."),
    out: Path = typer.Option(Path("out/evaluate"), help="Folder for evaluation.json, figures and index.html."),
    baseline: Optional[str] = typer.Option(None, help="Global-mask baselines at each plan's density: "
                                                      "energy_decay,window."),
    option: list[str] = typer.Option([], "--option", "-o", help="key=value for the model (frames, height, width, "
                                                                 "guidance, device, ...)."),
    backend: str = typer.Option("auto", help="Sparse backend: auto, hopper, triton, torch."),
    hardware: Optional[str] = typer.Option(None, help="Hardware table for the predicted speedup (default: this "
                                                      "GPU's, else the shipped H100 table)."),
    figures: int = typer.Option(4, help="Videos drawn in the report (the JSON has all)."),
    min_psnr: Optional[float] = typer.Option(None, help="Exit 1 when a plan's mean PSNR (dB) is below this."),
    min_ssim: Optional[float] = typer.Option(None, help="Exit 1 when a plan's mean SSIM is below this."),
    fp8: bool = typer.Option(False, "--fp8", help="Also run each plan with every computed head in FP8 (the same "
                                                  "masks) and compare it with the plan in native precision."),
    residual_precision: str = typer.Option("native", help="How residual entries keep their residuals across steps: "
                                                          "native (the model's dtype) or fp8 (e4m3, a scale per row: "
                                                          "about half bf16's memory)."),
) -> None:
    """Generate videos dense and with each plan from identical noise; quality against density and speedup."""
    from ..evaluate import evaluate_command

    def work():
        code = evaluate_command(plans, model, seeds=seeds, steps=steps, out=out, baseline=baseline,
                                options=parse_options(option), backend=backend, hardware=hardware, figures=figures,
                                min_psnr=min_psnr, min_ssim=min_ssim, fp8=fp8, residual_precision=residual_precision,
                                console=console)
        if code:
            raise typer.Exit(code)

    run(work)
