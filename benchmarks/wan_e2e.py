"""End-to-end Wan transformer forward: dense cuDNN SDPA vs ``apply(model, plan)`` (CUDA).

Device command (repo root; carry ``.whl``: diffusers 0.42.1 + importlib_metadata + lazy-importer
wheels, the rest of diffusers' needs are in the image; no diffusers is installed there):

    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site:$PWD && PYTHONUNBUFFERED=1 python3 -m benchmarks.wan_e2e --out $OUT

Prepare ``.whl`` once, here, in the repo root (README of the device tool):

    echo /.whl/ >> .git/info/exclude
    python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
        -d .whl diffusers==0.42.1 importlib_metadata==10.2.0 lazy-importer==0.1.0

CPU dry run (tiny config, float32, torch backend, wall-clock timer):

    .venv/bin/python -m benchmarks.wan_e2e --tiny --out /tmp/wan_e2e

What it measures. The real diffusers ``WanTransformer3DModel`` at a Wan preset's configuration
(``--model``; random weights, bf16, the modules diffusers keeps in float32 kept in float32), batch 1,
one forward. Wan2.1-T2V-1.3B (the default): 30 layers, 12 heads × 128, dim 1536, ffn 8960, 480p × 81
frames → latent 16 × 21 × 60 × 104 → 21 × 30 × 52 = 32,760 tokens, 512 text tokens (cross-attention).
Wan2.1-T2V-14B: 40 layers, 40 heads × 128, ffn 13,824, 720p × 81 → 21 × 45 × 80 = 75,600 tokens;
``--layers N`` builds only its first N blocks (every block is the same computation on the same
shapes), and the result also states the forward times scaled by 40 / N (speedups and attention
share are those of the blocks run):

* dense: the forward with cuDNN SDPA forced (``sdpa_kernel(CUDNN_ATTENTION)``);
* sparse: the same forward under ``apply(model, plan)``: every self-attention call runs the
  block-sparse kernel "auto" dispatch picks (hopper on H100/H200) by the plan; cross-attention stays cuDNN (forced as for dense);
* attention alone: the self-attention calls by themselves — cuDNN on one layer's real q/k/v
  (the [B, N, H, D]-strided views diffusers passes) once per layer, and the plan's layer plans
  through ``sparse_attention`` on the same q/k/v — giving the attention share of the dense forward
  and the Amdahl prediction dense / (dense − attention + sparse attention).

The plan: every layer mixes the four sparse families (diagonal, multi_diagonal, vertical_stripe,
energy_decay; 3 heads each, the assignment rotated per layer) with parameters from real block
masks at the target density (``attnsearch.bench.family_params``), layer targets cycling through
0.75, 1.0, 1.25 × the target; one plan per ``--density`` target (default 0.15 0.2 0.25: the
15–25% band), all against the same dense measurements. Block size 128. ``--precision native fp8``
runs each plan twice: as built, and with every computed head's kept blocks in FP8
(``Plan.with_precision``; the quantization pass inside each call is timed with it).

Timing: CUDA events around each call, ``--warmup`` calls first (Triton tuning/compilation
included there), median of ``--reps``; dense is timed again after sparse to show drift. Writes
result.json, figure.png and README.md into ``--out`` and prints the markdown line last.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from attnsearch.bench.forward import LAYER_SCALES, ForwardTimer, forced_cudnn, mixed_forward_plan, rel_l2
from attnsearch.bench.output import write_outputs
from attnsearch.profiling.capture import capture_attention
from attnsearch.models.diffusers import denoising_inputs, instrument, random_transformer
from attnsearch.models.diffusers.wan import FAMILY as WAN
from attnsearch.models.diffusers import VideoSize
from attnsearch.patterns import SPARSE_FAMILIES
from attnsearch.runtime import apply, select_backend, sparse_attention

def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "reports/wan_e2e")))
    ap.add_argument("--tiny", action="store_true", help="CPU dry run: tiny Wan, 17 × 96 × 160, float32, torch backend")
    ap.add_argument("--density", type=float, nargs="+", default=[0.15, 0.2, 0.25],
                    help="target attention densities: one plan (and one sparse run) each")
    ap.add_argument("--model", choices=sorted(WAN.presets), default="wan2.1-1.3b",
                    help="Wan preset (random weights); its video size and text length are the defaults")
    ap.add_argument("--layers", type=int, default=None,
                    help="run this many of the preset's transformer blocks (a model too large for the card); "
                         "the result also states the times scaled to every block")
    ap.add_argument("--precision", nargs="+", choices=["native", "fp8"], default=["native"],
                    help="kept-block precisions: one sparse run per density and precision")
    ap.add_argument("--num-frames", type=int, default=None)
    ap.add_argument("--height", type=int, default=None)
    ap.add_argument("--width", type=int, default=None)
    ap.add_argument("--text-tokens", type=int, default=None)
    ap.add_argument("--block-size", type=int, default=128)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--reps", type=int, default=10)
    args = ap.parse_args()
    t_start = time.time()
    cuda = torch.cuda.is_available() and not args.tiny
    if not cuda and not args.tiny:
        raise SystemExit("wan_e2e: no CUDA device (use --tiny for a CPU dry run)")
    device, dtype = ("cuda", torch.bfloat16) if cuda else ("cpu", torch.float32)
    backend = "auto" if cuda else "torch"  # auto: what users get (hopper on H100/H200, else triton)
    config, preset_size, preset_text = WAN.presets[args.model]
    full_layers = (WAN.tiny if args.tiny else config)["num_layers"]
    if args.layers is not None and not 1 <= args.layers <= full_layers:
        raise SystemExit(f"--layers: the model has {full_layers} blocks, got {args.layers}")
    size = VideoSize(17, 96, 160) if args.tiny else VideoSize(args.num_frames or preset_size.num_frames,
                                                                args.height or preset_size.height,
                                                                args.width or preset_size.width)
    text_tokens = 7 if args.tiny else (args.text_tokens or preset_text)
    block_size = 64 if args.tiny else args.block_size

    import diffusers
    import triton

    env = {"card": torch.cuda.get_device_name() if cuda else "cpu", "torch": torch.__version__,
           "triton": triton.__version__, "diffusers": diffusers.__version__, "dtype": str(dtype)[6:],
           "backend": backend, "tiny": args.tiny}
    print(env, flush=True)

    # --- model and input ---------------------------------------------------------------------------
    overrides = dict(WAN.tiny) if args.tiny else {}
    if args.layers is not None:
        overrides["num_layers"] = args.layers
    model = random_transformer(args.model, overrides or None, dtype=dtype, device=device)
    cfg = model.config
    latent = WAN.latent_size(cfg, size)
    kw = denoising_inputs(model, latent=latent, text_tokens=text_tokens, steps=1, batch=1)[0]
    geometry = WAN.geometry(model, kw)
    num_layers, num_heads = instrument(model).num_layers, cfg.num_attention_heads
    print(f"model: {num_layers} layers × {num_heads} heads × {cfg.attention_head_dim}, ffn {cfg.ffn_dim}; "
          f"latent {tuple(kw['hidden_states'].shape)} → geometry {geometry}  ({time.time() - t_start:.0f}s)", flush=True)

    timer = ForwardTimer(cuda, args.warmup, args.reps)
    force = {"cudnn": cuda}

    def dense_forward():
        with torch.no_grad(), forced_cudnn(force["cudnn"]):
            return model(**kw)[0]

    # --- dense: end to end, and the self-attention alone ---------------------------------------------
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    try:
        dense_out = dense_forward()
    except RuntimeError as err:  # cuDNN refusing a call: fall back to torch's own choice, and say so
        if not force["cudnn"]:
            raise
        print(f"cuDNN SDPA refused a call ({str(err).splitlines()[0][:200]}); using torch's default SDPA backend",
              flush=True)
        force["cudnn"] = False
        dense_out = dense_forward()
    env["dense_sdpa_backend"] = "cudnn (forced)" if force["cudnn"] else ("default" if cuda else "cpu")
    dense_peak = torch.cuda.max_memory_allocated() / 2**30 if cuda else None
    t_dense = timer(dense_forward)
    print(f"dense forward  {t_dense['median']:.1f} ms  ({time.time() - t_start:.0f}s)", flush=True)

    qkv = {}

    def grab(call):  # layer 0's real q, k, v: [B, N, H, D]-strided views, as diffusers passes them
        if call.layer == 0 and not qkv:
            qkv.update(q=call.query.clone(), k=call.key.clone(), v=call.value.clone(), kwargs=dict(call.kwargs))

    with torch.no_grad(), capture_attention(model, grab):
        model(**kw)
    q, k, v = qkv["q"], qkv["k"], qkv["v"]
    scale = qkv["kwargs"].get("scale")

    def dense_attention():
        with forced_cudnn(force["cudnn"]):
            for _ in range(num_layers):
                F.scaled_dot_product_attention(q, k, v, scale=scale)

    t_attn_dense = timer(dense_attention)
    n, d = geometry.num_tokens, cfg.attention_head_dim
    flops_dense = 4.0 * num_heads * n * n * d * num_layers
    print(f"dense attention, {num_layers} layers: {t_attn_dense['median']:.1f} ms  ({time.time() - t_start:.0f}s)",
          flush=True)

    # --- sparse, per target density -------------------------------------------------------------------
    def sparse_run(plan, precision, target) -> dict:
        """One plan under ``apply``: the forward end to end, and its self-attention calls alone on
        layer 0's q/k/v."""
        densities = [lp.density for lp in plan.schedule[0].layers]
        density = sum(densities) / len(densities)
        print(f"plan: target {target}, {precision}, mean density {density:.3f} "
              f"(layers {min(densities):.3f}–{max(densities):.3f}), B={plan.block_size}  "
              f"({time.time() - t_start:.0f}s)", flush=True)
        ap_ctx = apply(model, plan, auto_step=False, backend=backend)

        def sparse_forward():
            ap_ctx.set_step(0)
            with torch.no_grad(), forced_cudnn(force["cudnn"]):
                return model(**kw)[0]

        with ap_ctx:
            sparse_out = sparse_forward()  # first call: Triton tuning and compilation
            stats_one = dict(ap_ctx.stats, fallbacks=dict(ap_ctx.stats["fallbacks"]))
            rejected = ap_ctx._capture.rejected  # cross-attention calls of that forward, passed through
            if cuda:
                torch.cuda.reset_peak_memory_stats()
            t_sparse = timer(sparse_forward)
            sparse_peak = torch.cuda.max_memory_allocated() / 2**30 if cuda else None

        def sparse_attention_all(layer_plans=plan.schedule[0].layers):
            for lp in layer_plans:
                sparse_attention(q, k, v, lp, backend=backend, scale=scale)

        t_attn_sparse = timer(sparse_attention_all)
        run = {
            "target_density": target, "precision": precision, "density": density, "layer_densities": densities,
            "apply_stats_one_forward": stats_one, "cross_attention_calls_passed_through_per_forward": rejected,
            "sparse_forward_ms": t_sparse, "attention_sparse_ms": t_attn_sparse, "sparse_peak_gib": sparse_peak,
            "sparse_backend": select_backend(q, k, v, plan.schedule[0].layers[0], backend).name,
            "sparse_attention_tflops_on_kept_blocks": flops_dense * density / t_attn_sparse["median"] / 1e9,
            "output_rel_l2_sparse_vs_dense": rel_l2(sparse_out, dense_out),
            "outputs_finite": bool(torch.isfinite(dense_out).all() and torch.isfinite(sparse_out).all()),
        }
        print(f"sparse forward {t_sparse['median']:.1f} ms, attention alone {t_attn_sparse['median']:.1f} ms; "
              f"apply stats of one forward {stats_one}  ({time.time() - t_start:.0f}s)", flush=True)
        return run

    runs = []
    for target in args.density:
        base_plan = mixed_forward_plan(geometry, num_layers, num_heads, block_size, target,
                                       model={"name": f"diffusers-random:{args.model}"},
                                       search={"benchmark": "wan_e2e", "target_density": target,
                                               "layer_scales": list(LAYER_SCALES)})
        for precision in args.precision:
            plan = base_plan if precision == "native" else base_plan.with_precision(precision)
            runs.append(sparse_run(plan, precision, target))

    t_dense2 = timer(dense_forward)  # again, after the sparse runs: drift check
    print(f"dense forward again {t_dense2['median']:.1f} ms  ({time.time() - t_start:.0f}s)", flush=True)

    # --- report -------------------------------------------------------------------------------------
    dense_ms = statistics.median([t_dense["median"], t_dense2["median"]])
    attn_ms = t_attn_dense["median"]
    share = attn_ms / dense_ms
    for r in runs:
        sp = r["sparse_forward_ms"]["median"]
        r["e2e_speedup"] = dense_ms / sp
        r["attention_speedup"] = attn_ms / r["attention_sparse_ms"]["median"]
        r["amdahl_predicted_e2e_speedup"] = dense_ms / (dense_ms - attn_ms + r["attention_sparse_ms"]["median"])
    result = {
        "env": env,
        "config": {k: (list(v) if isinstance(v, tuple) else v) for k, v in cfg.items() if not k.startswith("_")},
        "video": vars(size), "latent": list(kw["hidden_states"].shape), "geometry": geometry.to_dict(),
        "tokens": n, "text_tokens_cross_attention": text_tokens, "block_size": block_size,
        "families": list(SPARSE_FAMILIES), "layer_scales": list(LAYER_SCALES),
        "dense_forward_ms": t_dense, "dense_forward_again_ms": t_dense2, "dense_forward_median_ms": dense_ms,
        "dense_peak_gib": dense_peak, "attention_dense_ms": t_attn_dense,
        "attention_share_of_dense_forward": share, "dense_attention_tflops": flops_dense / attn_ms / 1e9,
        "runs": runs, "wall_s": time.time() - t_start,
        "layers": {"run": num_layers, "model": full_layers, "time_scale": full_layers / num_layers},
    }
    if num_layers != full_layers:  # every block is one more identical block: times scale with their count
        result["dense_forward_scaled_ms"] = dense_ms * full_layers / num_layers
        for r in runs:
            r["sparse_forward_scaled_ms"] = r["sparse_forward_ms"]["median"] * full_layers / num_layers
    if cuda:
        from attnsearch.runtime.triton.launch import tuned_configs

        result["triton_configs"] = tuned_configs()
    name = "tiny Wan" if args.tiny else f"Wan{args.model[3:].upper()}"
    blocks = f"{num_layers} of {full_layers} blocks" if num_layers != full_layers else f"{num_layers} blocks"
    header = ("| card | model, tokens, dtype | dense forward | dense attention (share) | plan density | precision | "
              "sparse forward | e2e speedup | Amdahl | attention speedup |\n|---|---|---|---|---|---|---|---|---|---|\n")
    lines = [f"| {env['card']} | {name} transformer ({blocks}), {geometry.frames}×{geometry.height}×{geometry.width} = "
             f"{n} tok, {env['dtype']} | {dense_ms:.1f} ms ({env['dense_sdpa_backend']}) | {attn_ms:.1f} ms "
             f"({100 * share:.0f}%) | {r['density']:.3f} | {r['precision']} | {r['sparse_forward_ms']['median']:.1f} ms | "
             f"**×{r['e2e_speedup']:.2f}** | ×{r['amdahl_predicted_e2e_speedup']:.2f} | ×{r['attention_speedup']:.2f} |"
             for r in runs]
    write_outputs(args.out, f"End-to-end {name} forward", json.loads(json.dumps(result, default=str)),
                  lambda fig: _figure(fig, runs), header + "\n".join(lines))
    print(json.dumps([{k: r[k] for k in ("density", "precision", "e2e_speedup", "amdahl_predicted_e2e_speedup", "attention_speedup",
                                         "output_rel_l2_sparse_vs_dense", "outputs_finite")} for r in runs], indent=1))
    print(header + "\n".join(lines), flush=True)
    if not all(math.isfinite(r["e2e_speedup"]) for r in runs):
        raise SystemExit(1)


def _figure(fig, runs) -> None:
    ax = fig.add_subplot()
    for precision, colour in (("native", "C0"), ("fp8", "C3")):
        mine = [r for r in runs if r["precision"] == precision]
        if not mine:
            continue
        dens = [r["density"] for r in mine]
        ax.plot(dens, [r["e2e_speedup"] for r in mine], "o-", color=colour, label=f"{precision}: end to end, measured")
        ax.plot(dens, [r["amdahl_predicted_e2e_speedup"] for r in mine], "s--", color=colour, alpha=0.6,
                label=f"{precision}: Amdahl from attention alone")
        ax.plot(dens, [r["attention_speedup"] for r in mine], "^:", color=colour, alpha=0.6,
                label=f"{precision}: attention alone")
    ax.set_xlabel("plan density")
    ax.set_ylabel("speedup over dense cuDNN (×)")
    ax.legend()


if __name__ == "__main__":
    main()
