"""Cost of the profiling pass against the dense attention it profiles (GPU).

    python -m benchmarks.profile_cost --out reports/profiling_cost [--layers 30 --heads 12 --frames 21 --height 30 --width 52]

Default: a Wan2.1-1.3B-shaped stack, 30 layers × 12 heads, N = 21·30·52 = 32,760, head_dim 128,
bf16, fresh random q/k/v per layer. Dense time = cuDNN SDPA over every layer (CUDA events, median
of repeats after warm-up). Profile time = profile_tensors over every layer, end to end (candidate
masks, sampling, stats, host copies), timed the same way. Memory = peak allocated during each
pass over the same resident q/k/v; the difference is what profiling adds.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

from attnsearch import Geometry, profile_tensors
from attnsearch.bench.output import write_outputs
from attnsearch.profiling.candidates import static_candidates


def cuda_time(fn, repeats: int) -> list[float]:
    times = []
    for _ in range(repeats):
        start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        stop.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(stop))
    return times


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--layers", type=int, default=30)
    ap.add_argument("--heads", type=int, default=12)
    ap.add_argument("--frames", type=int, default=21)
    ap.add_argument("--height", type=int, default=30)
    ap.add_argument("--width", type=int, default=52)
    ap.add_argument("--head-dim", type=int, default=128)
    ap.add_argument("--queries", type=int, default=256)
    ap.add_argument("--block-size", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--out", type=Path, default=Path("reports/profiling_cost"))
    ap.add_argument("--trace", action="store_true", help="Print the top operators of one profiling pass.")
    args = ap.parse_args()

    dev = torch.device("cuda")
    geom = Geometry(args.frames, args.height, args.width)
    n, h, d = geom.num_tokens, args.heads, args.head_dim
    gen = torch.Generator(device=dev).manual_seed(0)
    qkv = [tuple(torch.randn(1, h, n, d, device=dev, dtype=torch.bfloat16, generator=gen) for _ in range(3))
           for _ in range(args.layers)]

    def dense():
        with sdpa_kernel(SDPBackend.CUDNN_ATTENTION):
            for q, k, v in qkv:
                torch.nn.functional.scaled_dot_product_attention(q, k, v)

    def profile():
        for layer, (q, k, v) in enumerate(qkv):
            profile_tensors(q, k, v, geom, layer=layer, block_size=args.block_size, queries=args.queries)

    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated()
    dense()  # warm-up (cuDNN plan, kernels)
    torch.cuda.reset_peak_memory_stats()
    dense_ms = cuda_time(dense, args.repeats)
    dense_peak = torch.cuda.max_memory_allocated() - base

    static_candidates.cache_clear()
    first_ms = cuda_time(profile, 1)[0]  # includes building the candidate masks once
    torch.cuda.reset_peak_memory_stats()
    prof_ms = cuda_time(profile, args.repeats)
    prof_peak = torch.cuda.max_memory_allocated() - base

    if args.trace:
        from torch.profiler import ProfilerActivity
        from torch.profiler import profile as torch_profile

        with torch_profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as trace:
            profile()
            torch.cuda.synchronize()
        print(trace.key_averages().table(sort_by="cuda_time_total", row_limit=15))
        print(trace.key_averages().table(sort_by="cpu_time_total", row_limit=15))

    result = {
        "device": torch.cuda.get_device_name(), "torch": torch.__version__,
        "shape": {"layers": args.layers, "heads": h, "N": n, "head_dim": d, "dtype": "bfloat16"},
        "geometry": geom.to_dict(), "queries": args.queries, "block_size": args.block_size,
        "dense_ms": statistics.median(dense_ms), "profile_ms": statistics.median(prof_ms),
        "profile_first_ms": first_ms,
        "ratio": statistics.median(prof_ms) / statistics.median(dense_ms),
        "dense_peak_extra_gib": dense_peak / 2**30, "profile_peak_extra_gib": prof_peak / 2**30,
        "profile_minus_dense_gib": (prof_peak - dense_peak) / 2**30,
        "resident_qkv_gib": 3 * args.layers * h * n * d * 2 / 2**30,
    }
    print(json.dumps(result, indent=1))
    write_outputs(args.out, "Profiling cost", result, lambda fig: plot(result, fig),
                  f"Profiling pass {result['ratio']:.2f}× the dense attention it profiles, "
                  f"{result['profile_minus_dense_gib']:.2f} GiB above it.")


def plot(result: dict, fig) -> None:
    """Two bars per panel: time and extra memory of the dense pass and of the profiling pass."""
    ax_t, ax_m = fig.subplots(1, 2)
    names = ["dense attention\n(cuDNN)", "profiling pass"]
    ax_t.bar(names, [result["dense_ms"], result["profile_ms"]], color=["#888888", "#1f77b4"])
    ax_t.axhline(3 * result["dense_ms"], color="#d62728", ls="--", lw=1, label="3× dense budget")
    ax_t.set_ylabel("ms (all layers)")
    ax_t.set_title(f"time: {result['ratio']:.2f}× dense")
    ax_t.legend(fontsize=8)
    ax_m.bar(names, [result["dense_peak_extra_gib"], result["profile_peak_extra_gib"]], color=["#888888", "#1f77b4"])
    ax_m.axhline(result["dense_peak_extra_gib"] + 4, color="#d62728", ls="--", lw=1, label="+4 GiB budget")
    ax_m.set_ylabel("GiB above resident q/k/v")
    ax_m.set_title("peak memory")
    ax_m.legend(fontsize=8)
    s = result["shape"]
    fig.suptitle(f"{result['device']}: {s['layers']} layers × {s['heads']} heads, N={s['N']}, D={s['head_dim']}, bf16",
                 fontsize=9)
    fig.tight_layout()


if __name__ == "__main__":
    main()
