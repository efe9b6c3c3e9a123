"""What the GPU runs during queued calls of the runtime, kernel by kernel, and where it idles.

    PYTHONUNBUFFERED=1 python benchmarks/launch_trace_gpu.py --out $OUT \\
        [--case HEADS:FRAMES:HEIGHT:WIDTH:TEXT:DENSITY:HEAD_DIM ...] [--calls 10]

For each case (default: CogVideoX-5B's layer at 10%, 48 × 17,776, head_dim 64, and the 24 × 32,760,
head_dim 64 layer at 10%) this queues ``--calls`` calls of the mixed-family layer plan through the
backend "auto" picks, as ``attnsearch bench`` times them, under ``torch.profiler``, and reports
per call: every kernel's name and GPU time, the GPU's idle time between the call's first kernel's
start and its last kernel's end, and the gap before the next call. A short layer whose rate falls
below what its turns predict loses the difference either inside the kernel (ramp, tail: see
``kernel_probe_gpu.py --timing sustained``, "busy") or here, between kernels.
Writes launch_trace_gpu.{json,md} under --out.
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import sys
from pathlib import Path

import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from attnsearch import Geometry  # noqa: E402
from attnsearch.bench import card_name, flops, fresh_inputs, mixed_layer_plan  # noqa: E402
from attnsearch.patterns import SPARSE_FAMILIES  # noqa: E402
from attnsearch.runtime.dispatch import select_backend  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from kernel_probe_gpu import parse_case  # noqa: E402

CASES = [(48, Geometry(13, 30, 45, 226), 0.1, 64), (24, Geometry(21, 30, 52), 0.1, 64)]


def gpu_kernels(prof) -> list[tuple[str, float, float]]:
    """(name, start µs, end µs) of every GPU kernel the profiler saw, in start order."""
    rows = [(e.name, e.time_range.start, e.time_range.end) for e in prof.events()
            if e.device_type == torch.autograd.DeviceType.CUDA and e.time_range.end > e.time_range.start]
    return sorted(rows, key=lambda r: r[1])


def trace_case(H: int, geom: Geometry, target: float, d: int, calls: int) -> dict:
    lp = mixed_layer_plan(geom, H, 128, target, SPARSE_FAMILIES)
    n = geom.num_tokens
    inputs = fresh_inputs((1, H, n, d), torch.bfloat16, 2)
    out = torch.empty(1, H, n, d, device="cuda", dtype=torch.bfloat16)
    backend = select_backend(*inputs[0], lp)
    run = lambda x: backend.forward(*x, lp, d ** -0.5, out)  # noqa: E731
    for i in range(5):  # compile, tune and warm the clocks outside the trace
        run(inputs[i % 2])
    torch.cuda.synchronize()
    marks = [torch.cuda.Event(enable_timing=True) for _ in range(calls + 1)]
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for i in range(calls):
            marks[i].record()
            run(inputs[i % 2])
        marks[calls].record()
        torch.cuda.synchronize()
    kernels = gpu_kernels(prof)
    # One call = the kernels between two calls' first kernels: the runtime's call starts with the
    # same kernel every time, so split at each occurrence of the first kernel's name.
    first = kernels[0][0]
    starts = [i for i, k in enumerate(kernels) if k[0] == first] + [len(kernels)]
    per_call = []
    for a, b in itertools.pairwise(starts):
        ks = kernels[a:b]
        busy = sum(k[2] - k[1] for k in ks)
        span = ks[-1][2] - ks[0][1]
        nxt = kernels[b][1] - ks[-1][2] if b < len(kernels) else None
        per_call.append({"kernels": [(k[0][:80], k[2] - k[1]) for k in ks], "span_us": span,
                         "idle_inside_us": span - busy, "gap_after_us": nxt})
    fl = flops(1, H, n, d, lp.density)
    event_ms = statistics.median(marks[i].elapsed_time(marks[i + 1]) for i in range(calls))
    main = max(per_call[0]["kernels"], key=lambda k: k[1])[0]
    main_us = statistics.median(max(c["kernels"], key=lambda k: k[1])[1] for c in per_call)
    res = {"H": H, "N": n, "D": d, "density": lp.density, "backend": backend.name, "calls": calls,
           "event_ms": event_ms, "tflops_event": fl / event_ms / 1e9, "main_kernel": main,
           "main_kernel_us": main_us, "tflops_main_kernel": fl / main_us / 1e6,
           "kernels_per_call": statistics.median(len(c["kernels"]) for c in per_call),
           "span_us": statistics.median(c["span_us"] for c in per_call),
           "idle_inside_us": statistics.median(c["idle_inside_us"] for c in per_call),
           "gap_after_us": statistics.median(c["gap_after_us"] for c in per_call if c["gap_after_us"] is not None),
           "first_call": per_call[0]["kernels"]}
    print(f"  H={H} N={n} D={d} d={lp.density:.3f} {backend.name}: {res['kernels_per_call']:.0f} kernels/call, "
          f"event {event_ms * 1e3:.0f} µs ({res['tflops_event']:.0f} TFLOP/s), main kernel {main_us:.0f} µs "
          f"({res['tflops_main_kernel']:.0f}), idle inside {res['idle_inside_us']:.1f} µs, gap after "
          f"{res['gap_after_us']:.1f} µs", flush=True)
    for name, us in per_call[0]["kernels"]:
        print(f"      {us:9.1f} µs  {name}")
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=Path("reports/kernel"))
    ap.add_argument("--calls", type=int, default=10)
    ap.add_argument("--case", type=parse_case, action="append",
                    help="trace this shape instead of CASES (repeatable): HEADS:FRAMES:HEIGHT:WIDTH:TEXT:DENSITY:HEAD_DIM")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    env = {"card": card_name(), "torch": torch.__version__}
    print(env, flush=True)
    rows = [trace_case(H, g, t, d, args.calls) for H, g, t, d in args.case or CASES]
    (args.out / "launch_trace_gpu.json").write_text(json.dumps({"env": env, "rows": rows}, indent=1))
    lines = [f"# Queued calls, kernel by kernel, on {env['card']}", "",
             "| H × N, D | density | backend | kernels / call | call (events) | main kernel | idle inside | gap after |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['H']} × {r['N']}, {r['D']} | {r['density']:.3f} | {r['backend']} | "
                     f"{r['kernels_per_call']:.0f} | {r['event_ms'] * 1e3:.0f} µs ({r['tflops_event']:.0f} TFLOP/s) | "
                     f"{r['main_kernel_us']:.0f} µs ({r['tflops_main_kernel']:.0f}) | {r['idle_inside_us']:.1f} µs | "
                     f"{r['gap_after_us']:.1f} µs |")
    (args.out / "launch_trace_gpu.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
