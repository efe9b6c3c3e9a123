"""GPU: time the calibration specs, fit the cost model, write the table — one device call.

    PYTHONUNBUFFERED=1 python benchmarks/costmodel_calibrate.py --out $OUT [--budget 330]

Reads benchmarks/costmodel_specs.json (made by costmodel_specs.py on the CPU), writes
$OUT/points.json (every measurement, holdout included, plus the environment) and
$OUT/<gpu-slug>.json (the fitted table; holdout points are never fitted). No optuna here.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from attnsearch.calibrate import build_table, environment, measure, save_points  # noqa: E402
from attnsearch.costmodel import gpu_slug  # noqa: E402

if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--budget", type=float, default=330.0, help="seconds after which no new spec starts")
    ap.add_argument("--specs", type=Path, default=Path(__file__).with_name("costmodel_specs.json"))
    args = ap.parse_args()
    t0 = time.time()
    specs = json.loads(args.specs.read_text())
    env = environment()
    print(env, flush=True)
    points = measure(specs, budget_s=args.budget, progress=lambda m: print(m, flush=True))
    env = environment()  # now with the autotuned configs
    save_points(points, env, args.out / "points.json")
    failed = [p for p in points if "error" in p]
    print(f"measured {len(points)} of {len(specs)} specs, {len(failed)} failed, {time.time() - t0:.0f}s", flush=True)
    for p in failed[:10]:
        print("  FAILED", p["kind"], p["label"], p["error"], flush=True)
    try:
        table = build_table(points, env)
        path = table.save(args.out / f"{gpu_slug(env['device'])}.json")
        print(json.dumps(table.fit, indent=1))
        print(f"wrote {path}")
    except Exception:  # noqa: BLE001  (the points are what matters; fit again on the CPU)
        traceback.print_exc()
