"""Plans at another geometry on mini-vdit: a plan searched at one clip size and retargeted
(``Plan.for_geometry``) against a plan searched directly at the target size, at the same density.

    python -m benchmarks.retarget_fidelity --out reports/retarget_fidelity [--source 8 32 32]
        [--target 16 32 32 --target 8 48 48] [--density 0.3] [--seeds 8] [--steps 8] [--device cuda]

For the source and every target size: profile mini-vdit along real denoising trajectories of
``--conditions`` training conditions, search (one study per size, ``--trials``). The source plan is
the lowest-error plan at mean density ≤ ``--density``; at each target it is retargeted, and the
direct plan is the target search's lowest-error plan at density ≤ the retargeted plan's, so the
direct plan never gets more compute. Both generate the same held-out videos (noise seeds from
10,000, conditions never trained on nor searched) against dense: PSNR, SSIM and the predicted
attention speedup at the target size; on CUDA each plan is also timed at the target size
(``bench_plan``: every layer plan against cuDNN dense, the model's batch and head_dim), so the
prediction stands beside a measurement. Writes ``result-FxHxW.json`` and ``figure-FxHxW.png`` (F × H × W:
the source size) into ``--out``, so runs from several source sizes share a folder.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from attnsearch.atomic_io import write_text_atomic
from attnsearch.bench.output import environment
from attnsearch.bench.plans import bench_plan
from attnsearch.evaluate import evaluate, load_generator
from attnsearch.models import load_model
from attnsearch.profiling import ProfileSettings, profile_model
from attnsearch.report.style import save_figure
from attnsearch.search import optimize

DEFAULT_TARGETS = ((16, 32, 32), (8, 48, 48))


def search(size, max_density: float, args, tmp: Path, tag: str):
    """Profile mini-vdit at ``size`` and return the lowest-error plan at density ≤ ``max_density``."""
    f, h, w = size
    spec = load_model("mini-vdit", conditions=args.conditions, steps=args.steps, frames=f, height=h, width=w,
                      device=args.device)
    prof = profile_model(spec, settings=ProfileSettings(block_size=64))
    prof.save(tmp / f"{tag}.parquet")
    res = optimize(tmp / f"{tag}.parquet", max_density=max_density, trials=args.trials,
                   storage=f"sqlite:///{tmp}/{tag}.db", out=tmp / f"{tag}.json",
                   model=spec if args.validate else None, validate=args.validate, validate_mode="trajectory")
    print(f"{tag} {f}×{h}×{w}: {res.reason}", flush=True)
    return res.plan


def _speedups(figures: dict) -> str:
    """'predicted 2.10×, measured 2.02×' (the measurement only where one was made)."""
    predicted = figures["predicted_speedup"]
    text = "no prediction" if predicted is None else f"predicted {predicted:.2f}×"
    return text + (f", measured {figures['measured_speedup']:.2f}×" if "measured_speedup" in figures else "")


def figure(rows: list[dict], source, path: Path) -> None:
    """PSNR against dense of the retargeted and the direct plan at every target, density on each bar."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.6))
    names = ["×".join(map(str, r["size"])) for r in rows]
    xs = range(len(rows))
    for k, (label, colour) in enumerate((("retargeted", "tab:orange"), ("direct", "tab:blue"))):
        vals = [r[label]["psnr_db"] for r in rows]
        bars = ax.bar([x + (k - 0.5) * 0.38 for x in xs], vals, 0.38, label=label, color=colour)
        for b, r in zip(bars, rows):
            ax.annotate(f"{r[label]['density']:.2f}", (b.get_x() + b.get_width() / 2, b.get_height()),
                        ha="center", va="bottom", fontsize=8)
    ax.set_xticks(list(xs), names)
    ax.set_ylim(0, 1.25 * max(r[k]["psnr_db"] for r in rows for k in ("retargeted", "direct")))
    ax.set_ylabel("PSNR vs dense (dB)")
    ax.set_xlabel(f"target clip size (source {'×'.join(map(str, source))}); labels: mean density")
    ax.legend(loc="upper center", ncols=2, fontsize=8, frameon=False)
    save_figure(fig, path, tight=True)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks.retarget_fidelity", description=__doc__.split("\n")[0])
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--source", type=int, nargs=3, default=[8, 32, 32], metavar=("FRAMES", "HEIGHT", "WIDTH"))
    p.add_argument("--target", type=int, nargs=3, action="append", metavar=("FRAMES", "HEIGHT", "WIDTH"),
                   help="a target clip size (repeat; default 2× the frames and 1.5× height and width)")
    p.add_argument("--density", type=float, default=0.3, help="mean kept-block density of the source plan")
    p.add_argument("--seeds", type=int, default=8, help="held-out videos per target")
    p.add_argument("--conditions", type=int, default=2, help="training conditions profiled")
    p.add_argument("--trials", type=int, default=40, help="search trials per size")
    p.add_argument("--validate", type=int, default=0, help="trajectories each trial is measured on (0: none)")
    p.add_argument("--steps", type=int, default=8, help="sampling steps")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = p.parse_args(argv)
    if not 0 < args.density <= 1:
        p.error("--density must be in (0, 1]")
    targets = [tuple(t) for t in args.target] if args.target else [
        (args.source[0] * 2, args.source[1], args.source[2]),
        (args.source[0], args.source[1] * 3 // 2, args.source[2] * 3 // 2)]
    started = time.time()
    args.out.mkdir(parents=True, exist_ok=True)
    rows = []
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        source = search(tuple(args.source), args.density, args, tmp, "source")
        for i, size in enumerate(targets):
            f, h, w = size
            generator = load_generator("mini-vdit", device=args.device, frames=f, height=h, width=w)
            moved = source.for_geometry(generator.geometry())
            direct = search(size, moved.mean_density, args, tmp, f"target{i}")
            result = evaluate([moved, direct], generator, seeds=args.seeds, labels=["retargeted", "direct"],
                              progress=lambda d: print(f"  video {d['done']}/{d['total']}: {d['label']}", flush=True))
            runs = {r.label: r for r in result.runs}
            row = {"size": list(size), "geometry": generator.geometry().to_dict()}
            for label, run in runs.items():
                o = run.overall
                row[label] = {"density": run.density, "psnr_db": o["psnr_db"], "ssim": o["ssim"],
                              "predicted_speedup": run.predicted.get("speedup")}
                if args.device == "cuda":
                    if run.predicted.get("speedup") is None:
                        raise SystemExit(f"{label} plan at {f}×{h}×{w}: nothing to measure against ({run.predicted['reason']})")
                    timed = bench_plan(run.plan, head_dim=run.predicted["head_dim"], batch=run.predicted["batch"])
                    row[label]["measured_speedup"] = timed["speedup_vs_cudnn"]
                    row[label]["measured_card"] = timed["card"]
            row["psnr_gap_db"] = row["direct"]["psnr_db"] - row["retargeted"]["psnr_db"]
            rows.append(row)
            print(f"{f}×{h}×{w}: " + ", ".join(f"{k} {row[k]['psnr_db']:.2f} dB at {row[k]['density']:.3f} "
                                               f"({_speedups(row[k])})" for k in ("retargeted", "direct")), flush=True)

    tag = "x".join(map(str, args.source))
    figure(rows, args.source, args.out / f"figure-{tag}.png")
    data = {"source": {"size": list(args.source), "density": source.mean_density,
                       "geometry": source.geometry.to_dict()},
            "targets": rows, "settings": {k: v for k, v in vars(args).items() if k not in ("out", "target")},
            "benchmark": {**environment(), "device": args.device, "seconds": round(time.time() - started, 1)}}
    write_text_atomic(args.out / f"result-{tag}.json", json.dumps(data, indent=1, allow_nan=False) + "\n")
    print(f"wrote {args.out} in {time.time() - started:.0f} s")


if __name__ == "__main__":
    main()
