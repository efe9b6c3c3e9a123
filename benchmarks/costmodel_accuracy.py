"""Cost-model accuracy on layers the fit never saw (the issue's acceptance check), one GPU call.

    .venv/bin/python benchmarks/costmodel_accuracy.py specs                      # CPU: make the layers
    PYTHONUNBUFFERED=1 python benchmarks/costmodel_accuracy.py measure --out $OUT  # GPU: time them
    .venv/bin/python benchmarks/costmodel_accuracy.py report POINTS.json          # CPU: compare

The layers: random mixed-family layer plans (per head a random family and its own density
around the layer's, 5–60 % overall, one in five with a dense head, one in five with skip heads) at
(1, 12, 32760, 128) and (1, 40, 75600, 128), B = 128, drawn with a seed the calibration grid did not
use, after the model form and table were fixed. Plus the runtime's own zero fill of skip heads
(a list index: timed as queued calls). Timing is device time, as in calibration. The report puts
the committed table's prediction beside each measurement and writes reports/costmodel/.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path


sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from attnsearch.geometry import Geometry  # noqa: E402

HERE = Path(__file__).resolve().parent
SPECS = HERE / "costmodel_accuracy_specs.json"
SEED = 20261127


def make_specs() -> None:
    from attnsearch.calibrate import _spec, holdout_specs

    specs = holdout_specs(seed=SEED, count=20)
    for geom, H in [(Geometry(4, 8, 16), 1), (Geometry(8, 16, 16), 4), (Geometry(8, 32, 32), 12),
                    (Geometry(13, 45, 56), 6), (Geometry(21, 45, 80), 20)]:
        specs.append(_spec("fill", geom, H, 128, None, label=f"runtime fill {H} heads", role="holdout"))
    SPECS.write_text(json.dumps(specs) + "\n")
    print(f"{len(specs)} specs → {SPECS}")


def measure(out: Path) -> None:
    from attnsearch.calibrate import environment, measure as run, save_points

    t0 = time.time()
    specs = json.loads(SPECS.read_text())
    points = run(specs, progress=lambda m: print(m, flush=True))
    save_points(points, environment(), out / "accuracy_points.json")
    print(f"{len(points)} points, {time.time() - t0:.0f}s")


def report(points_path: Path, table_path: Path | None, out_dir: Path) -> None:
    from benchmarks_costmodel_fit import accuracy, markdown  # type: ignore[import-not-found]

    from attnsearch.costmodel import CostModel, gpu_slug, load_hardware

    data = json.loads(points_path.read_text())
    env, points = data["env"], data["points"]
    table = load_hardware(str(table_path) if table_path else gpu_slug(env["device"]))
    models: dict = {}
    rows, summary = accuracy([p for p in points if p["kind"] == "sparse"], lambda p: models.setdefault(
        (p["head_dim"], p.get("batch", 1)), CostModel(table, head_dim=p["head_dim"], batch=p.get("batch", 1))))
    fills = [p for p in points if p["kind"] == "fill" and "ms" in p]
    fill_rows = [{"bytes": p["bytes"], "measured_ms": p["ms"], "predicted_ms": float(table.fill.ms(p["bytes"])),
                  "rel_err": float(table.fill.ms(p["bytes"])) / p["ms"] - 1} for p in fills]
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = f"accuracy_{gpu_slug(env['device'])}"
    (out_dir / f"{stem}.json").write_text(json.dumps({
        "device": env["device"], "software": {k: env.get(k) for k in ("torch", "triton", "cuda", "cudnn")},
        "table": table.source, "summary": summary, "layers": rows, "fill": fill_rows}, indent=1) + "\n")
    md = markdown("Cost model accuracy on held-out layer plans", rows, summary, env["device"])
    md += ("\nLayers drawn with a fresh seed after the model form and the table were fixed; none is in the "
           "calibration grid. Timing: device time (CUDA-graph replay; queued CUDA events where skip heads make "
           "capture impossible).\n\n## Zero fill of skip heads (the runtime's list-indexed assignment)\n\n"
           "| bytes | measured ms | predicted ms | error |\n|---|---|---|---|\n")
    md += "\n".join(f"| {r['bytes']:.3g} | {r['measured_ms']:.4f} | {r['predicted_ms']:.4f} | {r['rel_err']:+.1%} |"
                    for r in fill_rows) + "\n"
    (out_dir / f"{stem}.md").write_text(md)
    print(md)


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("mode", choices=["specs", "measure", "report"])
    ap.add_argument("points", nargs="?", type=Path)
    ap.add_argument("--out", type=Path)
    ap.add_argument("--table", type=Path)
    ap.add_argument("--report-dir", type=Path, default=Path("reports/costmodel"))
    args = ap.parse_args()
    if args.mode == "specs":
        make_specs()
    elif args.mode == "measure":
        measure(args.out)
    else:
        sys.path.insert(0, str(HERE))
        import importlib

        sys.modules["benchmarks_costmodel_fit"] = importlib.import_module("costmodel_fit")
        report(args.points, args.table, args.report_dir)
