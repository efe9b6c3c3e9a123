"""Searched plans on mini-vdit with and without output-sensitivity weights: the same profile, the
same trials, the same held-out videos, against the global-mask baselines.

    python -m benchmarks.mini_vdit_weighted --out reports/mini_vdit_weighted [--profile profiles/mini-vdit.parquet]

Measures the sensitivity of the profiled model (``attnsearch.search.sensitivity``: every step's and
every head's probe on ``--trajectories`` whole trajectories of the profile's training conditions),
then runs one unweighted and one weighted search (``--trials`` each) and takes, for every density
cap, each search's lowest-error plan at or below it; all plans and, at each plan's density, the
``energy_decay`` and ``window`` baselines generate the same held-out videos (noise seeds from
10,000, held-out conditions). Writes ``result.json`` (the evaluation, the sensitivity record, both
searches' choices), ``figure.png`` (PSNR and SSIM against density) and ``sensitivity.png`` (the
step and head gains) into ``--out``.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from attnsearch.atomic_io import write_text_atomic
from attnsearch.bench.output import environment
from attnsearch.evaluate import evaluate, load_generator
from attnsearch.models import load_model
from attnsearch.profiling import Profile, ProfileSettings, profile_model
from attnsearch.report.style import save_figure, save_quality_figure
from attnsearch.report.sensitivity_figures import gains
from attnsearch.search.sensitivity import Sensitivity, measure_sensitivity

from attnsearch.search.sweep import density_sweep, distinct_plans

DENSITIES = (0.1, 0.15, 0.2, 0.3, 0.45)
BASELINES = ("energy_decay", "window")
SERIES = {"plan": ("per-head plan", "#1f77b4", "o-"),
          "weighted": ("per-head plan, sensitivity-weighted", "#d62728", "s-"),
          "energy_decay": ("energy_decay (global)", "#9467bd", "^--"), "window": ("window (global)", "#7f7f7f", "v--")}


def _series(data: dict) -> dict[str, list[tuple[float, float, float]]]:
    """(density, PSNR, SSIM) per series, by density; a baseline point once per density."""
    out: dict[str, dict[float, tuple[float, float, float]]] = {k: {} for k in SERIES}
    for r in data["runs"]:
        key = r["baseline"]["baseline"] if r["kind"] == "baseline" else r["label"].split(" @ ")[0]
        if key in out:
            o = r["overall"]
            out[key][round(r["density"], 6)] = (r["density"], o["psnr_db"], o["ssim"])
    return {k: [v[d] for d in sorted(v)] for k, v in out.items()}


def figure(data: dict, path: Path) -> None:
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9.5, 3.6))
    for key, points in _series(data).items():
        name, colour, style = SERIES[key]
        for ax, i in zip(axes, (1, 2)):
            ax.plot([p[0] for p in points], [p[i] for p in points], style, color=colour, label=name, ms=4)
    s = data["settings"]
    save_quality_figure(fig, axes, "mean kept-block density", f"mini-vdit {'×'.join(map(str, s['size']))}, "
                        f"{len(data['seeds'])} held-out videos, {s['steps']} steps", path)


def sensitivity_figure(record: dict, path: Path) -> None:
    gains(Sensitivity.from_dict({k: v for k, v in record.items() if k != "seconds"}), path)


def allocation(profile: Path, record: dict, cap: float, trials: int) -> dict[str, dict[str, list]]:
    """Where each search's plan at ``cap`` keeps its blocks: mean density per step and per layer.
    The searches are deterministic (seeded sampler, exact inner solve), so this re-runs them on a CPU
    from the profile and the sensitivity record and gets the report's plans back."""
    sens = Sensitivity.from_dict({k: v for k, v in record.items() if k != "seconds"})
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, weights in (("plan", None), ("weighted", sens)):
            plan = density_sweep(profile, [cap], trials=trials, folder=tmp, name=name,
                                 sensitivity=weights)[0].result.plan
            S, L = plan.num_steps, plan.num_layers
            grid = np.array([[plan.layer_plan(s, layer).density for layer in range(L)] for s in range(S)])
            out[name] = {"density": plan.mean_density, "per_step": grid.mean(1).tolist(),
                         "per_layer": grid.mean(0).tolist()}
    return out


def allocation_figure(alloc: dict, cap: float, path: Path) -> None:
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(9.5, 3.2), gridspec_kw={"width_ratios": [1.6, 1]})
    for name, got in alloc.items():
        label, colour, style = SERIES[name]
        label = f"{label} ({got['density']:.3f})"
        a.plot(range(len(got["per_step"])), got["per_step"], style, color=colour, label=label, ms=4)
        b.plot(range(len(got["per_layer"])), got["per_layer"], style, color=colour, label=label, ms=4)
    steps = len(next(iter(alloc.values()))["per_step"])
    a.set_xticks(range(0, steps, max(1, steps // 10)))
    a.set_xlabel("denoising step")
    b.set_xlabel("layer")
    for ax in (a, b):
        ax.set_ylabel("mean kept-block density")
        ax.set_ylim(0, 1)
        ax.grid(alpha=0.3)
    a.legend(fontsize=7, frameon=False)
    fig.suptitle(f"where the plans at cap {cap:g} keep their blocks", fontsize=9)
    save_figure(fig, path, tight=True)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks.mini_vdit_weighted", description=__doc__.split("\n")[0])
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--profile", type=Path, default=Path("profiles/mini-vdit.parquet"),
                   help="the profile to search (with --make-profile: where to write a new one)")
    p.add_argument("--make-profile", action="store_true", help="profile the model at --size first")
    p.add_argument("--conditions", type=int, default=4, help="training conditions the profile was made with")
    p.add_argument("--steps", type=int, default=20, help="sampling steps the profile was made with")
    p.add_argument("--size", type=int, nargs=3, default=[16, 64, 64], metavar=("FRAMES", "HEIGHT", "WIDTH"))
    p.add_argument("--trajectories", type=int, default=2, help="trajectories each sensitivity probe runs")
    p.add_argument("--probe-density", type=float, default=0.3, help="density of the sensitivity probes")
    p.add_argument("--sites", default="heads", choices=("heads", "layers"), help="second probe axis (--per-layer)")
    p.add_argument("--weighted-only", action="store_true", help="search and evaluate the weighted plans only")
    p.add_argument("--seeds", type=int, default=16, help="held-out videos")
    p.add_argument("--trials", type=int, default=200, help="trials of each search")
    p.add_argument("--densities", type=float, nargs="+", default=list(DENSITIES))
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--figures-from", type=Path, default=None, metavar="RESULT",
                   help="only draw the figures of a result.json into --out (allocation.png re-runs both searches "
                        "at --allocation-cap on this machine: ~30 s of CPU)")
    p.add_argument("--allocation-cap", type=float, default=0.3)
    args = p.parse_args(argv)
    if args.figures_from is not None:
        data = json.loads(args.figures_from.read_text())
        args.out.mkdir(parents=True, exist_ok=True)
        figure(data, args.out / "figure.png")
        sensitivity_figure(data["sensitivity"], args.out / "sensitivity.png")
        alloc = allocation(Path(data["settings"]["profile"]), data["sensitivity"], args.allocation_cap,
                           data["settings"]["trials"])
        allocation_figure(alloc, args.allocation_cap, args.out / "allocation.png")
        for name, got in alloc.items():
            print(f"{name} at ≤ {args.allocation_cap}: density {got['density']:.3f}; per step "
                  + " ".join(f"{x:.2f}" for x in got["per_step"]) + "; per layer "
                  + " ".join(f"{x:.2f}" for x in got["per_layer"]))
        return
    started = time.time()
    args.out.mkdir(parents=True, exist_ok=True)

    f, h, w = args.size
    spec = load_model("mini-vdit", conditions=args.conditions, steps=args.steps, frames=f, height=h, width=w,
                      device=args.device)
    if args.make_profile:
        profile_model(spec, settings=ProfileSettings(block_size=64)).save(args.profile)
    prof = Profile.load(args.profile)
    sens = measure_sensitivity(prof, spec, density=args.probe_density, trajectories=args.trajectories,
                               sites=args.sites,
                               progress=lambda d: print(f"  probe {d['done']}/{d['total']}: {d['site']}", flush=True))
    sens_s = time.time() - started
    print(f"sensitivity in {sens_s:.0f} s: {sens.summary()}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        sweeps = {name: density_sweep(args.profile, args.densities, trials=args.trials, folder=tmp, name=name,
                                      sensitivity=weights)
                  for name, weights in (("plan", None), ("weighted", sens))
                  if name == "weighted" or not args.weighted_only}
    plain, weighted = distinct_plans(sweeps.get("plan", [])), distinct_plans(sweeps["weighted"])
    generator = load_generator("mini-vdit", device=args.device, frames=f, height=h, width=w)
    result = evaluate(plain + weighted, generator, seeds=args.seeds, baselines=BASELINES,
                      labels=[f"plan @ {q.mean_density:.3f}" for q in plain] +
                             [f"weighted @ {q.mean_density:.3f}" for q in weighted],
                      progress=lambda d: print(f"  video {d['done']}/{d['total']}: seed {d['seed']} {d['label']}",
                                               flush=True))
    data = result.to_dict()
    data["settings"] = {"size": list(args.size), "steps": args.steps, "conditions": args.conditions,
                        "trials": args.trials, "densities": sorted(args.densities), "profile": str(args.profile),
                        "sites": args.sites}
    data["sensitivity"] = {**sens.to_dict(), "seconds": round(sens_s, 1)}
    data["search"] = {name: [p.record() for p in points] for name, points in sweeps.items()}
    data["benchmark"] = {**environment(), "device": args.device, "seconds": round(time.time() - started, 1)}
    write_text_atomic(args.out / "result.json", json.dumps(data, separators=(",", ":"), allow_nan=False) + "\n")
    figure(data, args.out / "figure.png")
    sensitivity_figure(data["sensitivity"], args.out / "sensitivity.png")
    for key, points in _series(data).items():
        print(f"{key}: " + ", ".join(f"{d:.3f}: {p:.2f} dB / {s:.3f}" for d, p, s in points))
    print(f"wrote {args.out} in {time.time() - started:.0f} s")


if __name__ == "__main__":
    main()
