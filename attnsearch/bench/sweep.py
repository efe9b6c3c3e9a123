"""What ``attnsearch bench`` times and reports: the layer plans of a request (a plan's distinct layer
plans, one pattern, mixed-family layers at chosen densities, or the density sweep), timed with the
cost model's prediction beside each, and the summary table's cells."""

from __future__ import annotations

import json
from typing import Any, Callable, Sequence

import torch

from ..costmodel import CostModel
from ..geometry import Geometry
from ..plan import LayerPlan, Plan
from .layers import mixed_layer_plan
from .plans import bench_layer_plans, bench_plan
from .timing import TIMING_MODES, card_name, clock_cell, clock_sampler

#: Densities of ``--sweep``; its dense end runs our kernel on an all-kept mask (not SDPA).
SWEEP_DENSITIES = (0.05, 0.1, 0.2, 0.3, 0.5, 0.75)
DTYPES = ("bfloat16", "float16")


def check_request(timing: str, dtype: str) -> None:
    """Raise ValueError (one line) on options no timing can honour, before any work."""
    if timing not in TIMING_MODES:
        raise ValueError(f"--timing must be one of {', '.join(TIMING_MODES)}, got {timing!r}")
    if dtype not in DTYPES:
        raise ValueError(f"--dtype must be bfloat16 or float16, got {dtype!r}")
    if not torch.cuda.is_available():
        raise ValueError("bench times CUDA kernels and needs a CUDA GPU; none is visible here")


def layer_plans(geometry: Geometry, heads: int, block_size: int, *, sweep: bool = False, pattern: str | None = None,
                params: str = "{}", densities: Sequence[float] = (0.1, 0.25, 0.5),
                precision: str = "native") -> list[LayerPlan]:
    """The layer plans of a request without a plan file, every computed head in ``precision``."""
    if sweep:
        lps = [mixed_layer_plan(geometry, heads, block_size, d) for d in SWEEP_DENSITIES] + [
            LayerPlan.single("dense", {}, geometry, heads, block_size)]
    elif pattern:
        lps = [LayerPlan.single(pattern, json.loads(params), geometry, heads, block_size)]
    else:
        lps = [mixed_layer_plan(geometry, heads, block_size, d) for d in densities]
    return lps if precision == "native" else [lp.with_precision(precision) for lp in lps]


def run_bench(cost: CostModel, *, plan: Plan | None = None, lps: Sequence[LayerPlan] = (), timing: str = "queued",
              dtype: str = "bfloat16", on_layer: Callable[[int, int], None] | None = None,
              **common: Any) -> dict[str, Any]:
    """Time ``plan`` (every distinct layer plan) or ``lps``; each row gets the cost model's
    ``predicted_ms``. Sustained timing samples the SM clock and board power beside each figure."""
    with clock_sampler(timing) as sampler:
        kw = dict(common, head_dim=cost.head_dim, batch=cost.batch, dtype=getattr(torch, dtype), timing=timing,
                  sampler=sampler, on_layer=on_layer, cost=cost)
        if plan is not None:
            result = bench_plan(plan, **kw)
        else:
            result = {"card": card_name(), "rows": bench_layer_plans(lps, **kw)}
    result.update(format="attnsearch-bench", timing=timing, cost_model=cost.describe())
    return result


def rows_of(result: dict[str, Any]) -> list[dict[str, Any]]:
    return result.get("layer_plans", result.get("rows", []))


def summary_table(result: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """(column names, cells per row) of a bench result's summary."""
    rows = rows_of(result)
    clocked = any("sparse_clock" in r for r in rows)
    cols = ["density", "backend", "ms", "TFLOP/s", "host µs", "predicted ms", "cuDNN ms", "Flex ms", "speedup"]
    cells = []
    for r in rows:
        host = r.get("sparse_host_us")
        row = [f"{r['density']:.3f}", r.get("backend", r.get("runs", "")), f"{r['sparse_ms']:.2f}",
               f"{r['sparse_tflops']:.0f}", "–" if host is None else f"{host:.0f}",
               f"{r['predicted_ms']:.2f}", f"{r.get('cudnn_ms', float('nan')):.2f}",
               f"{r.get('flex_ms', float('nan')):.2f}", f"{r.get('speedup_vs_cudnn', float('nan')):.2f}×"]
        cells.append(row + ([clock_cell(r.get("sparse_clock"))] if clocked else []))
    return cols + (["SM MHz, W"] if clocked else []), cells


__all__ = ["DTYPES", "SWEEP_DENSITIES", "check_request", "layer_plans", "rows_of", "run_bench", "summary_table"]
