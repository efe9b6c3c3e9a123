"""CPU: fit the cost model to measured calibration points, write the table and the accuracy report.

    .venv/bin/python benchmarks/costmodel_fit.py reports/costmodel/points_h100.json \\
        [--specs benchmarks/costmodel_specs.json] [--kernels kernels] [--report reports/costmodel]

The points come from benchmarks/costmodel_calibrate.py (one GPU call). Fitting uses the points
with role "grid" only; points with role "holdout" (layers never fitted: random mixed families,
5–60 % density, the acceptance shapes) give the accuracy table: predicted vs measured per layer.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from attnsearch.calibrate import _layer_plan, build_table  # noqa: E402
from attnsearch.costmodel import CostModel, gpu_slug  # noqa: E402
from attnsearch.geometry import Geometry  # noqa: E402


def merge_layers(points: list[dict], specs: list[dict]) -> None:
    """Points measured before they carried their layer spec get it back from the spec list."""
    if len(points) > len(specs):
        raise SystemExit(f"{len(points)} points but only {len(specs)} specs")
    for p, s in zip(points, specs):
        if p["label"] != s["label"] or p["kind"] != s["kind"]:
            raise SystemExit(f"point {p['label']!r} does not match spec {s['label']!r}: wrong spec file")
        p.setdefault("layer", s["layer"])


def accuracy(points: list[dict], model_for) -> tuple[list[dict], dict]:
    """Predicted vs measured latency of every holdout layer."""
    rows = []
    for p in points:
        if p.get("role") != "holdout" or "ms" not in p:
            continue
        cm = model_for(p)
        lp = _layer_plan(Geometry.from_dict(p["geometry"]), p["heads"], p["block_size"], p["layer"])
        pred = cm.layer_ms(lp)
        rows.append({"shape": [p.get("batch", 1), p["heads"], p["num_tokens"], p["head_dim"]],
                     "block_size": p["block_size"], "density": round(lp.density, 4),
                     "families": sorted({g.pattern for g in lp.groups}), "skip_heads": len(lp.skip_heads),
                     "measured_ms": p["ms"], "predicted_ms": pred, "rel_err": pred / p["ms"] - 1,
                     "timing": p["method"]})
    rel = np.array([abs(r["rel_err"]) for r in rows])
    summary = {"layers": len(rows), "within_10pct": float((rel <= 0.10).mean()) if len(rel) else None,
               "median_abs_rel_err": float(np.median(rel)) if len(rel) else None,
               "max_abs_rel_err": float(rel.max()) if len(rel) else None}
    return rows, summary


def markdown(title: str, rows: list[dict], summary: dict, device: str) -> str:
    out = [f"# {title}", "", f"Card: **{device}**. Predicted (cost model) vs measured device time of one layer; "
           f"{summary['layers']} held-out layers, **{summary['within_10pct']:.0%} within ±10 %** "
           f"(median |error| {summary['median_abs_rel_err']:.1%}, max {summary['max_abs_rel_err']:.1%}).", "",
           "| shape (B,H,N,D) | B | density | families | skip heads | measured ms | predicted ms | error | timing |",
           "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        out.append(f"| {','.join(map(str, r['shape']))} | {r['block_size']} | {r['density']:.3f} | "
                   f"{' '.join(f[:5] for f in r['families'])} | {r['skip_heads']} | {r['measured_ms']:.3f} | "
                   f"{r['predicted_ms']:.3f} | {r['rel_err']:+.1%} | {r['timing'].split(' ')[0]} |")
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("points", type=Path)
    ap.add_argument("--specs", type=Path, default=Path(__file__).with_name("costmodel_specs.json"))
    ap.add_argument("--kernels", type=Path, default=Path("kernels"))
    ap.add_argument("--report", type=Path, default=Path("reports/costmodel"))
    ap.add_argument("--runtime-commit", default=None, help="git commit of the runtime that was timed")
    ap.add_argument("--fill-points", type=Path, default=None,
                    help="points file whose fill points (the runtime's own list-indexed zero fill) replace the "
                         "calibration's fill points")
    args = ap.parse_args()
    data = json.loads(args.points.read_text())
    env, points = data["env"], data["points"]
    merge_layers(points, json.loads(args.specs.read_text()))
    if args.fill_points:
        extra = [dict(p, role="grid") for p in json.loads(args.fill_points.read_text())["points"]
                 if p["kind"] == "fill" and "ms" in p]
        points = [p for p in points if p["kind"] != "fill"] + extra
    table = build_table(points, env)
    if args.runtime_commit:
        table.software["runtime_commit"] = args.runtime_commit
    path = table.save(args.kernels / f"{gpu_slug(env['device'])}.json")
    print(f"wrote {path}")
    print(json.dumps(table.fit, indent=1))
    models: dict = {}
    rows, summary = accuracy(points, lambda p: models.setdefault(
        (p["head_dim"], p.get("batch", 1)), CostModel(table, head_dim=p["head_dim"], batch=p.get("batch", 1))))
    args.report.mkdir(parents=True, exist_ok=True)
    stem = f"fit_holdout_{gpu_slug(env['device'])}"
    (args.report / f"{stem}.json").write_text(json.dumps({"device": env["device"], "summary": summary,
                                                           "fit": table.fit, "layers": rows}, indent=1) + "\n")
    (args.report / f"{stem}.md").write_text(markdown("Cost model: in-call holdout layers", rows, summary,
                                                     env["device"]))
    print(summary)
