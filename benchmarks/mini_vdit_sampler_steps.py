"""Residual reuse on mini-vdit at two sampler step counts: one global mask for every call, exact at a
set of steps, at a total density, against dense videos from the same noise and the same steps.

    python -m benchmarks.mini_vdit_sampler_steps --out DIR [--seeds 16] [--densities 0.2 0.3] \
        [--exact 20:0,2,5,10 50:0,1,3,6,10,16,24,34 ...]

An exact step costs 1/S of the compute at S sampler steps, and the closer the steps, the less the
residual drifts between two of them: at 50 steps (the Wan2.1 and CogVideoX samplers' default) reuse
can afford more exact steps than at 20 at the same density. Every ``--exact S:SET`` runs the global
masks ``energy_decay`` and ``window`` (``evaluate``'s baselines: docs/design.md, "Residual reuse")
at each density with those exact steps, the mask's density lowered by what they add (an exact step
followed by another runs its mask alone, as in every plan; ``exact`` in the result lists the steps that
run exactly, ``asked`` the set given). Writes
``result.json`` and ``figure.png`` (PSNR and SSIM against density, one curve per set) into ``--out``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from attnsearch.atomic_io import write_text_atomic
from attnsearch.bench.output import add_run_options, environment, redrawn
from attnsearch.evaluate import EvaluateError, evaluate, load_generator
from attnsearch.evaluate.baselines import BASELINES, baseline_plan
from attnsearch.layer_plan import LayerPlan
from attnsearch.plan import Plan, ScheduleEntry
from attnsearch.report.style import labelled_curve, save_quality_figure

EXACT = ("20:0,2,5,10", "50:0,5,12,25", "50:0,1,3,6,10,16,24,34", "50:0,1,2,3,5,7,10,14,19,25,32,40")
DENSITIES = (0.2, 0.3)
#: Block size of the plans (mini-vdit's profiles use 64 at 4,096 tokens).
BLOCK = 64


def parse_exact(text: str) -> tuple[int, tuple[int, ...]]:
    steps, _, exact = text.partition(":")
    return int(steps), tuple(int(s) for s in exact.split(","))


def carrier(geometry, num_steps: int, num_layers: int, num_heads: int, block_size: int, exact, model: dict) -> Plan:
    """A plan of the shape the baselines copy: ``num_steps`` steps, reusing from ``exact`` (an exact
    step whose span is one step, the next one exact too, runs its masks alone: ``plan.residual_entries``)."""
    layer = LayerPlan.dense(geometry, num_heads, block_size)
    plan = Plan(geometry, block_size, num_steps, num_layers, num_heads,
                (ScheduleEntry(0, num_steps, (layer,) * num_layers),), model=model)
    return plan.with_residual(exact)


def figure(data: dict, path: Path) -> None:
    """PSNR and SSIM against the number of exact steps: one curve per mask, sampler and density."""
    import matplotlib.pyplot as plt

    curves: dict[tuple[str, int, float], list[tuple[int, float, float, float]]] = {}
    for r in data["runs"]:
        curves.setdefault((r["baseline"], r["steps"], r["target"]), []).append(
            (len(r["exact"]), r["overall"]["psnr_db"], r["overall"]["ssim"], r["density"]))
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.9))
    for (name, steps, target), points in sorted(curves.items()):
        points.sort()
        most = steps == max(k[1] for k in curves)
        for ax, y in zip(axes, (1, 2)):
            labelled_curve(ax, [p[0] for p in points], [p[y] for p in points], [f"{p[3]:.3f}" for p in points],
                           color="C0" if name == "energy_decay" else "C1", offset=(3, -9), fontsize=6,
                           ls="-" if most else "--", marker="o" if most else "s", ms=4,
                           label=f"{name}, {steps} steps, density {target:g}")
    axes[0].axhline(30, color="grey", lw=0.8, ls=":")
    save_quality_figure(fig, axes, "exact steps (labels: mean density, their dense calls counted)",
                        f"mini-vdit, {len(data['seeds'])} held-out videos: one global mask with residual reuse, "
                        "by sampler steps and number of exact steps", path)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks.mini_vdit_sampler_steps", description=__doc__.split("\n")[0])
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--seeds", type=int, default=16)
    p.add_argument("--densities", type=float, nargs="+", default=list(DENSITIES))
    p.add_argument("--exact", nargs="+", default=list(EXACT), metavar="S:SET")
    p.add_argument("--size", type=int, nargs=3, default=[16, 64, 64], metavar=("FRAMES", "HEIGHT", "WIDTH"))
    add_run_options(p)
    args = p.parse_args(argv)
    if redrawn(args, figure):
        return
    try:
        sets = [parse_exact(t) for t in args.exact]
    except ValueError:
        p.error(f"--exact: STEPS:comma-separated steps, got {args.exact}")
    started = time.time()
    f, h, w = args.size
    generator = load_generator("mini-vdit", device=args.device, frames=f, height=h, width=w)
    geometry = generator.geometry()
    cfg = generator.transformer.config_
    runs, seeds = [], None
    for num_steps in sorted({s for s, _ in sets}):
        plans, meta = [], []
        for s, exact in sets:
            if s != num_steps:
                continue
            base = carrier(geometry, s, cfg.depth, cfg.heads, BLOCK, exact, {"name": "mini-vdit"})
            if base.residual_steps != exact:
                print(f"{s}:{','.join(map(str, exact))}: exact steps whose span is one step run their masks alone; "
                      f"exact at {','.join(map(str, base.residual_steps))}", flush=True)
            for d in args.densities:
                for name in BASELINES:
                    try:
                        plan, info = baseline_plan(name, base, d)
                    except EvaluateError as e:   # the exact steps alone exceed the density
                        print(f"skipped {s}:{','.join(map(str, exact))} at {d}: {e}", flush=True)
                        continue
                    plans.append(plan)
                    meta.append({"baseline": name, "steps": s, "exact": list(base.residual_steps),
                                 "asked": list(exact), "target": d,
                                 "density": info["density"], "params": info["params"]})
        if not plans:
            continue
        result = evaluate(plans, generator, seeds=args.seeds,
                          labels=[f"{m['baseline']} {m['steps']}:{len(m['exact'])} @ {m['target']}" for m in meta],
                          progress=lambda d: print(f"  {num_steps} steps: video {d['done']}/{d['total']} "
                                                   f"({time.time() - started:.0f} s)", flush=True))
        data = result.to_dict()
        seeds = data["seeds"]
        for m, r in zip(meta, data["runs"]):
            runs.append({**m, "overall": r["overall"],
                         "videos": [{k: v for k, v in x.items() if k != "psnr_per_frame_db"} for x in r["videos"]]})
    data = {"seeds": seeds, "runs": runs,
            "benchmark": {**environment(), "device": args.device, "seconds": round(time.time() - started, 1)}}
    write_text_atomic(args.out / "result.json", json.dumps(data, separators=(",", ":"), allow_nan=False) + "\n")
    figure(data, args.out / "figure.png")
    for r in runs:
        o = r["overall"]
        print(f"{r['baseline']:>13} {r['steps']} steps, exact {','.join(map(str, r['exact']))} @ {r['density']:.3f}: "
              f"{o['psnr_db']:.2f} dB (worst {o['psnr_db_min']:.2f}) / SSIM {o['ssim']:.3f}")
    print(f"wrote {args.out} in {time.time() - started:.0f} s")


if __name__ == "__main__":
    main()
