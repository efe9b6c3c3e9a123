"""Wan2.1 transformer forward under Ulysses context parallelism: K GPUs vs one, dense and sparse.

Device command (repo root, a machine with 2 GPUs; carry ``.whl`` as for ``benchmarks.wan_e2e``):

    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl && export PYTHONPATH=/tmp/site:$PWD && PYTHONUNBUFFERED=1 torchrun --nproc-per-node 2 -m benchmarks.wan_ulysses --out $OUT

CPU dry run (degree 1: one gloo process, tiny Wan, float32, torch backend):

    python -m benchmarks.wan_ulysses --dry-run --out /tmp/wan_ulysses

What it measures. Every rank builds the same model (``--preset``: the diffusers class at the
Wan2.1-1.3B configuration, 480p × 81, or the 14B one at 720p; random weights, bf16) and input.
First on its own GPU, the whole model: dense (cuDNN forced) and under each plan of ``--density``
(``bench.forward.mixed_forward_plan``), eager and compiled (``bench.forward.time_forward_modes``).
Then, with K = world size > 1, the model switched to diffusers' ``ContextParallelConfig(
ulysses_degree=K)``: the same runs, ``apply`` taking each rank's heads from the config. Reported:
each forward's median ms (rank 0's timer; every rank runs the same work in lockstep), the K-GPU
output against the one-GPU output of the same plan (relative L2: equal within bf16 rounding, the
ranks' kernels seeing other strides), sparse over dense speedups, and each plan's per-rank
kept-block balance (max / mean, ``runtime.parallel.kept_blocks_per_rank``). Rank 0 writes
result.json, figure.png and README.md into ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import torch
import torch.distributed as dist

from attnsearch.bench.forward import LAYER_SCALES, ForwardTimer, mixed_forward_plan, rel_l2, time_forward_modes
from attnsearch.bench.output import write_outputs
from attnsearch.models.diffusers import VideoSize, denoising_inputs, instrument, random_transformer
from attnsearch.models.diffusers.wan import FAMILY as WAN
from attnsearch.runtime.parallel import kept_blocks_per_rank

PRESETS = {"wan2.1-1.3b": VideoSize(81, 480, 832), "wan2.1-14b": VideoSize(81, 720, 1280)}


def _init(dry_run: bool) -> tuple[int, int]:
    """(rank, world size) of a process group (torchrun's, or a group of one)."""
    if "RANK" not in os.environ:
        os.environ.update(RANK="0", WORLD_SIZE="1", MASTER_ADDR="127.0.0.1", MASTER_PORT=os.environ.get(
            "MASTER_PORT", "29533"))
    dist.init_process_group("gloo" if dry_run else "nccl")
    rank = dist.get_rank()
    if not dry_run:
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", rank)))
    return rank, dist.get_world_size()


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "reports/wan_ulysses")))
    ap.add_argument("--dry-run", action="store_true", help="CPU, gloo: tiny Wan, 17 × 128 × 128, float32")
    ap.add_argument("--preset", choices=sorted(PRESETS), default="wan2.1-1.3b")
    ap.add_argument("--density", type=float, nargs="+", default=[0.15, 0.2, 0.25])
    ap.add_argument("--modes", nargs="+", default=["eager", "compile"], choices=["eager", "compile"])
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--reps", type=int, default=10)
    args = ap.parse_args(argv)
    t_start = time.time()
    if not args.dry_run and not torch.cuda.is_available():
        raise SystemExit("wan_ulysses: no CUDA device (use --dry-run for a CPU dry run)")
    rank, world = _init(args.dry_run)
    try:
        _run(args, rank, world, t_start)
    finally:
        dist.destroy_process_group()


def _run(args, rank: int, world: int, t_start: float) -> None:
    cuda = not args.dry_run
    device, dtype = ("cuda", torch.bfloat16) if cuda else ("cpu", torch.float32)
    backend, block_size = ("auto", 128) if cuda else ("torch", 64)
    size = VideoSize(17, 128, 128) if args.dry_run else PRESETS[args.preset]
    timer = ForwardTimer(cuda, 1 if args.dry_run else args.warmup, 1 if args.dry_run else args.reps)
    say = (lambda *a: print(*a, flush=True)) if rank == 0 else (lambda *a: None)  # noqa: E731

    model = random_transformer(args.preset, WAN.tiny if args.dry_run else None, dtype=dtype, device=device)
    kw = denoising_inputs(model, latent=WAN.latent_size(model.config, size), text_tokens=7 if args.dry_run else 512,
                          steps=1)[0]
    geometry = WAN.geometry(model, kw)
    layers, heads = instrument(model).num_layers, model.config.num_attention_heads
    cards = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] if cuda else ["cpu"]
    env = {"cards": cards, "world_size": world, "torch": torch.__version__, "dtype": str(dtype)[6:],
           "backend": backend, "dry_run": args.dry_run, "preset": args.preset}
    say(env, f"geometry {geometry}")
    plans = {t: mixed_forward_plan(geometry, layers, heads, block_size, t, model={"name": f"diffusers-random:{args.preset}"},
                                   search={"benchmark": "wan_ulysses", "target_density": t,
                                           "layer_scales": list(LAYER_SCALES)}) for t in args.density}
    degrees = [1] + ([world] if world > 1 else [])
    runs: dict[int, dict] = {}
    for degree in degrees:
        if degree > 1:
            from diffusers import ContextParallelConfig

            model.enable_parallelism(config=ContextParallelConfig(ulysses_degree=degree))
        say(f"degree {degree}: dense")
        runs[degree] = {"dense": time_forward_modes(model, kw, timer, args.modes, cudnn=cuda)}
        for t, plan in plans.items():
            say(f"degree {degree}: sparse, density {plan.mean_density:.3f}")
            runs[degree][t] = time_forward_modes(model, kw, timer, args.modes, cudnn=cuda, plan=plan, backend=backend)
            torch._dynamo.reset()
    if rank != 0:
        return
    rows = []
    for degree in degrees:
        for key in ["dense", *plans]:
            for mode in args.modes:
                r = runs[degree][key][mode]
                one = runs[1][key][mode]
                dense = runs[degree]["dense"][mode]
                row = {"degree": degree, "attention": "dense" if key == "dense" else "sparse", "mode": mode,
                       "density": None if key == "dense" else plans[key].mean_density}
                if "error" in r:
                    rows.append({**row, "error": r["error"]})
                    continue
                row.update(ms=r["ms"]["median"], timing=r["ms"], finite=bool(torch.isfinite(r["out"]).all()))
                if degree > 1 and "out" in one:
                    row["rel_l2_vs_one_gpu"] = rel_l2(r["out"], one["out"])
                if key != "dense" and "ms" in dense:
                    row["speedup_over_dense"] = dense["ms"]["median"] / r["ms"]["median"]
                    per = kept_blocks_per_rank(plans[key], degree)
                    row["kept_blocks_per_rank"] = per.tolist()
                    row["rank_balance_max_over_mean"] = float(per.max() / per.mean())
                rows.append(row)
    result = {"env": env, "video": vars(size), "geometry": geometry.to_dict(), "block_size": block_size,
              "rows": rows, "wall_s": time.time() - t_start}
    header = ("| cards | GPUs | attention | density | mode | forward | speedup | balance | vs 1 GPU |\n"
              "|---|---|---|---|---|---|---|---|---|\n")
    lines = [f"| {cards[0]} | {r['degree']} | {r['attention']} | {_density(r)} | {r['mode']} | "
             + (f"{r['ms']:.1f} ms | {r.get('speedup_over_dense', 1.0):.2f}× | "
                f"{r.get('rank_balance_max_over_mean', 1.0):.3f} | {r.get('rel_l2_vs_one_gpu', 0.0):.2e} |"
                if "ms" in r else "failed | | | |") for r in rows]
    write_outputs(args.out, "Wan2.1 forward under Ulysses context parallelism", json.loads(json.dumps(result)),
                  lambda fig: _figure(fig, rows), header + "\n".join(lines))
    say(header + "\n".join(lines))


def _density(row: dict) -> str:
    return "1" if row["density"] is None else f"{row['density']:.3f}"


def _figure(fig, rows) -> None:
    ax = fig.add_subplot()
    for (degree, mode) in sorted({(r["degree"], r["mode"]) for r in rows}):
        pts = [(r["density"] or 1.0, r["ms"]) for r in rows if (r["degree"], r["mode"]) == (degree, mode) and "ms" in r]
        ax.plot(*zip(*sorted(pts)), "o-", label=f"{degree} GPU(s), {mode}")
    ax.set_xlabel("plan density (1 = dense)")
    ax.set_ylabel("forward (ms)")
    ax.legend()


if __name__ == "__main__":
    main()
