"""FP8 (e4m3) kept blocks against bf16, on the runtime sweep's mixed layers (CUDA, Hopper or Ada for
FP8 tensor cores): the Hopper kernel's FP8 build where it runs, and the Triton kernel's.

    python -m benchmarks.fp8_layers --out reports/fp8_layers

Shapes: Wan2.1-1.3B's layer (1, 12, 32,760) and Wan2.1-14B's 720p layer (1, 40, 75,600) at head_dim
128, and the first with 24 heads at head_dim 64; layers mixing the four sparse families at 10, 25
and 50% of the blocks, block size 128. Timed per layer (``bench.time_ms``, queued, CUDA events,
median of fresh bf16 inputs): what ``sparse_attention`` runs in bf16 ("auto": the Hopper kernel on
H100/H200), the Triton kernel in bf16 (tuned), and per FP8 kernel (the Hopper kernel's FP8 build
where it runs, and the Triton kernel's) the call with its quantization pass (``runtime/quantize.py``,
V in the key order the kernel reads), the kernel alone on quantized operands, and the pass alone.
TFLOP/s count the kept blocks' 4·N·B·D per kept block pair. Error: relative L2 against fp32
attention on 512 sampled query rows, per layer and per head (random inputs: near-uniform
attention, FP8's hard case), beside the same error of the FP8 kernels' definition
(``fp8_attention_rows`` on ``quantize_fp8``'s operands), which is what a profile measures as a
head's FP8 error and the search is told. ``--hopper-stages 2 3 4`` also times the Hopper FP8 build
alone at those K/V ring depths (an FP8 block takes half of bf16's shared memory). Writes result.json
and figure.png.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from attnsearch.atomic_io import write_text_atomic
from attnsearch.bench.baselines import flops
from attnsearch.bench.layers import mixed_layer_plan
from attnsearch.bench.output import environment
from attnsearch.bench.timing import fresh_inputs, time_ms
from attnsearch.geometry import Geometry
from attnsearch.report.style import save_figure
from attnsearch.runtime import get_block_tables, select_backend
from attnsearch.runtime.backends import HopperBackend, TritonBackend, backend_for
from attnsearch.runtime.quantize import fp8_attention_rows, fp8_operands, quantize_fp8

SHAPES = [(Geometry(21, 30, 52), 12, 128), (Geometry(21, 45, 80), 40, 128), (Geometry(21, 30, 52), 24, 64)]
DENSITIES = (0.1, 0.25, 0.5)
BLOCK = 128
ROWS = 512


def reference_rows(q, k, v, layer_plan, scale: float, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """On ``rows`` of every head ([H, R, D], float32): attention in fp32 over the kept blocks, and the
    FP8 kernels' definition of it (``quantize_fp8``'s operands dequantized, P rounded to e4m3 as the
    kernels round it: ``fp8_attention_rows``), which is what a profile measures as a head's FP8 error
    and so what the search is told."""
    masks = layer_plan.block_masks().to(q.device)
    dq, dk, dv = fp8_operands(q, k, v, BLOCK)
    refs, defined = [], []
    for h in range(q.shape[1]):
        keep = masks[h][rows // BLOCK].repeat_interleave(BLOCK, dim=-1)[:, : q.shape[2]]    # [R, N]
        s = (q[0, h, rows].float() @ k[0, h].float().T) * scale
        refs.append(torch.softmax(s.masked_fill(~keep, float("-inf")), -1).nan_to_num(0.0) @ v[0, h].float())
        s8 = (dq[0, h, rows] @ dk[0, h].T) * scale
        defined.append(fp8_attention_rows(s8.masked_fill(~keep, float("-inf")), dv[0, h]))
    return torch.stack(refs), torch.stack(defined)


def head_errors(got: torch.Tensor, ref: torch.Tensor) -> list[float]:
    """Relative L2 of ``got`` against ``ref`` ([H, R, D]) per head (0 for a head whose reference is zero:
    a skip head, whose output is zero by definition)."""
    num = (got.float() - ref).square().sum((1, 2))
    den = ref.square().sum((1, 2))
    return torch.where(den > 0, (num / den.clamp_min(1e-30)).sqrt(), num.sqrt()).tolist()


def layer_error(got: torch.Tensor, ref: torch.Tensor) -> float:
    """Relative L2 of ``got`` against ``ref`` over every head."""
    return float((got.float() - ref).norm() / ref.norm())


def fp8_backends(qkv) -> list:
    """The kernels that run FP8 heads of this call here (the Hopper kernel's FP8 build, the Triton
    kernel's), what "auto" picks first."""
    auto = backend_for(*qkv, BLOCK, precision="fp8")
    return [auto] + [b for b in (HopperBackend, TritonBackend)
                     if b is not auto and not b.call_reasons(*qkv, BLOCK, "fp8")]


def bench_layer(geometry: Geometry, heads: int, head_dim: int, target: float, reps: int,
                hopper_stages: tuple[int, ...] = ()) -> dict:
    lp = mixed_layer_plan(geometry, heads, BLOCK, target)
    n = geometry.num_tokens
    shape = (1, heads, n, head_dim)
    inputs = fresh_inputs(shape, torch.bfloat16, 2)
    scale = head_dim ** -0.5
    tables = get_block_tables(lp, "cuda")
    fp8_tables = get_block_tables(lp.with_precision("fp8"), "cuda")
    out = torch.empty(shape, dtype=torch.bfloat16, device="cuda")
    auto = select_backend(*inputs[0], lp)
    runs = {f"bf16 {auto.name}": lambda x: auto.run_tables(*x, tables, scale, out),
            "bf16 triton": lambda x: TritonBackend.run_tables(*x, tables, scale, out)}
    kernels = {}
    for b in fp8_backends(inputs[0]):
        runs[f"fp8 {b.name} (with quantization)"] = lambda x, b=b: b.run_tables(*x, fp8_tables, scale, out,
                                                                                precision="fp8")
        runs[f"quantization for {b.name}"] = lambda x, b=b: quantize_fp8(*x, BLOCK, key_order=b.fp8_key_order)
        kernels[b] = [quantize_fp8(*x, BLOCK, key_order=b.fp8_key_order) for x in inputs]
    row = {"geometry": geometry.to_dict(), "shape": list(shape), "density": lp.density, "block_size": BLOCK}
    fl = flops(1, heads, n, head_dim, lp.density)
    for name, fn in runs.items():
        fn(inputs[0])                                  # tune and compile outside the timing
        ms = time_ms(fn, inputs, 3, reps)["median"]
        row[name] = {"ms": ms, "tflops": fl / ms / 1e9}
    for b, quantized in kernels.items():
        ms = time_ms(lambda i, b=b, quantized=quantized: b.run_quantized(*quantized[i], out, fp8_tables, scale),
                     [0, 1], 3, reps)["median"]
        row[f"fp8 {b.name} kernel alone"] = {"ms": ms, "tflops": fl / ms / 1e9}
    if HopperBackend in kernels:
        from attnsearch.runtime.hopper.launch import launch_all

        for stages in hopper_stages:  # the K/V ring's depth: FP8 blocks take half of bf16's shared memory
            def run(i, stages=stages, quantized=kernels[HopperBackend]):
                q8, k8, v8, scales = quantized[i]
                launch_all(q8, k8, v8, out, fp8_tables, scale, "fp8", stages=stages, fp8_scales=scales)

            run(0)
            ms = time_ms(run, [0, 1], 3, reps)["median"]
            row[f"fp8 hopper kernel alone, {stages} stages"] = {"ms": ms, "tflops": fl / ms / 1e9}
    from attnsearch.runtime.triton.launch import quantized_config

    row["fp8_triton_config"] = vars(quantized_config(*kernels[TritonBackend][0][:3], BLOCK))
    g = torch.Generator(device="cuda").manual_seed(0)
    rows = torch.randint(0, n, (ROWS,), device="cuda", generator=g)
    x = inputs[0]
    ref, defined = reference_rows(*x, lp, scale, rows)
    row["fp8 definition rel_err"] = layer_error(defined, ref)
    row["fp8 definition rel_err per head"] = head_errors(defined, ref)
    for name, fn in runs.items():
        if name.startswith(("bf16", "fp8")):
            fn(x)
            got = out[0, :, rows]
            row[f"{name.split(' (')[0]} rel_err"] = layer_error(got, ref)
            row[f"{name.split(' (')[0]} rel_err per head"] = head_errors(got, ref)
    return row


def figure(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shapes = list(dict.fromkeys(tuple(r["shape"]) for r in rows))
    fig, axes = plt.subplots(1, len(shapes), figsize=(5 * len(shapes), 4), sharey=True)
    names = [k for k in rows[0] if isinstance(rows[0][k], dict) and "tflops" in rows[0][k]
             and not k.startswith("quantization")]
    for ax, shape in zip(axes, shapes):
        sel = [r for r in rows if tuple(r["shape"]) == shape]
        for name in names:
            ax.plot([r["density"] for r in sel], [r[name]["tflops"] for r in sel], marker="o", label=name)
        ax.set_title(f"{shape[1]} heads × {shape[2]:,} tokens, D {shape[3]}", fontsize=10)
        ax.set_xlabel("kept-block density")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("TFLOP/s on kept blocks")
    axes[0].legend(fontsize=7)
    fig.suptitle(f"FP8 kept blocks vs bf16 ({rows[0]['card']})")
    save_figure(fig, path)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.fp8_layers", description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--densities", type=float, nargs="+", default=list(DENSITIES))
    ap.add_argument("--hopper-stages", type=int, nargs="*", default=[],
                    help="also time the Hopper FP8 build alone at these K/V ring depths (its default: 2)")
    args = ap.parse_args(argv)
    if not torch.cuda.is_available():
        ap.error("needs a CUDA GPU")
    started = time.time()
    env = environment()
    rows = []
    for geometry, heads, head_dim in SHAPES:
        for d in args.densities:
            row = {"card": env["card"], **bench_layer(geometry, heads, head_dim, d, args.reps,
                                                                 tuple(args.hopper_stages))}
            rows.append(row)
            print(f"{heads:>3} × {geometry.num_tokens:>6} D {head_dim:>3} @ {row['density']:.2f}: " + ", ".join(
                f"{k} {v['ms']:.2f} ms ({v['tflops']:.0f})" for k, v in row.items()
                if isinstance(v, dict) and "ms" in v) + "; rel err " + ", ".join(
                f"{k.removesuffix(' rel_err')} {v:.4f}" for k, v in row.items() if k.endswith("rel_err")), flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    figure(rows, args.out / "figure.png")
    data = {"benchmark": {**env, "seconds": round(time.time() - started, 1)}, "rows": rows}
    write_text_atomic(args.out / "result.json", json.dumps(data, indent=1, allow_nan=False) + "\n")
    print(f"wrote {args.out} in {time.time() - started:.0f} s")


if __name__ == "__main__":
    main()
