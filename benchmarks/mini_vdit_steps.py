"""Which denoising steps' attention errors move mini-vdit's videos: one global mask run on a window of
steps only (dense elsewhere), videos against dense generations from identical held-out noise.

    python -m benchmarks.mini_vdit_steps --out reports/mini_vdit_steps [--seeds 16] [--device cuda]

For each mask (``--masks``: the global-mask baselines of ``attnsearch.evaluate``) at each density
(``--densities``), two sweeps over the 20 sampling steps: the mask from step k to the end (dense
before: k dense warm-up steps) and the mask on the first k steps only (dense after). Each window's
plan states its mean density over steps (a dense step counting 1). Writes ``result.json`` (every
run's PSNR / SSIM, its window and density) and ``figure.png`` (PSNR against k, both sweeps).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from attnsearch.atomic_io import write_text_atomic
from attnsearch.bench.output import environment
from attnsearch.evaluate import baseline_plan, evaluate, load_generator
from attnsearch.plan import Plan, ScheduleEntry
from attnsearch.report.style import save_figure

MASKS = ("energy_decay", "window")
DENSITIES = (0.1, 0.3)
SPLITS = (0, 1, 2, 4, 6, 8, 12, 16)


def windowed(plan: Plan, start: int, stop: int) -> Plan:
    """``plan`` (one schedule entry for every step) run on steps [start, stop) only, dense elsewhere."""
    (entry,) = plan.schedule
    entries = [ScheduleEntry(a, b, layers) for a, b, layers in
               ((0, start, None), (start, stop, entry.layers), (stop, plan.num_steps, None)) if b > a]
    return Plan(plan.geometry, plan.block_size, plan.num_steps, plan.num_layers, plan.num_heads, tuple(entries),
                model=dict(plan.model), search={"window": [start, stop], **plan.search})


def figure(rows: list[dict], steps: int, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    for ax, sweep, title in ((axes[0], "from", "mask on steps [k, end): k dense warm-up steps"),
                             (axes[1], "until", "mask on steps [0, k) only, dense after")):
        for key in dict.fromkeys((r["mask"], r["mask_density"]) for r in rows):
            pts = sorted((r["k"], r["psnr_db"]) for r in rows if r["sweep"] == sweep and (r["mask"], r["mask_density"]) == key)
            ax.plot([k for k, _ in pts], [min(v, 60.0) for _, v in pts], marker="o", label=f"{key[0]} @ {key[1]:.2f}")
        ax.set_xlabel("k (sampling step)")
        ax.set_title(title, fontsize=10)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("PSNR against dense (dB, 16 held-out videos)")
    axes[0].axhline(30, color="grey", lw=0.8, ls="--")
    axes[1].axhline(30, color="grey", lw=0.8, ls="--")
    axes[1].legend(fontsize=8)
    fig.suptitle(f"mini-vdit, {steps} Euler steps: where along the trajectory a mask's error matters")
    save_figure(fig, path)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks.mini_vdit_steps", description=__doc__.split("\n")[0])
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--seeds", type=int, default=16, help="held-out videos per run")
    p.add_argument("--steps", type=int, default=20, help="sampling steps")
    p.add_argument("--masks", nargs="+", default=list(MASKS), choices=MASKS)
    p.add_argument("--densities", type=float, nargs="+", default=list(DENSITIES))
    p.add_argument("--splits", type=int, nargs="+", default=list(SPLITS), help="the k of both sweeps")
    p.add_argument("--size", type=int, nargs=3, default=[16, 64, 64], metavar=("FRAMES", "HEIGHT", "WIDTH"))
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = p.parse_args(argv)
    started = time.time()
    f, h, w = args.size
    generator = load_generator("mini-vdit", device=args.device, frames=f, height=h, width=w)
    geometry = generator.geometry()
    cfg = generator.transformer.config
    template = Plan.dense(geometry, args.steps, cfg.depth, cfg.heads,
                          block_size=64)
    plans, meta = [], []
    for mask in args.masks:
        for d in args.densities:
            full, info = baseline_plan(mask, template, d)
            for sweep, ks in (("from", [k for k in args.splits if 0 <= k < args.steps]),
                              ("until", [k for k in args.splits if 0 < k < args.steps])):
                for k in ks:
                    plans.append(windowed(full, k, args.steps) if sweep == "from" else windowed(full, 0, k))
                    meta.append({"mask": mask, "mask_density": info["density"], "params": info["params"],
                                 "sweep": sweep, "k": k})
    labels = [f"{m['mask']} @ {m['mask_density']:.2f} {m['sweep']} {m['k']}" for m in meta]
    result = evaluate(plans, generator, seeds=args.seeds, labels=labels,
                      progress=lambda d: print(f"  video {d['done']}/{d['total']}", flush=True)
                      if d["done"] % 50 == 0 else None)
    rows = []
    for m, run in zip(meta, result.runs, strict=True):
        o = run.overall
        rows.append({**m, "density": run.density, "psnr_db": o["psnr_db"], "ssim": o["ssim"],
                     "psnr_db_min": o["psnr_db_min"]})
        print(f"{m['mask']:>12} @ {m['mask_density']:.2f} {m['sweep']:>5} {m['k']:>2}: density {run.density:.3f} "
              f"PSNR {o['psnr_db']:.1f} dB SSIM {o['ssim']:.3f}", flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    figure(rows, args.steps, args.out / "figure.png")
    data = {"benchmark": {**environment(), "device": args.device, "seconds": round(time.time() - started, 1),
                          "seeds": result.seeds, "steps": args.steps, "size": args.size},
            "rows": rows}
    write_text_atomic(args.out / "result.json", json.dumps(data, indent=1, allow_nan=False) + "\n")
    print(f"wrote {args.out} in {time.time() - started:.0f} s")


if __name__ == "__main__":
    main()
