"""Where a Hopper-kernel turn spends its cycles, bf16 and FP8 builds (CUDA, H100/H200).

    python -m benchmarks.hopper_probe --out DIR [--densities 0.1 0.5]

Shapes: Wan2.1-1.3B's layer (1, 12, 32,760) at head_dim 128 and the same with 24 heads at head_dim
64; layers mixing the four sparse families at each density, block size 128, fresh bf16 inputs (FP8:
``quantize_fp8``'s operands in the kernel's key order). Per shape, density and precision: the
kernel alone (the flat schedule, ``launch_all``; queued CUDA events, median of ``--reps``), then the
same launches built with the cycle probe (``launch(..., probe=buf)``, ``runtime/hopper/probe.py``):
per consumer turn, the mean SM cycles spent waiting for K/V (FP8: P's e4m3 conversion and the
block's K-scale loads land in this phase too), waiting for the turn and issuing the products,
waiting for S, in the softmax, waiting for PV and rescaling O; ``rest`` is the turn's bookkeeping;
``edges`` the tile boundaries' cycles spread over the turns. The probe's clock reads add a little to
every phase, so its turn is not the timed kernel's. Writes result.json, figure.png and README.md.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from attnsearch.bench.baselines import flops
from attnsearch.bench.layers import mixed_layer_plan
from attnsearch.bench.output import write_outputs
from attnsearch.bench.timing import fresh_inputs, time_ms
from attnsearch.geometry import Geometry
from attnsearch.runtime import get_block_tables

SHAPES = [(Geometry(21, 30, 52), 12, 128), (Geometry(21, 30, 52), 24, 64)]
DENSITIES = (0.1, 0.5)
BLOCK = 128
#: The probe's phases of a turn, in ``PROBE_FIELDS``' order after "total".
PHASES = ("wait_kv", "wait_turn", "wait_s", "softmax", "wait_pv")


def probed_turn(operands, out, tables, scale: float, precision: str) -> dict:
    """Mean cycles per consumer turn of each phase over every program and consumer of the layer's
    launches of ``precision`` (one probing build per launch)."""
    from attnsearch.runtime.hopper import launch
    from attnsearch.runtime.hopper.probe import PROBE_FIELDS

    q, k, v, scales = operands
    sums = torch.zeros(len(PROBE_FIELDS), dtype=torch.int64)
    for item in tables.launches_of(precision):
        programs = launch.launch_grid(item.work.numel() * q.shape[0], q.device)
        buf = torch.zeros(programs, 2, len(PROBE_FIELDS), dtype=torch.int32, device=q.device)
        launch.launch(q, k, v, out, tables, item.work, scale, flat=True, probe=buf, fp8_scales=scales)
        sums += buf.long().sum(dim=(0, 1)).cpu()
    field = dict(zip(PROBE_FIELDS, sums.tolist()))
    turns = field["turns"]
    row = {p: field[p] / turns for p in PHASES}
    row["total"] = field["total"] / turns
    row["edges"] = field["tile_edges"] / turns
    row["rest"] = row["total"] - row["edges"] - sum(row[p] for p in PHASES)
    row["turns"] = turns
    return row


def bench(geometry: Geometry, heads: int, head_dim: int, target: float, reps: int) -> list[dict]:
    from attnsearch.runtime.hopper.launch import launch_all
    from attnsearch.runtime.quantize import quantize_fp8

    lp = mixed_layer_plan(geometry, heads, BLOCK, target)
    shape = (1, heads, geometry.num_tokens, head_dim)
    inputs = fresh_inputs(shape, torch.bfloat16, 2)
    out = torch.empty(shape, dtype=torch.bfloat16, device="cuda")
    scale = head_dim ** -0.5
    fl = flops(1, heads, geometry.num_tokens, head_dim, lp.density)
    rows = []
    for precision in ("native", "fp8"):
        tables = get_block_tables(lp if precision == "native" else lp.with_precision("fp8"), "cuda")
        operands = [(*x, None) if precision == "native" else quantize_fp8(*x, BLOCK, key_order="wgmma")
                    for x in inputs]

        def run(i, operands=operands, tables=tables, precision=precision):
            q, k, v, scales = operands[i]
            launch_all(q, k, v, out, tables, scale, precision, flat=True, fp8_scales=scales)

        run(0)  # compile outside the timing
        ms = time_ms(run, [0, 1], 3, reps)["median"]
        rows.append({"shape": list(shape), "density": lp.density, "precision": precision, "ms": ms,
                     "tflops": fl / ms / 1e9, **probed_turn(operands[0], out, tables, scale, precision)})
        r = rows[-1]
        print(f"{heads} × {geometry.num_tokens} D {head_dim} @ {lp.density:.2f} {precision}: "
              f"{r['tflops']:.0f} TFLOP/s; turn {r['total']:.0f} cycles: "
              + ", ".join(f"{p} {r[p]:.0f}" for p in (*PHASES, "rest", "edges")), flush=True)
    return rows


def draw(rows: list[dict]):
    """figure.png: stacked cycles per turn by phase, one bar per shape, density and precision."""

    def figure(fig) -> None:
        ax = fig.add_subplot()
        fig.set_size_inches(9, 4)
        labels = [f"D{r['shape'][3]} {r['density']:.2f}\n{'bf16' if r['precision'] == 'native' else 'FP8'}"
                  for r in rows]
        bottom = [0.0] * len(rows)
        for phase in (*PHASES, "rest", "edges"):
            values = [r[phase] for r in rows]
            ax.bar(labels, values, bottom=bottom, label=phase)
            bottom = [b + v for b, v in zip(bottom, values)]
        for i, r in enumerate(rows):
            ax.text(i, bottom[i] + 30, f"{r['tflops']:.0f}", ha="center", fontsize=8)
        ax.set_ylabel("SM cycles per consumer turn (probing build)")
        ax.set_title("Hopper kernel turn by phase; TFLOP/s of the unprobed kernel on top", fontsize=10)
        ax.legend(fontsize=7, ncol=4)

    return figure


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.hopper_probe", description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--densities", type=float, nargs="+", default=list(DENSITIES))
    args = ap.parse_args(argv)
    if not torch.cuda.is_available() or torch.cuda.get_device_capability()[0] != 9:
        ap.error("needs a Hopper GPU (compute capability 9.x)")
    started = time.time()
    rows = [r for geometry, heads, head_dim in SHAPES for d in args.densities
            for r in bench(geometry, heads, head_dim, d, args.reps)]
    table = "| shape | density | precision | TFLOP/s | turn | " + " | ".join(PHASES) + " | rest | edges |\n"
    table += "|---" * (6 + len(PHASES) + 2) + "|\n" + "\n".join(
        f"| {r['shape'][1]} × {r['shape'][2]} × {r['shape'][3]} | {r['density']:.2f} | {r['precision']} | "
        f"{r['tflops']:.0f} | {r['total']:.0f} | " + " | ".join(f"{r[p]:.0f}" for p in (*PHASES, "rest", "edges"))
        + " |" for r in rows)
    write_outputs(args.out, "Hopper kernel: cycles per consumer turn", {"rows": rows,
                  "seconds": round(time.time() - started, 1)}, draw(rows), table)
    print(table)


if __name__ == "__main__":
    main()
