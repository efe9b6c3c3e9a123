"""How much of a timed call is the host's: the same calls timed four ways, on CUDA.

    PYTHONUNBUFFERED=1 python benchmarks/timing_method_gpu.py --out $OUT [--reps 30]

``attnsearch.bench.time_ms`` synchronised after every call until session 6 (its "synced" mode
now), so each call started on an idle GPU and its time included the host's work before the kernel
reached the GPU (Python, dispatch, descriptors, the launch itself). A 1 ms kernel lost 15-20% to
that; a model that queues its layers does not pay it. For each callable this script measures:

    synced   ``time_ms(mode="synced")``: events around each call, synchronised after each
    queued   ``time_ms(mode="queued")``, the default: no synchronisation between calls, the stream
             kept busy ahead of the first (the GPU's time per call while the host runs ahead, as
             triton.testing.do_bench times)
    graph    one CUDA graph of the call, its replays queued (no Python at all; where capture works)
    host     ``host_us``: the host's wall time per call while the GPU is busy (the call's CPU cost)

Callables: the runtime as ``apply`` runs it (backend.forward), its bare kernel launch, FlexAttention
on the same block mask, cuDNN dense SDPA. Writes timing_method_gpu.{json,md} under --out.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from attnsearch import Geometry  # noqa: E402
from attnsearch.bench import (_flex, card_name, cudnn_sdpa, flex_block_mask, flops,  # noqa: E402
                              fresh_inputs, host_us, mixed_layer_plan, time_ms)
from attnsearch.runtime import hopper_kernel  # noqa: E402
from attnsearch.runtime.block_tables import get_block_tables  # noqa: E402
from attnsearch.runtime.dispatch import select_backend  # noqa: E402

CASES = [(12, Geometry(21, 30, 52), t) for t in (0.1, 0.25, 0.5)] + [(40, Geometry(21, 60, 60), 0.1)]


def graph_ms(fn, inputs, reps: int) -> float | str:
    """Median ms of replays of one CUDA graph per input set (each captured on its set), queued; or
    why the call cannot be captured."""
    graphs = []
    try:
        for x in inputs:
            fn(x)
            torch.cuda.synchronize()
            g = torch.cuda.CUDAGraph()
            with torch.cuda.graph(g):
                fn(x)
            graphs.append((g,))
    except Exception as err:  # noqa: BLE001 - a backend that cannot be captured is a result here
        return f"{type(err).__name__}: {str(err).splitlines()[0][:120]}"
    return time_ms(lambda g: g[0].replay(), graphs, 3, reps, mode="queued")["median"]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--reps", type=int, default=30)
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    card = card_name()
    print(f"card: {card}, torch {torch.__version__}", flush=True)
    rows = []
    for H, geom, target in CASES:
        lp = mixed_layer_plan(geom, H, 128, target)
        n, d = geom.num_tokens, 128
        inputs = fresh_inputs((1, H, n, d), torch.bfloat16, 2)
        out = torch.empty(1, H, n, d, device="cuda", dtype=torch.bfloat16)
        scale = d ** -0.5
        fl = flops(1, H, n, d, lp.density)
        backend = select_backend(*inputs[0], lp)
        tables = get_block_tables(lp, "cuda")
        items = tables.launches[0].work  # a mixed layer is one launch
        bm = flex_block_mask(tables, n)
        fx = _flex()
        fns = {
            f"runtime ({backend.name}, backend.forward)": lambda x: backend.forward(*x, lp, scale, out),
            "hopper launch only": lambda x: hopper_kernel.launch(*x, out, tables, items, scale),
            "flex": lambda x: fx(*x, block_mask=bm, scale=scale),
            "cudnn dense": lambda x: cudnn_sdpa(*x),
        }
        for name, fn in fns.items():
            fn(inputs[0])
            torch.cuda.synchronize()
            work = flops(1, H, n, d, 1.0) if name == "cudnn dense" else fl
            synced = time_ms(fn, inputs, 3, args.reps, mode="synced")["median"]
            q = time_ms(fn, inputs, 3, args.reps, mode="queued")["median"]
            g = graph_ms(fn, inputs, args.reps)
            g_med = None if isinstance(g, str) else g
            h = host_us(fn, inputs, 40)
            row = {"H": H, "N": n, "density": lp.density, "callable": name, "synced_ms": synced,
                   "queued_ms": q, "graph_ms": g_med, "graph_error": g if isinstance(g, str) else None,
                   "host_us": h,
                   "synced_tflops": work / synced / 1e9, "queued_tflops": work / q / 1e9,
                   "graph_tflops": work / g_med / 1e9 if g_med else None}
            rows.append(row)
            print(f"{H}x{n} d={lp.density:.3f} {name:<34} "
                  f"synced {synced:.3f} ms ({row['synced_tflops']:.0f}) "
                  f"queued {q:.3f} ({row['queued_tflops']:.0f}) graph "
                  + (f"{g_med:.3f} ({row['graph_tflops']:.0f})" if g_med else str(g))
                  + f" host {h:.0f} us", flush=True)
    res = {"card": card, "torch": torch.__version__, "reps": args.reps, "rows": rows}
    (args.out / "timing_method_gpu.json").write_text(json.dumps(res, indent=1))
    lines = [f"# Timing method on {card}", "",
             "| H × N | density | callable | synced ms (TFLOP/s) | queued ms (TFLOP/s) | graph ms (TFLOP/s) "
             "| host µs per call |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        graph = (f"{r['graph_ms']:.3f} ({r['graph_tflops']:.0f})" if r["graph_ms"]
                 else f"n/a ({r['graph_error']})")
        lines.append(f"| {r['H']} × {r['N']} | {r['density']:.3f} | {r['callable']} | {r['synced_ms']:.3f} "
                     f"({r['synced_tflops']:.0f}) | {r['queued_ms']:.3f} ({r['queued_tflops']:.0f}) "
                     f"| {graph} "
                     f"| {r['host_us']:.0f} |")
    (args.out / "timing_method_gpu.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
