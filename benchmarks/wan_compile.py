"""Wan2.1-1.3B transformer forward eager vs ``torch.compile`` vs CUDA graph, dense and sparse (CUDA).

Device command (repo root; carry ``.whl`` as for ``benchmarks.wan_e2e``, whose docstring says how
to prepare it):

    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site:$PWD && PYTHONUNBUFFERED=1 python3 -m benchmarks.wan_compile --out $OUT

CPU dry run (tiny Wan at 17 × 128 × 128, float32, torch backend, wall clock; no CUDA graphs):

    python -m benchmarks.wan_compile --dry-run --out /tmp/wan_compile

What it measures. The model, input and plans of ``benchmarks.wan_e2e`` (the real diffusers
``WanTransformer3DModel`` at the Wan2.1-T2V-1.3B configuration, random weights, bf16, 480p × 81
frames = 32,760 tokens, 512 text tokens; the mixed-family plans of ``bench.forward`` at each
``--density``), one forward, timed by ``bench.forward.ForwardTimer`` in up to four modes each:

* ``eager``: the forward as is (dense: cuDNN SDPA forced; sparse: under ``apply(model, plan)``);
* ``compile``: ``torch.compile(model, fullgraph=True)`` (default mode), the same contexts;
* ``graph``: the eager forward captured once in a CUDA graph (after warm-up) and replayed;
* ``compile+graph``: the compiled forward captured in a CUDA graph and replayed.

``--precision native fp8`` runs each plan twice, as built and with every computed head's kept blocks
in FP8 (``Plan.with_precision``; the quantization pass runs inside each call, compiled or not);
``--modes`` picks the modes (default all four). Each mode's output is compared with the eager
output of the same plan (relative L2), sparse with dense too. The figures it checks: compiled
sparse over compiled dense against the eager ratio, and sparse compiled over sparse eager (compile
at least 5% faster). Writes result.json, figure.png and
README.md into ``--out`` and prints the markdown table last.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from pathlib import Path

import torch

from attnsearch.bench.forward import MODES, LAYER_SCALES, ForwardTimer, mixed_forward_plan, rel_l2, time_forward_modes
from attnsearch.bench.output import write_outputs
from attnsearch.models.diffusers import VideoSize, denoising_inputs, instrument, random_transformer
from attnsearch.models.diffusers.wan import FAMILY as WAN

def _density(row: dict) -> str:
    return "1" if row["density"] is None else f"{row['density']:.3f}"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "reports/wan_compile")))
    ap.add_argument("--dry-run", action="store_true",
                    help="CPU: tiny Wan, 17 × 128 × 128, float32, torch backend, eager and compile only")
    ap.add_argument("--density", type=float, nargs="+", default=[0.15],
                    help="target attention densities: one plan (and one sparse run per mode) each")
    ap.add_argument("--block-size", type=int, default=128)
    ap.add_argument("--precision", nargs="+", choices=["native", "fp8"], default=["native"],
                    help="kept-block precisions: one sparse row per density and precision")
    ap.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES),
                    help="forward modes to time (eager is always run: every mode is checked against it)")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--reps", type=int, default=10)
    args = ap.parse_args(argv)
    t_start = time.time()
    cuda = torch.cuda.is_available() and not args.dry_run
    if not cuda and not args.dry_run:
        raise SystemExit("wan_compile: no CUDA device (use --dry-run for a CPU dry run)")
    device, dtype = ("cuda", torch.bfloat16) if cuda else ("cpu", torch.float32)
    backend = "auto" if cuda else "torch"
    size = VideoSize(17, 128, 128) if args.dry_run else VideoSize(81, 480, 832)
    text_tokens = 7 if args.dry_run else 512
    block_size = 64 if args.dry_run else args.block_size
    modes = tuple(m for m in MODES if m == "eager" or m in args.modes and (cuda or "graph" not in m))
    timer = ForwardTimer(cuda, 1 if args.dry_run else args.warmup, 2 if args.dry_run else args.reps)

    import diffusers

    env = {"card": torch.cuda.get_device_name() if cuda else "cpu", "torch": torch.__version__,
           "diffusers": diffusers.__version__, "dtype": str(dtype)[6:], "backend": backend, "dry_run": args.dry_run}
    print(env, flush=True)
    model = random_transformer("wan2.1-1.3b", WAN.tiny if args.dry_run else None, dtype=dtype, device=device)
    kw = denoising_inputs(model, latent=WAN.latent_size(model.config, size), text_tokens=text_tokens, steps=1)[0]
    geometry = WAN.geometry(model, kw)
    num_layers, num_heads = instrument(model).num_layers, model.config.num_attention_heads
    print(f"geometry {geometry}, {num_layers} layers × {num_heads} heads  ({time.time() - t_start:.0f}s)", flush=True)

    print("dense", flush=True)
    dense = time_forward_modes(model, kw, timer, modes, cudnn=cuda)
    rows = [_row("dense", None, dense, dense)]
    for target in args.density:
        base = mixed_forward_plan(geometry, num_layers, num_heads, block_size, target,
                                  model={"name": "diffusers-random:wan2.1-1.3b"},
                                  search={"benchmark": "wan_compile", "target_density": target,
                                          "layer_scales": list(LAYER_SCALES)})
        for precision in args.precision:
            plan = base if precision == "native" else base.with_precision(precision)
            print(f"sparse, mean density {plan.mean_density:.3f}, {precision}", flush=True)
            sparse = time_forward_modes(model, kw, timer, modes, cudnn=cuda, plan=plan, backend=backend)
            rows.append(_row("sparse", plan.mean_density, sparse, dense, precision))
            torch._dynamo.reset()
    result = {"env": env, "video": vars(size), "geometry": geometry.to_dict(), "tokens": geometry.num_tokens,
              "block_size": block_size, "modes": list(modes), "rows": rows, "checks": _checks(rows),
              "wall_s": time.time() - t_start}
    header = ("| card | attention | density | precision | " + " | ".join(modes) + " |\n|---|---|---|---|"
              + "---|" * len(modes) + "\n")
    lines = [f"| {env['card']} | {r['attention']} | {_density(r)} | {r['precision']} | "
             + " | ".join(f"{r['modes'][m]['ms']:.1f} ms" if "ms" in r["modes"][m] else "failed" for m in modes) + " |"
             for r in rows]
    acc = result["checks"]
    summary = header + "\n".join(lines) + "\n\n" + "\n".join(f"- {k}: {v}" for k, v in acc.items())
    write_outputs(args.out, "Wan2.1-1.3B forward: eager, torch.compile, CUDA graph", json.loads(json.dumps(result)),
                  lambda fig: _figure(fig, rows, modes), summary)
    print(summary, flush=True)
    if any(not math.isfinite(r["modes"][m].get("rel_l2_vs_eager", 0.0)) for r in rows for m in modes):
        raise SystemExit(1)


def _row(attention: str, density: float | None, runs: dict, dense: dict, precision: str = "native") -> dict:
    """One table row: per mode its timing and its output's error against eager (and dense)."""
    eager_out = runs["eager"].get("out")
    modes = {}
    for mode, r in runs.items():
        if "error" in r:
            modes[mode] = {"error": r["error"]}
            continue
        entry = {"ms": r["ms"]["median"], "timing": r["ms"], "first_call_s": r["first_call_s"],
                 "rel_l2_vs_eager": rel_l2(r["out"], eager_out) if eager_out is not None else None,
                 "finite": bool(torch.isfinite(r["out"]).all())}
        if density is not None and "out" in dense.get(mode, {}):
            entry["rel_l2_vs_dense"] = rel_l2(r["out"], dense[mode]["out"])
        modes[mode] = entry
    return {"attention": attention, "density": density, "precision": precision, "modes": modes}


def _checks(rows: list[dict]) -> dict:
    """Sparse over dense per mode (every sparse row: its density and precision), and compile over
    eager for sparse (first sparse row)."""
    dense, sparse = rows[0]["modes"], rows[1]["modes"] if len(rows) > 1 else {}
    ms = lambda m, mode: m.get(mode, {}).get("ms")  # noqa: E731
    out = {}
    for row in rows[1:]:
        for mode in dense:
            if ms(dense, mode) and ms(row["modes"], mode):
                out[f"speedup_{_density(row)}_{row['precision']}_over_dense_{mode}"] = (
                    ms(dense, mode) / ms(row["modes"], mode))
    for mode in dense:
        if ms(dense, mode) and ms(sparse, mode):
            out[f"speedup_sparse_over_dense_{mode}"] = ms(dense, mode) / ms(sparse, mode)
    if ms(sparse, "eager") and ms(sparse, "compile"):
        out["sparse_compile_over_eager"] = ms(sparse, "eager") / ms(sparse, "compile")
        out["compile_at_least_5pct_faster"] = out["sparse_compile_over_eager"] >= 1.05
    e, c = out.get("speedup_sparse_over_dense_eager"), out.get("speedup_sparse_over_dense_compile")
    if e and c:
        out["compiled_ratio_at_least_eager_ratio"] = c >= e
    return out


def _figure(fig, rows, modes) -> None:
    ax = fig.add_subplot()
    width = 0.8 / len(rows)
    for i, r in enumerate(rows):
        label = r["attention"] if r["density"] is None else f"sparse {r['density']:.2f} {r['precision']}"
        ax.bar([j + i * width for j in range(len(modes))],
               [r["modes"][m].get("ms", float("nan")) for m in modes], width, label=label)
    ax.set_xticks([j + width * (len(rows) - 1) / 2 for j in range(len(modes))], modes)
    ax.set_ylabel("forward (ms)")
    ax.legend()


if __name__ == "__main__":
    main()
