"""FP8 kept blocks on mini-vdit, the project's trained video DiT: the search's mixed-precision plan
against the all-native plan at the same density cap, and the native plan with every head in FP8.

    python -m benchmarks.mini_vdit_fp8 --out reports/mini_vdit_fp8 [--seeds 16] [--hardware TABLE] \
        [--size FRAMES HEIGHT WIDTH]

One profile with FP8 errors (``--conditions`` training conditions, every sampling step) → three
searches over it: one that may give heads native precision only, and two that may give them native
or FP8 (``optimize --precisions``), one costing calls eagerly (``--execution eager``: a call costs
at least its host dispatch; where the table measured host costs) and one by device time alone
(``--execution graph``) → per density cap the lowest-error plan of each at or below it → those
plans and the native plan run all-FP8 (``Plan.with_precision``) generate ``--seeds`` held-out
videos each from the dense videos' noise; PSNR / SSIM of the frames against dense. Every plan's
attention is also timed on this GPU layer by layer, eagerly (``bench_plan``: CUDA events, median,
fresh inputs, at the model's shape with both guidance branches) beside the cost model's prediction.
``--size``: the clips' pixel size (default the model's, 16 × 64 × 64 = 4,096 tokens; the same weights
run at other sizes through RoPE: 16 × 128 × 128 has 16 times the kept-block work per layer against
the same fixed costs of a call). The hardware table must price FP8 (``attnsearch calibrate`` on a
GPU with FP8 tensor cores). Writes ``result.json``, ``figure.png`` (PSNR and measured attention
speedup against density) and a ``README.md`` fragment.
"""

from __future__ import annotations

import argparse
import math
import tempfile
import time
from pathlib import Path

import torch

from attnsearch.bench.output import write_outputs
from attnsearch.bench.plans import bench_plan
from attnsearch.costmodel import CostModel
from attnsearch.evaluate import evaluate, load_generator
from attnsearch.models import load_model
from attnsearch.profiling import Profile, ProfileSettings, profile_model
from attnsearch.search.choose import BudgetError
from attnsearch.search.sweep import density_sweep

DENSITIES = (0.2, 0.3, 0.45)
#: The searches: (kind, precisions, execution the cost model prices; None: the table's default).
SEARCHES = (("native", ["native"], None), ("mixed, device-time costs", ["native", "fp8"], "graph"),
            ("mixed", ["native", "fp8"], "eager"))
KINDS = tuple(k for k, _, _ in SEARCHES) + ("all fp8",)


def draw(result: dict):
    """figure.png: PSNR against density, and measured and predicted attention speedup against density."""

    def figure(fig) -> None:
        ax_q, ax_t = fig.subplots(1, 2)
        fig.set_size_inches(10, 3.8)
        for kind, marker in zip(KINDS, "o^sD"):
            rows = [r for r in result["plans"] if r["kind"] == kind]
            dens = [r["density"] for r in rows]
            ax_q.plot(dens, [r["psnr_db"] for r in rows], marker=marker, label=kind)
            ax_t.plot(dens, [r["measured_speedup"] for r in rows], marker=marker, label=f"{kind}: measured")
            ax_t.plot(dens, [r["predicted_speedup"] for r in rows], marker=marker, ls=":", alpha=0.6,
                      label=f"{kind}: predicted")
        ax_q.set(xlabel="mean kept-block density", ylabel="PSNR vs dense video (dB)", title="fidelity")
        ax_t.set(xlabel="mean kept-block density", ylabel="attention speedup vs cuDNN dense",
                 title=f"attention time ({result['card']})")
        ax_q.legend(fontsize=8)
        ax_t.legend(fontsize=7)

    return figure


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="python -m benchmarks.mini_vdit_fp8", description=__doc__.split("\n")[0])
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--seeds", type=int, default=16, help="held-out videos per plan")
    p.add_argument("--conditions", type=int, default=4, help="training conditions profiled")
    p.add_argument("--trials", type=int, default=200, help="search trials per precision set")
    p.add_argument("--densities", type=float, nargs="+", default=list(DENSITIES))
    p.add_argument("--hardware", default=None, help="hardware table (default: this GPU's)")
    p.add_argument("--profile", type=Path, default=None, help="reuse this profile (measured with FP8)")
    p.add_argument("--steps", type=int, default=20, help="sampling steps")
    p.add_argument("--reps", type=int, default=30, help="timed repetitions per layer plan")
    p.add_argument("--size", type=int, nargs=3, default=[16, 64, 64], metavar=("FRAMES", "HEIGHT", "WIDTH"))
    args = p.parse_args(argv)
    if not torch.cuda.is_available():
        raise SystemExit("mini_vdit_fp8: needs a CUDA GPU with FP8 tensor cores")
    started = time.time()
    args.out.mkdir(parents=True, exist_ok=True)
    f, h, w = args.size
    spec = load_model("mini-vdit", conditions=args.conditions, steps=args.steps, frames=f, height=h, width=w,
                      device="cuda")
    if args.profile is not None:
        prof_path = args.profile
    else:
        prof = profile_model(spec, settings=ProfileSettings(block_size=64, precisions=("native", "fp8")))
        prof_path = args.out / "profile.parquet"
        prof.save(prof_path)
    prof = Profile.load(prof_path)

    plans: list[tuple[str, float, object, dict]] = []
    unplanned: dict[str, str] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for i, (kind, precisions, execution) in enumerate(SEARCHES):
            if execution == "eager" and CostModel(args.hardware, head_dim=64).table.host is None:
                unplanned[kind] = "the hardware table has no host dispatch costs"
                continue
            try:
                points = density_sweep(prof_path, args.densities, trials=args.trials, folder=tmp, name=f"search{i}",
                                       hardware=args.hardware, precisions=precisions, execution=execution)
            except BudgetError as err:  # e.g. eagerly every sparse layer is dearer than dense: all plans dense
                unplanned[kind] = str(err)
                print(f"{kind}: {err}", flush=True)
                continue
            for point in points:
                res, d = point.result, point.max_density
                plans.append((kind, d, res.plan, {"trial": res.trial, "reason": res.reason,
                                                  "profile_rel_err": res.figures["rel_err"]}))
                print(f"{kind} ≤ {d}: {res.reason}", flush=True)
                if kind == "native":
                    plans.append(("all fp8", d, res.plan.with_precision("fp8"), {"from": "the native plan"}))
    generator = load_generator("mini-vdit", device="cuda", frames=f, height=h, width=w)
    result = evaluate([q for _, _, q, _ in plans], generator, seeds=args.seeds, hardware=args.hardware,
                      labels=[f"{kind} ≤ {d}" for kind, d, _, _ in plans],
                      progress=lambda e: print(f"  video {e['done']}/{e['total']}: {e['label']}", flush=True))
    layout_batch = 2  # classifier-free guidance: both branches in one forward
    cm = CostModel(args.hardware, head_dim=64, batch=layout_batch)
    rows = []
    for (kind, d, plan, search), run in zip(plans, result.runs, strict=True):
        timed = bench_plan(plan, head_dim=64, batch=layout_batch, cost=cm, reps=args.reps, flex=False)
        o = {k: (v if not isinstance(v, float) or math.isfinite(v) else None) for k, v in run.overall.items()}
        rows.append({"kind": kind, "execution": plan.hardware.get("execution"), "max_density": d,
                     "density": plan.mean_density, "fp8_share": plan.precision_share("fp8"),
                     "psnr_db": o["psnr_db"], "psnr_db_min": o["psnr_db_min"], "ssim": o["ssim"],
                     "predicted_speedup": run.predicted["speedup"],
                     "measured_attention_ms": timed["sparse_total_ms"], "dense_attention_ms": timed["dense_total_ms"],
                     "measured_speedup": timed["speedup_vs_cudnn"], "search": search})
        print(f"{kind} ≤ {d}: density {plan.mean_density:.3f}, FP8 {rows[-1]['fp8_share']:.0%}, "
              f"PSNR {run.overall['psnr_db']:.2f} dB, {timed['speedup_vs_cudnn']:.2f}× measured, "
              f"{run.predicted['speedup']:.2f}× predicted", flush=True)
    out = {"seconds": round(time.time() - started, 1), "card": timed["card"], "profile": str(prof_path),
           "size": [f, h, w], "seeds": result.seeds, "steps": result.steps, "hardware": cm.table.name,
           "host_costs": cm.table.host.to_dict() if cm.table.host is not None else None, "plans": rows,
           "unplanned": unplanned}
    write_outputs(args.out, "mini_vdit_fp8", out, draw(out))
    print(f"wrote {args.out} in {time.time() - started:.0f} s")


if __name__ == "__main__":
    main()
