"""The block-sparse runtime against dense cuDNN SDPA and FlexAttention over density (CUDA).

    python -m benchmarks.runtime_sweep --out reports/runtime_sweep                  # head_dim 128
    python -m benchmarks.runtime_sweep --head-dim 64 --out reports/head_dim_64

Shapes: Wan2.1-1.3B's layer (1, 12, 32,760 = 21·30·52) and Wan2.1-14B's 720p layer (1, 40, 75,600 =
21·45·80) at head_dim 128; at head_dim 64 the same tokens with twice the heads. Layers mix the four
sparse families at each density of ``bench.sweep.SWEEP_DENSITIES`` plus the all-kept end, block
size 128, bf16; each timed with ``bench.bench_layer_plans`` (``--timing``), with the cost model's
prediction beside it. Writes result.json, figure.png and README.md into --out.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from attnsearch.bench import TIMING_MODES
from attnsearch.bench.output import write_outputs
from attnsearch.bench.sweep import layer_plans, run_bench
from attnsearch.costmodel import CostModel
from attnsearch.geometry import Geometry

SHAPES = [(Geometry(21, 30, 52), 12), (Geometry(21, 45, 80), 40)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=Path("reports/runtime_sweep"))
    ap.add_argument("--head-dim", type=int, choices=(64, 128), default=128)
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--timing", choices=TIMING_MODES, default="queued")
    ap.add_argument("--hardware", default=None, help="cost-model table for the predicted column")
    args = ap.parse_args()
    cost = CostModel(args.hardware, head_dim=args.head_dim)
    heads_per = 128 // args.head_dim
    shapes = []
    for geom, heads in SHAPES:
        lps = layer_plans(geom, heads * heads_per, 128, sweep=True)
        result = run_bench(cost, lps=lps, timing=args.timing, reps=args.reps)
        shapes.append({"geometry": geom.to_dict(), "heads": heads * heads_per, "rows": result["rows"],
                       "card": result["card"]})
        for r in result["rows"]:
            print(f"  {heads * heads_per} × {geom.num_tokens}: density {r['density']:.3f} {r['sparse_ms']:.3f} ms "
                  f"({r['predicted_ms']:.3f} predicted), {r.get('speedup_vs_cudnn', float('nan')):.2f}× cuDNN",
                  flush=True)

    def draw(fig):
        ax = fig.add_subplot()
        for s in shapes:
            rows = s["rows"]
            ax.plot([r["density"] for r in rows], [r["speedup_vs_cudnn"] for r in rows], "o-",
                    label=f"{s['heads']} heads × {Geometry.from_dict(s['geometry']).num_tokens} tokens")
        ax.plot([0.05, 1.0], [0.8 / 0.05, 0.8], ":", color="grey", label="0.8 / density")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("layer density")
        ax.set_ylabel("speedup over cuDNN dense (×)")
        ax.set_title(f"head_dim {args.head_dim}, {args.timing} timing")
        ax.legend()

    lines = ["| heads × N | density | ms | predicted ms | TFLOP/s | speedup vs cuDNN | vs Flex |", "|---|---|---|---|---|---|---|"]
    for s in shapes:
        n = Geometry.from_dict(s["geometry"]).num_tokens
        lines += [f"| {s['heads']} × {n} | {r['density']:.3f} | {r['sparse_ms']:.3f} | {r['predicted_ms']:.3f} | "
                  f"{r['sparse_tflops']:.0f} | {r.get('speedup_vs_cudnn', float('nan')):.2f}× | "
                  f"{r.get('speedup_vs_flex', float('nan')):.2f}× |" for r in s["rows"]]
    write_outputs(args.out, f"Runtime sweep, head_dim {args.head_dim}",
                  {"head_dim": args.head_dim, "timing": args.timing, "cost_model": cost.describe(), "shapes": shapes},
                  draw, "\n".join(lines))


if __name__ == "__main__":
    main()
