"""``attnsearch bench``: per-layer latency of a plan (or one layer) against dense cuDNN SDPA and FlexAttention."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from .common import UsageError, check_choice, check_output_paths, console, shown
from .common import run as _run
from .common import write_file as _atomic_write


def bench(
    plan_path: Optional[Path] = typer.Option(None, "--plan", help="Time every distinct layer plan of this plan."),
    pattern: Optional[str] = typer.Option(None, help="One pattern for every head (default: all four families mixed)."),
    params: str = typer.Option("{}", help="JSON params of --pattern."),
    density: list[float] = typer.Option([0.1, 0.25, 0.5], help="Target densities of the mixed-family layer."),
    sweep: bool = typer.Option(False, help="Densities 5–100% in one run; draws rate and speedup vs density."),
    frames: int = typer.Option(21, help="Latent frames F of the layer (without --plan: a plan runs its own)."),
    height: int = typer.Option(30, help="Latent height H, tokens per column (without --plan)."),
    width: int = typer.Option(52, help="Latent width W, tokens per row (without --plan)."),
    text_tokens: int = typer.Option(0, help="Text tokens T before the video tokens (without --plan)."),
    heads: int = typer.Option(12, help="Query heads of the layer (without --plan)."),
    head_dim: int = typer.Option(128, help="head_dim of the timed calls (64 or 128)."),
    batch: int = typer.Option(1, help="Batch of the timed calls (2: both guidance branches in one call)."),
    block_size: int = typer.Option(128, help="Block size of the layer, 64 or 128 (without --plan)."),
    dtype: str = typer.Option("bfloat16", help="bfloat16 or float16."),
    precision: str = typer.Option("native", help="What the layers' kept blocks run in without --plan: native or "
                                                 "fp8 (quantization inside each call; a plan's heads say their own)."),
    reps: int = typer.Option(20, help="Timed calls per measurement (median reported)."),
    timing: str = typer.Option("queued", help="queued: the GPU's time per call, calls queued back to back "
                               "(as a model runs); synced: each call alone on an idle GPU, the host's "
                               "launch work included; sustained: calls back to back for 3 s per "
                               "measurement, the last 2 s timed (the card at its power limit, as in a "
                               "long denoising run)."),
    flex: bool = typer.Option(True, help="Also time FlexAttention on the same block mask."),
    hardware: Optional[str] = typer.Option(None, help="Cost-model table for the predicted column."),
    out: Optional[Path] = typer.Option(None, help="JSON output; default reports/bench_<card>.json."),
) -> None:
    """Per-layer latency of a plan (or one layer) against dense cuDNN SDPA and FlexAttention (CUDA)."""

    def work():
        from ..bench import card_name, sweep as S
        from ..costmodel import CostModel
        from ..geometry import Geometry
        from ..layer_plan import PRECISIONS
        from ..plan import load_plan

        check_choice("--precision", precision, PRECISIONS)
        if plan_path and precision != "native":
            raise UsageError("--precision: a plan's head groups name their own precision; give it without --plan")
        S.check_request(timing, dtype)  # a ValueError: one line, exit 2
        target = out or Path("reports") / f"bench_{card_name().replace(' ', '_')}.json"
        figures = [target.with_suffix(".tflops.png"), target.with_suffix(".speedup.png")] if sweep else []
        check_output_paths([target, *figures], inputs=[plan_path])
        cost = CostModel(hardware, head_dim=head_dim, batch=batch)
        lps = [] if plan_path else S.layer_plans(Geometry(frames, height, width, text_tokens), heads, block_size,
                                                 sweep=sweep, pattern=pattern, params=params, densities=density,
                                                 precision=precision)
        with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                      console=console, transient=True) as bar:
            task = bar.add_task(f"timing layer plans ({timing})", total=None)
            result = S.run_bench(cost, plan=load_plan(plan_path) if plan_path else None, lps=lps, timing=timing,
                                 dtype=dtype, reps=reps, flex=flex,
                                 on_layer=lambda done, total: bar.update(task, completed=done, total=total))
        _atomic_write(target, json.dumps(result, indent=1) + "\n")
        cols, cells = S.summary_table(result)
        table = Table(title=f"{card_name()}: sparse runtime vs dense cuDNN SDPA ({timing} timing)")
        for col in cols:
            table.add_column(col, justify="right")
        for row in cells:
            table.add_row(*row)
        console.print(table)
        if "speedup_vs_cudnn" in result:
            console.print(f"whole plan: {result['sparse_total_ms']:.1f} ms of attention over {result['calls']} calls, "
                          f"dense cuDNN {result['dense_total_ms']:.1f} ms: {result['speedup_vs_cudnn']:.2f}×")
        if "residual" in result:
            r = result["residual"]
            console.print(f"of it residual reuse (exact steps {', '.join(map(str, r['exact_steps']))}): "
                          f"{r['total_ms']:.1f} ms (" + "; ".join(
                              f"{row['reuse_heads']} reusing heads: {row['exact_step_ms']:.3f} ms at each of "
                              f"{row['exact_calls']} exact calls, {row['later_step_ms']:.3f} ms at {row['later_calls']} "
                              "later ones" for row in r["rows"]) + ")")
        if sweep:
            from ..report.bench_figures import speedup_vs_density, tflops_vs_density

            for fig in (tflops_vs_density(S.rows_of(result), figures[0], card_name()),
                        speedup_vs_density(S.rows_of(result), figures[1], card_name())):
                console.print(f"figure → {shown(fig)}")

    _run(work)
