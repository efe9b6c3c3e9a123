"""A plan's all-dense layers under ``apply``: the Hopper kernel with every key block kept (what
``apply`` runs where it can) against cuDNN SDPA (what it ran before, and the dense baseline).

    python -m benchmarks.dense_layers --out reports/dense_layers [--reps 20] [--timing queued|sustained]

For each shape a one-layer module calls ``F.scaled_dot_product_attention`` on [1, H, N, D] bf16
inputs; under ``apply(module, Plan.dense(...))`` the call takes the kernel. Checked: the error of
both against an fp32 SDPA reference (the kernel's must stay within 2× cuDNN's and below 1e-2),
that ``apply`` counted the calls as dense, and that a call with a mask still runs SDPA bit for bit.
Timed: both, medians. Writes result.json, figure.png and README.md into --out.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

from attnsearch import Geometry
from attnsearch.bench import TIMING_MODES, clock_sampler, cudnn_sdpa, flops, fresh_inputs, time_ms
from attnsearch.bench.output import write_outputs
from attnsearch.plan import Plan
from attnsearch.runtime import apply
from attnsearch.runtime.dense import dense_attention

#: (heads, geometry, head_dim): Wan2.1-1.3B's 12-head layer, the 24-head head_dim-64 one, CogVideoX-5B's.
CASES = [(12, Geometry(21, 30, 52), 128), (24, Geometry(21, 30, 52), 64), (48, Geometry(13, 30, 45, 226), 64)]


class OneAttention(torch.nn.Module):
    """A model whose forward is one SDPA call on its (q, k, v) argument."""

    def forward(self, qkv: tuple, mask: torch.Tensor | None = None) -> torch.Tensor:
        return F.scaled_dot_product_attention(*qkv, attn_mask=mask)


def rel_err(out: torch.Tensor, ref: torch.Tensor) -> float:
    return float((out.float() - ref).norm() / ref.norm())


def run_case(H: int, geom: Geometry, d: int, reps: int, timing: str, sampler) -> dict:
    n = geom.num_tokens
    inputs = fresh_inputs((1, H, n, d), torch.bfloat16, 2)
    model = OneAttention()
    plan = Plan.dense(geom, 1, 1, H, 128)
    ref = F.scaled_dot_product_attention(*(t.float() for t in inputs[0]))
    mask = torch.ones(n, n, dtype=torch.bool, device="cuda")
    masked_ref = dense_attention(*inputs[0], attn_mask=mask)  # what apply runs for a masked call
    with apply(model, plan, auto_step=False) as ap:
        def call(x, mask=None):  # every call is step 0, layer 0 of the one-layer plan
            ap.set_step(0)
            return model(x, mask)

        kernel_out = call(inputs[0])
        kernel = time_ms(call, inputs, 3, reps, mode=timing, sampler=sampler)
        masked_equal = torch.equal(call(inputs[0], mask), masked_ref)
        calls, dense = ap.stats["calls"], ap.stats["dense"]
    cudnn_out = cudnn_sdpa(*inputs[0])
    cudnn = time_ms(lambda x: cudnn_sdpa(*x), inputs, 3, reps, mode=timing, sampler=sampler)
    fl = flops(1, H, n, d, 1.0)
    row = {"H": H, "N": n, "D": d, "timing": timing, "kernel_ms": kernel["median"], "cudnn_ms": cudnn["median"],
           "kernel_tflops": fl / kernel["median"] / 1e9, "cudnn_tflops": fl / cudnn["median"] / 1e9,
           "kernel_clock": kernel.get("clock"), "cudnn_clock": cudnn.get("clock"),
           "kernel_rel_err": rel_err(kernel_out, ref), "cudnn_rel_err": rel_err(cudnn_out, ref),
           "masked_call_is_sdpa": masked_equal, "all_calls_dense": dense == calls}
    row["ok"] = (row["kernel_rel_err"] <= max(2 * row["cudnn_rel_err"], 1e-3) and row["kernel_rel_err"] < 1e-2
                 and masked_equal and row["all_calls_dense"])
    print(f"  H={H} N={n} D={d}: kernel {row['kernel_tflops']:.0f} TFLOP/s (rel err {row['kernel_rel_err']:.2e}), "
          f"cuDNN {row['cudnn_tflops']:.0f} ({row['cudnn_rel_err']:.2e}): "
          f"{row['cudnn_ms'] / row['kernel_ms']:.3f}×; {'OK' if row['ok'] else 'FAILED'}", flush=True)
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=Path("reports/dense_layers"))
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--timing", choices=TIMING_MODES, default="queued")
    args = ap.parse_args()
    with clock_sampler(args.timing) as sampler:
        rows = [run_case(H, g, d, args.reps, args.timing, sampler) for H, g, d in CASES]
    lines = ["| H × N, D | Hopper kernel, all kept: TFLOP/s (rel err) | cuDNN SDPA | speedup | checks |",
             "|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['H']} × {r['N']}, {r['D']} | {r['kernel_tflops']:.0f} ({r['kernel_rel_err']:.2e}) | "
                     f"{r['cudnn_tflops']:.0f} ({r['cudnn_rel_err']:.2e}) | {r['cudnn_ms'] / r['kernel_ms']:.3f}× | "
                     f"{'OK' if r['ok'] else 'FAILED'} |")

    def draw(fig):
        ax = fig.add_subplot()
        labels = [f"{r['H']}×{r['N']}, D{r['D']}" for r in rows]
        x = range(len(rows))
        ax.bar([i - 0.2 for i in x], [r["kernel_tflops"] for r in rows], 0.4, label="Hopper kernel, every block kept")
        ax.bar([i + 0.2 for i in x], [r["cudnn_tflops"] for r in rows], 0.4, label="cuDNN SDPA")
        ax.set_xticks(list(x), labels)
        ax.set_ylabel(f"TFLOP/s ({args.timing})")
        ax.legend()

    write_outputs(args.out, "All-dense layers under apply", {"timing": args.timing, "rows": rows}, draw,
                  "\n".join(lines))
    print("\n".join(lines))
    if not all(r["ok"] for r in rows):
        sys.exit(1)


if __name__ == "__main__":
    main()
