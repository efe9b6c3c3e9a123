"""``attnsearch bench``: per-layer latency of a plan (or one layer) against dense cuDNN SDPA and FlexAttention."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from .common import UsageError, console
from .common import run as _run
from .common import write_file as _atomic_write


def bench(
    plan_path: Optional[Path] = typer.Option(None, "--plan", help="Time every distinct layer plan of this plan."),
    pattern: Optional[str] = typer.Option(None, help="One pattern for every head (default: all four families mixed)."),
    params: str = typer.Option("{}", help="JSON params of --pattern."),
    density: list[float] = typer.Option([0.1, 0.25, 0.5], help="Target densities of the mixed-family layer."),
    sweep: bool = typer.Option(False, help="Densities 5–100% in one run; draws rate and speedup vs density."),
    frames: int = typer.Option(21), height: int = typer.Option(30), width: int = typer.Option(52),
    text_tokens: int = typer.Option(0), heads: int = typer.Option(12), head_dim: int = typer.Option(128),
    batch: int = typer.Option(1), block_size: int = typer.Option(128),
    dtype: str = typer.Option("bfloat16", help="bfloat16 or float16."),
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
    import torch

    def work():
        from ..bench import TIMING_MODES

        if timing not in TIMING_MODES:
            raise UsageError(f"--timing must be one of {', '.join(TIMING_MODES)}, got {timing!r}")
        if not torch.cuda.is_available():
            raise UsageError("bench times CUDA kernels and needs a CUDA GPU; none is visible here")
        if dtype not in ("bfloat16", "float16"):
            raise UsageError(f"--dtype must be bfloat16 or float16, got {dtype!r}")
        from .. import bench as B
        from ..costmodel import CostModel
        from ..geometry import Geometry
        from ..plan import LayerPlan, load_plan

        cost = CostModel(hardware, head_dim=head_dim, batch=batch)
        # Sustained timing holds each measurement for seconds (a layer takes ~10 s), with the SM clock
        # and board power sampled beside it.
        with B.clock_sampler(timing) as sampler, \
                Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                         console=console, transient=True) as bar:
            common = dict(head_dim=head_dim, batch=batch, dtype=getattr(torch, dtype), reps=reps, flex=flex,
                          timing=timing, sampler=sampler)
            task = bar.add_task(f"timing layer plans ({timing})", total=None)

            def on_layer(done: int, total: int) -> None:
                bar.update(task, completed=done, total=total)

            if plan_path:
                plan = load_plan(plan_path)
                result = B.bench_plan(plan, on_layer=on_layer, **common)
                rows = result["layer_plans"]
                lps = [plan.layer_plan(s, l) for s, l in _distinct_sites(plan)]
            else:
                geom = Geometry(frames, height, width, text_tokens)
                if sweep:  # the dense end runs our kernel on an all-kept mask (not SDPA): its dense rate
                    lps = [B.mixed_layer_plan(geom, heads, block_size, d) for d in SWEEP_DENSITIES]
                    lps.append(LayerPlan.single("dense", {}, geom, heads, block_size))
                elif pattern:
                    lps = [LayerPlan.single(pattern, json.loads(params), geom, heads, block_size)]
                else:
                    lps = [B.mixed_layer_plan(geom, heads, block_size, d) for d in density]
                rows = B.bench_layer_plans(lps, on_layer=on_layer, **common)
                result = {"card": B.card_name(), "rows": rows}
        for row, lp in zip(rows, lps):
            row["predicted_ms"] = cost.layer_ms(lp)
        result.update(format="attnsearch-bench", timing=timing, cost_model=cost.describe())
        target = out or Path("reports") / f"bench_{B.card_name().replace(' ', '_')}.json"
        _atomic_write(target, json.dumps(result, indent=1) + "\n")
        table = Table(title=f"{B.card_name()}: sparse runtime vs dense cuDNN SDPA ({timing} timing)")
        clocked = any("sparse_clock" in r for r in rows)
        for col in ("density", "backend", "ms", "TFLOP/s", "host µs", "predicted ms", "cuDNN ms", "Flex ms",
                    "speedup") + (("SM MHz, W",) if clocked else ()):
            table.add_column(col, justify="right")
        for r in rows:
            host = r.get("sparse_host_us")
            cells = [f"{r['density']:.3f}", r.get("backend", r.get("runs", "")), f"{r['sparse_ms']:.2f}",
                     f"{r['sparse_tflops']:.0f}", "–" if host is None else f"{host:.0f}",
                     f"{r['predicted_ms']:.2f}", f"{r.get('cudnn_ms', float('nan')):.2f}",
                     f"{r.get('flex_ms', float('nan')):.2f}", f"{r.get('speedup_vs_cudnn', float('nan')):.2f}×"]
            if clocked:
                cells.append(B.clock_cell(r.get("sparse_clock")))
            table.add_row(*cells)
        console.print(table)
        if sweep:
            from ..report.bench_figures import speedup_vs_density, tflops_vs_density

            for fig in (tflops_vs_density(rows, target.with_suffix(".tflops.png"), B.card_name()),
                        speedup_vs_density(rows, target.with_suffix(".speedup.png"), B.card_name())):
                console.print(f"figure → {fig}")

    _run(work)


SWEEP_DENSITIES = (0.05, 0.1, 0.2, 0.3, 0.5, 0.75)


def _distinct_sites(plan) -> list[tuple[int, int]]:
    """(step, layer) of each distinct layer plan, in the order bench_plan times them."""
    seen, sites = set(), []
    for e in plan.schedule:
        for layer in range(plan.num_layers):
            lp = plan.layer_plan(e.start, layer)
            if lp not in seen:
                seen.add(lp)
                sites.append((e.start, layer))
    return sites
