"""Kernel variants (``KernelConfig``s) of the block-sparse kernel against the tuned default, on CUDA.

    PYTHONUNBUFFERED=1 python benchmarks/kernel_variants_gpu.py --out $OUT [--reps 10] [--only base,lazy8,base-again]
        [--against _hopper_base[,...]] [--rounds 7 --shapes 12:0.1,24:0.1:64] [--timing sustained]

1. Correctness (bf16, batch 2, every pattern incl. skip, N % B ≠ 0, [B, N, H, D].transpose(1, 2)
   inputs, NaN-poisoned output): every variant vs fp32 SDPA on the token-expanded block mask,
   rel err ≤ 1e-2, skip heads exactly zero, every element written.
2. Timing: mixed-family layers (``mixed_layer_plan``) at the shapes of ``SHAPES``: the default
   config, the variants, the default again (spread); TFLOP/s on kept blocks and speedup vs cuDNN
   dense (same inputs).
History: this script was ``benchmarks/persistent_gpu.py`` for the persistent-grid runs
(reports/kernel/persistent_gpu_h100_run{1,2}.*; their "pers1-dyn" is "pers1" here; the static-stride
and ``tl.range(flatten=True)`` variants of run 1 were removed after it).
Writes kernel_variants_gpu.json under --out after every section; prints a table last.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
import triton

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from attnsearch import Geometry  # noqa: E402
from attnsearch.patterns import SPARSE_FAMILIES  # noqa: E402
from attnsearch.bench import (  # noqa: E402
    TIMING_MODES, card_name, cudnn_sdpa, flops, fresh_inputs, mixed_layer_plan, time_ms)
from attnsearch.runtime import triton_kernel  # noqa: E402
from attnsearch.runtime.block_tables import build_block_tables, get_block_tables  # noqa: E402
from attnsearch.runtime.triton_kernel import KernelConfig  # noqa: E402
from runtime_gpu import all_patterns, reference, rel  # noqa: E402

VARIANTS = {
    # Earlier runs (reports/kernel/kernel_variants_gpu_h100_run{1,2,3}.*, notes in kernel-notes.md)
    # also had: conditional rescaling ("lazy8", 4-9% slower), persistent grids over 64-row tiles,
    # the "lpt" order, 64×64 tiles with 1-2 stages, register caps (Triton's maxnreg) fitting a 4th
    # program per SM, 64-row tiles with 2 stages, 128-row tiles with 1 stage: none beat m64s1.
    # 64-row tiles, one warpgroup, no K/V double buffer: 168 registers and 50 KB of shared memory
    # (sm_90a compile, D 128) let 3 programs share an SM, so one's softmax runs beside another's
    # wgmma (Triton 3.6 waits on every QK wgmma before the softmax within one program).
    "m64s1": (KernelConfig(64, 128, 4, 1, True), "head"),
    # Gluon kernel (benchmarks/gluon_kernel.py): next block's QK wgmma in flight during the
    # softmax, TMA rings for K and V; (block_m, warps, K slots, V slots). Run 4 had the in-flight PV
    # carried across the loop edge, which ptxas answered by serialising every wgmma (C7514):
    # 242-436 TFLOP/s. Now both retire at the end of each iteration.
    # Run 5: (64, 4, 2, 1) with 128-key tiles: 255 registers, 112 KB → 2 programs per SM, within
    # -5..+1% of m64s1. 64-key tiles fit 3 programs per SM with the K prefetch ring (sm_90a compile:
    # 168 registers, 64 KB at D 128; 144 registers, 32 KB at D 64); last field: key tile.
    "gluon-64-4-2-1-n64": ((64, 4, 2, 1, 64), "head"),
    "gluon-64-4-2-2-n64": ((64, 4, 2, 2, 64), "head"),  # D 128: 163 registers, 80 KB → 2 per SM
    "m64n64s1": (KernelConfig(64, 64, 4, 1, True), "head"),  # the same tile in the Triton kernel
    # Run 36 (head_dim 64): KernelConfig(64, 64, 4, 2, True) and (64, 128, 4, 2, True), more programs
    # per SM or a second stage, were no faster than m64s1 (380-443 vs 428-451).
    # Warp-specialised Gluon kernel (now attnsearch/runtime/hopper_kernel.py, FlashAttention-3's schedule): a
    # producer warp, two 64-row consumer warpgroups at 240 registers taking turns on the tensor
    # cores; ("ws", K/V ring depth, persistent, Q buffers). sm_90a compile: no C7514, 160 KB with
    # one Q buffer, 192 KB with two. Run 7 (H100, one program per tile, one Q buffer): 546-607
    # TFLOP/s at D 128; 3 K/V slots 1-10% below 2.
    "ws2-grid": (("ws", 2, False, 1, False), "head"),
    # Persistent: one program per SM runs its share of the tiles; the producer loads the next
    # tile's K/V (and with two Q buffers its Q) while the consumers finish this one. Run 9 (H100,
    # static stride p, p + 132, ...): 538-633 with two Q buffers, 488-630 with one. Now the share is
    # list-scheduled on the host by kept blocks (max/mean load 1.07 → 1.02 at 10%, 12 heads).
    "ws2-tiles": (("ws", 2, True, 2, False), "head"),
    # One pipeline over all of a program's kept blocks: a tile's last PV product goes out with the
    # next tile's first QK product, its rows are stored by TMA while the other consumer computes.
    "ws2-flat": (("ws", 2, True, 2, True), "head"),  # "ws2" in runs 12-16
    # What the hopper backend runs (hopper_kernel.prefers_flat): flat at head_dim 128, and at 64 below
    # FLAT_BELOW_KEPT kept blocks per query block on average.
    "ws2-auto": (("ws", 2, True, 2, None), "head"),
    # Run 34: 3- and 4-stage K/V rings (("ws", 3 or 4, True, 2, flat), shared memory fits them at
    # head_dim 64 only): 422-466 vs 441-450 for two stages, not kept.
    "m64s1-again": (KernelConfig(64, 128, 4, 1, True), "head"),
    # Runs 17-22 timed the committed kernel against a change to it, from a copy of the committed
    # file beside it (runs 20, 22: ``--against _hopper_base``; the copy is not kept), and both again
    # (kernel-notes.md, variants 17-22): tree row reductions, P packed to bf16 by integer add +
    # prmt, the flat schedule's Q release as a branch, one reciprocal per output row (none faster
    # beyond the run-to-run spread); half the exp2 on the FMA pipe (10-20% slower).
    # Run 33: S one block ahead of the softmax (reports/kernel/probe/s_ahead.patch; build it with
    # ``patch -o attnsearch/runtime/_hopper_ahead.py ...`` and time ("ws", 2, True, 2, False,
    # "_hopper_ahead", True)): 14-16% slower than the tile schedule at D 64 and at D 128.
    # Session 7, ``--against _hopper_base`` or the patched build: run 38, exponentials ahead of the
    # row max (probe/exp_ahead.patch), 4-5% slower; run 39, a third consumer redoing half 0
    # (probe/three_consumers.patch, ``--against _hopper_three``), the same work per second; run 40,
    # Q in registers at D 64 (now hopper_kernel.q_in_registers), +1-5%.
    # Session 8, runs 41-43 (``--against _hopper_base``, run 42 with ``--timing sustained``): the flat
    # schedule rebuilt on the tile schedule's turn loop (variant 34, now "ws2-flat"), +1-3% over
    # the old flat and up to +6% over tiles at D 128, +2% at D 64 10%.
}


def run_variant(cfg, q, k, v, tables, scale, out):
    """A KernelConfig runs the Triton kernel; a (block_m, warps, stages) tuple the Gluon kernel."""
    if isinstance(cfg, KernelConfig):
        return triton_kernel.forward(q, k, v, tables, scale, out=out, config=cfg)
    if cfg[0] == "ws":
        import importlib

        # ("ws", stages, persistent, q_bufs, flat[, module[, s_ahead]]): module names another build of
        # the kernel under attnsearch/runtime (an A/B against the committed one).
        module = importlib.import_module(f"attnsearch.runtime.{cfg[5] if len(cfg) > 5 else 'hopper_kernel'}")
        ahead = {"s_ahead": cfg[6]} if len(cfg) > 6 else {}
        return module.forward(q, k, v, tables, scale, out=out, stages=cfg[1], persistent=cfg[2],
                              q_bufs=cfg[3], flat=cfg[4] if len(cfg) > 4 else False, **ahead)
    import gluon_kernel  # benchmarks/gluon_kernel.py: an experiment, not part of the package

    block_m, warps, k_stages, v_stages, block_n = cfg
    return gluon_kernel.forward(q, k, v, tables, scale, out=out, block_m=block_m, num_warps=warps,
                                k_stages=k_stages, v_stages=v_stages, block_n=block_n)


#: (target 1.0: every head dense, i.e. the kernel on an all-kept mask)
SHAPES = [(12, Geometry(21, 30, 52), t, 128) for t in (0.05, 0.1, 0.25, 0.5, 1.0)] + \
         [(40, Geometry(21, 60, 60), t, 128) for t in (0.1, 0.25, 0.5)] + \
         [(24, Geometry(21, 30, 52), t, 64) for t in (0.1, 0.25, 0.5)]


def against(variants: dict, modules: list[str]) -> dict:
    """The A/B order for ``--against``: each Gluon variant V, then "V@M" for each other build M (the
    same arguments), then all of them again, so that drift between the first and the last shows."""
    ab = {}
    for rnd in ("", "-again"):
        for name, (cfg, order) in variants.items():
            if isinstance(cfg, tuple) and cfg[0] == "ws" and not name.endswith("-again"):
                ab[name + rnd] = (cfg, order)
                for module in modules:
                    ab[f"{name}@{module}{rnd}"] = ((*cfg[:5], module, *cfg[6:]), order)
    return ab


def check(variants: dict, results: list) -> int:
    fails = 0
    for where, geom, bs, d in (("prefix", Geometry(7, 24, 30, 77, "prefix"), 128, 128),
                               ("suffix", Geometry(6, 20, 36, 51, "suffix"), 128, 128),
                               ("suffix", Geometry(6, 20, 36, 51, "suffix"), 128, 64)):
        lp = all_patterns(geom, bs)
        H, n = lp.num_heads, geom.num_tokens
        g = torch.Generator(device="cuda").manual_seed(n)
        q, k, v = (torch.randn(2, n, H, d, device="cuda", dtype=torch.bfloat16, generator=g).transpose(1, 2)
                   for _ in range(3))
        ref = reference(q, k, v, lp)
        for name, (cfg, order) in variants.items():
            tables = build_block_tables(lp, "cuda", order=order)
            out = torch.full((2, H, n, d), float("nan"), device="cuda", dtype=torch.bfloat16)
            try:
                run_variant(cfg, q, k, v, tables, d ** -0.5, out)
                torch.cuda.synchronize()
            except Exception as e:  # noqa: BLE001
                print(f"  {where} {name}: {type(e).__name__}: {str(e)[:300]}", flush=True)
                results.append({"case": where, "variant": name, "error": str(e)[:500]})
                fails += 1
                continue
            nan = bool(torch.isnan(out).any())
            err = rel(out, ref) if not nan else float("nan")
            ok = not nan and err <= 1e-2 and bool((out[:, 1] == 0).all())
            fails += not ok
            results.append({"case": where, "N": n, "D": d, "variant": name, "rel_err": err, "unwritten": nan, "ok": ok})
            print(f"  {where} N={n} D={d} {name:<11} rel_err {err:.2e} {'OK' if ok else 'FAIL'}", flush=True)
    return fails


def bench(variants: dict, rows: list, reps: int, dense: dict, t0: float, shapes=SHAPES,
          rounds: int = 1, timing: str = "queued") -> None:
    """Time every variant at every shape; with ``rounds`` > 1 the whole variant list again and again
    at each shape (interleaved, so drift hits all alike), one row per variant and round. ``timing``:
    ``time_ms``'s mode ("sustained": seconds of back-to-back calls per figure, at the card's
    power-capped clock)."""
    for H, geom, target, d in shapes:
        lp = mixed_layer_plan(geom, H, 128, target, ("dense",) if target >= 1 else SPARSE_FAMILIES)
        n = geom.num_tokens
        inputs = fresh_inputs((1, H, n, d), torch.bfloat16, 2)
        out = torch.empty(1, H, n, d, device="cuda", dtype=torch.bfloat16)
        if (H, n, d) not in dense:
            dense[H, n, d] = time_ms(lambda x: cudnn_sdpa(*x), inputs, 2, reps, mode=timing)["median"]
        cudnn = dense[H, n, d]
        fl = flops(1, H, n, d, lp.density)
        for rnd, (name, (cfg, order)) in ((r, kv) for r in range(rounds) for kv in variants.items()):
            tables = get_block_tables(lp, "cuda", order=order)

            def run(x, tables=tables, cfg=cfg, out=out, d=d):
                run_variant(cfg, *x, tables, d ** -0.5, out)

            try:
                run(inputs[0])
                ms = time_ms(run, inputs, 2, reps, mode=timing)["median"]
            except Exception as e:  # noqa: BLE001
                print(f"  {name}: {type(e).__name__}: {str(e)[:300]}", flush=True)
                rows.append({"H": H, "N": n, "variant": name, "error": str(e)[:500]})
                continue
            r = {"H": H, "N": n, "D": d, "target": target, "density": lp.density, "variant": name, "ms": ms,
                 "tflops": fl / ms / 1e9, "cudnn_ms": cudnn, "speedup_vs_cudnn": cudnn / ms,
                 "target_speedup": 0.8 / lp.density, "round": rnd, "timing": timing}
            rows.append(r)
            print(f"  H={H} N={n} D={d} d={lp.density:.3f} {name:<11} {ms:8.3f} ms {r['tflops']:4.0f} TFLOP/s "
                  f"x{r['speedup_vs_cudnn']:.2f} (target x{r['target_speedup']:.2f})  ({time.time() - t0:.0f}s)",
                  flush=True)


def round_summary(rows: list) -> str:
    """Per shape and variant over the rounds: median TFLOP/s and the range."""
    groups: dict = {}
    for r in rows:
        if "ms" in r:
            key = (r["H"], r["N"], r.get("D", 128), round(r["density"], 3), r["variant"])
            groups.setdefault(key, []).append(r["tflops"])
    lines = ["| H | N | D | density | variant | rounds | median TFLOP/s | min | max |",
             "|---|---|---|---|---|---|---|---|---|"]
    for (H, n, d, dens, name), v in groups.items():
        v = sorted(v)
        lines.append(f"| {H} | {n} | {d} | {dens:.3f} | {name} | {len(v)} | {v[len(v) // 2]:.0f} | {v[0]:.0f} "
                     f"| {v[-1]:.0f} |")
    return "\n".join(lines)


def table(rows: list) -> str:
    lines = ["| H | N | D | density | variant | ms | TFLOP/s | speedup vs cuDNN | target |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if "ms" in r:
            lines.append(f"| {r['H']} | {r['N']} | {r.get('D', 128)} | {r['density']:.3f} | {r['variant']} | {r['ms']:.3f} | "
                         f"{r['tflops']:.0f} | {r['speedup_vs_cudnn']:.2f}x | {r['target_speedup']:.2f}x |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, default=Path("reports/kernel"))
    ap.add_argument("--reps", type=int, default=10)
    ap.add_argument("--only", help="comma-separated variant names to run (default: all)")
    ap.add_argument("--against", metavar="MODULE[,MODULE...]",
                    help="A/B: also run each Gluon variant from attnsearch/runtime/MODULE.py (a copy of the committed "
                         "hopper_kernel.py beside a change to it, or several), and all of them again")
    ap.add_argument("--rounds", type=int, default=1,
                    help="time the variant list this many times per shape, interleaved (noisy short kernels)")
    ap.add_argument("--shapes", help="comma-separated H:density[:head_dim] of SHAPES to run (default: all)")
    ap.add_argument("--timing", choices=TIMING_MODES, default="queued", help="time_ms's mode (default: queued)")
    args = ap.parse_args()
    shapes = SHAPES
    if args.shapes:
        want = {tuple(float(x) for x in w.split(":")) for w in args.shapes.split(",")}
        shapes = [sh for sh in SHAPES if (sh[0], sh[2]) in want or (sh[0], sh[2], sh[3]) in want]
        if not shapes:
            raise SystemExit(f"--shapes {args.shapes!r} matches none of {[(sh[0], sh[2], sh[3]) for sh in SHAPES]}")
    args.out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    if args.only:
        keep = args.only.split(",")
        for name in list(VARIANTS):
            if name not in keep:
                del VARIANTS[name]
    if args.against:
        ab = against(VARIANTS, args.against.split(","))
        others = {k: v for k, v in VARIANTS.items() if not (isinstance(v[0], tuple) and v[0][0] == "ws")}
        VARIANTS.clear()
        VARIANTS.update({**others, **ab})
    env = {"card": card_name(), "torch": torch.__version__, "triton": triton.__version__,
           "sms": torch.cuda.get_device_properties(0).multi_processor_count}
    print(env, flush=True)
    rep: dict = {"env": env, "correctness": [], "bench": []}
    save = lambda: (args.out / "kernel_variants_gpu.json").write_text(json.dumps(rep, indent=1, default=str))  # noqa: E731
    print("== correctness", flush=True)
    rep["failures"] = check({k: v for k, v in VARIANTS.items() if not k.endswith("-again")}, rep["correctness"])
    save()
    print(f"== benchmark ({time.time() - t0:.0f}s)", flush=True)
    dense: dict = {}
    bench(VARIANTS, rep["bench"], args.reps, dense, t0, shapes, args.rounds, args.timing)
    save()
    md = f"# Kernel variants on {env['card']} ({args.timing} timing)\n\n{env}\n\n{table(rep['bench'])}\n"
    if args.rounds > 1:
        md += f"\n## Over {args.rounds} interleaved rounds\n\n{round_summary(rep['bench'])}\n"
    (args.out / "kernel_variants_gpu.md").write_text(md)
    print(md)
    print(f"failures {rep['failures']}  total {time.time() - t0:.0f}s")


if __name__ == "__main__":
    main()
