"""Fidelity of searched plans on mini-vdit, the project's trained video DiT: profile → search a plan
per density → generate videos dense and sparse from identical held-out noise → PSNR/SSIM against
the global-mask baselines at the same density.

    python -m benchmarks.mini_vdit_fidelity --out reports/mini_vdit [--seeds 16] [--device cuda]

Profiling uses ``--conditions`` training conditions (noise seeds 0, 1, …) along every sampling step;
the search measures each trial's plan on ``--validate`` of them (``--validate-mode trajectory``: whole
trajectories, final frames against dense; ``steps``: teacher-forced outputs; 0: the profile's
attention error alone). Evaluation uses held-out conditions and noise seeds from 10,000, which neither
training nor the search saw. Writes ``result.json`` (the evaluation, plus the profile's head classes and the search's
choices), ``figure.png`` (PSNR against mean kept-block density, plan and baselines) and the
evaluation's pages (``evaluation/index.html``, frame grids, GIFs) into ``--out``.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from attnsearch.atomic_io import replacing, write_text_atomic
from attnsearch.bench.output import environment
from attnsearch.evaluate import evaluate, load_generator, write_outputs
from attnsearch.models import load_model
from attnsearch.profiling import ProfileSettings, class_counts, profile_model
from attnsearch.profiling.classify import classify
from attnsearch.search.sweep import density_sweep, distinct_plans

DENSITIES = (0.1, 0.15, 0.2, 0.3, 0.45)
BASELINES = ("energy_decay", "window")


def _trial(t: dict) -> None:
    print(f"  trial {t['trial']}: {t['speedup']:.2f}× error {t['error']:.4f}", flush=True)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks.mini_vdit_fidelity", description=__doc__.split("\n")[0])
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--seeds", type=int, default=16, help="held-out videos per run")
    p.add_argument("--conditions", type=int, default=4, help="training conditions profiled")
    p.add_argument("--trials", type=int, default=200, help="search trials (one study serves every density)")
    p.add_argument("--densities", type=float, nargs="+", default=list(DENSITIES))
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--profile", type=Path, default=None, help="reuse this profile instead of profiling")
    p.add_argument("--steps", type=int, default=20, help="sampling steps")
    p.add_argument("--size", type=int, nargs=3, default=[16, 64, 64], metavar=("FRAMES", "HEIGHT", "WIDTH"))
    p.add_argument("--validate", type=int, default=4, help="conditions each trial's plan is measured on (0: none)")
    p.add_argument("--validate-mode", default="trajectory", choices=("steps", "trajectory"))
    args = p.parse_args(argv)
    started = time.time()
    args.out.mkdir(parents=True, exist_ok=True)

    f, h, w = args.size
    spec = load_model("mini-vdit", conditions=args.conditions, steps=args.steps, frames=f, height=h, width=w,
                      device=args.device)
    if args.profile is not None:
        from attnsearch.profiling import Profile

        prof = Profile.load(args.profile)
    else:
        prof = profile_model(spec, settings=ProfileSettings(block_size=64))
        prof.save(args.out / "profile.parquet")
    per_layer = class_counts(classify(prof, over_steps=True))
    classes = {k: int(v) for k, v in per_layer.sum().items()}
    print(f"profiled: {classes}", flush=True)

    with tempfile.TemporaryDirectory() as tmp:
        points = density_sweep(args.profile or args.out / "profile.parquet", args.densities, trials=args.trials,
                               folder=tmp, model=spec if args.validate else None, validate=args.validate,
                               validate_mode=args.validate_mode, progress=_trial)
        plans = distinct_plans(points)
        generator = load_generator("mini-vdit", device=args.device, frames=f, height=h, width=w)
        result = evaluate(plans, generator, seeds=args.seeds, baselines=BASELINES,
                          labels=[f"plan @ {q.mean_density:.3f}" for q in plans],
                          progress=lambda d: print(f"  video {d['done']}/{d['total']}: seed {d['seed']} "
                                                   f"{d['label']}", flush=True))
    made = write_outputs(result, args.out / "evaluation", figure_videos=2)
    curve = next((f for f in made["figures"] if Path(f).name == "quality_vs_density.png"), None)
    if curve is not None:  # drawn when the sweep holds plans of several densities
        with replacing(args.out / "figure.png") as tmp:
            tmp.write_bytes(Path(curve).read_bytes())
    data = result.to_dict()
    data["benchmark"] = {**environment(), "device": args.device, "seconds": round(time.time() - started, 1)}
    data["profile_classes"] = {"total": classes, "per_layer": {str(layer): {k: int(v) for k, v in row.items()}
                                                                 for layer, row in per_layer.iterrows()}}
    data["search"] = [p.record() for p in points]
    write_text_atomic(args.out / "result.json", json.dumps(data, indent=1, allow_nan=False) + "\n")
    print(f"wrote {args.out} in {time.time() - started:.0f} s")


if __name__ == "__main__":
    main()
