"""Cost-model accuracy on layers the fit never saw, shaped like those the search emits (CUDA; or CPU
with --dry-run: the layers and their predictions only).

    python -m benchmarks.costmodel_accuracy --out reports/costmodel_accuracy          # GPU, < 4 min on an H100
    python -m benchmarks.costmodel_accuracy --dry-run --out /tmp/acc                    # CPU
    python -m benchmarks.costmodel_accuracy --measured reports/costmodel_accuracy/result.json --out /tmp/acc
                                     # CPU: score a (refitted) table against an earlier run's timings

The held-out set, drawn with its own seed: at Wan2.1-1.3B's layer (1, 12, 32,760, 128) and
Wan2.1-14B's 720p layer (1, 40, 75,600, 128), block size 128, layers mixing the four families with
per-head parameters drawn at random (vertical stripes keep 3 key blocks, as the search's top-k
does), a few skip heads in half of them and a dense head in one in four; plus the zero fill of skip
heads alone. Each is timed as calibration times it (``costmodel.calibrate.measure``: device time,
the runtime's own ops) and put beside the table's prediction; the summary is the share within ±10%.
"""

from __future__ import annotations

import argparse
import random
from pathlib import Path
from typing import Any

import numpy as np

from attnsearch.bench.output import write_outputs
from attnsearch.costmodel import CostModel, load_hardware
from attnsearch.costmodel.calibrate import describe_spec
from attnsearch.costmodel.fit import spec_layer_plan
from attnsearch.geometry import Geometry

SHAPES = [(Geometry(21, 30, 52), 12), (Geometry(21, 45, 80), 40)]
SEED = 20261205
FAMILIES = ("diagonal", "multi_diagonal", "energy_decay", "vertical_stripe")


def _head(rng: random.Random, geom: Geometry, nb: int) -> list:
    family = rng.choice(FAMILIES)
    if family == "diagonal":
        return [family, {"rows": round(geom.height * rng.uniform(0.3, 6.0), 1)}]
    if family == "multi_diagonal":
        return [family, {"rows": round(geom.height * rng.uniform(0.05, 0.5), 1),
                         "frames": rng.randint(1, max(1, geom.frames // 3))}]
    if family == "energy_decay":
        return [family, {"decay": round(rng.uniform(0.05, 0.9), 3), "sink": rng.random() < 0.5}]
    return [family, {"key_blocks": sorted(rng.sample(range(nb), 3)), "rows": round(geom.height * rng.uniform(0.3, 3), 1)}]


def heldout_specs(count: int, seed: int = SEED) -> list[dict[str, Any]]:
    """``count`` layers per shape (see the module docstring) and three zero fills, as calibration specs."""
    rng = random.Random(seed)
    specs = []
    for geom, heads in SHAPES:
        nb = geom.num_blocks(128)
        for i in range(count):
            layer = [_head(rng, geom, nb) for _ in range(heads)]
            if i % 2:
                for h in rng.sample(range(heads), max(1, heads // 6)):
                    layer[h] = ["skip", {}]
            if i % 4 == 0:
                layer[rng.randrange(heads)] = ["dense", {}]
            specs.append({"kind": "sparse", "label": f"held-out {heads}×{geom.num_tokens} #{i}", "role": "holdout",
                          "geometry": geom.to_dict(), "heads": heads, "head_dim": 128, "block_size": 128, "batch": 1,
                          "layer": layer})
    # Fills of shapes off calibration's grid: a small layer, two skip heads of the 1.3B layer, seven of the 14B's.
    for geom, heads in [(Geometry(6, 24, 24), 3), (Geometry(21, 30, 52), 2), (Geometry(21, 45, 80), 7)]:
        specs.append({"kind": "fill", "label": f"fill {heads} heads", "role": "holdout", "geometry": geom.to_dict(),
                      "heads": heads, "head_dim": 128, "block_size": None, "batch": 1, "layer": None})
    return specs


def earlier_timings(path: Path, specs: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The held-out points with the ms an earlier run of this benchmark measured (matched by label),
    and that run's environment. SystemExit naming the problem when the file does not hold them all."""
    import json

    try:
        data = json.loads(path.read_text())
        measured = {r["label"]: r["measured_ms"] for r in data["layers"]}
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise SystemExit(f"{path}: not a result of this benchmark ({type(err).__name__}: {err})") from None
    points = []
    for spec in specs:
        ms = measured.get(spec["label"])
        if not isinstance(ms, (int, float)) or not ms > 0:
            raise SystemExit(f"{path}: no timing for held-out layer {spec['label']!r}")
        points.append({**describe_spec(spec), "ms": float(ms)})
    return points, data.get("environment", {})


def predict(point: dict[str, Any], model: CostModel) -> float:
    if point["kind"] == "fill":
        return float(model.table.fill.ms(point["bytes"]))
    geom = Geometry.from_dict(point["geometry"])
    return model.layer_ms(spec_layer_plan(geom, point["heads"], point["block_size"], point["layer"]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=Path("reports/costmodel_accuracy"))
    ap.add_argument("--count", type=int, default=12, help="held-out layers per shape")
    ap.add_argument("--hardware", default=None, help="the table to check (default: this GPU's, or the shipped H100's)")
    ap.add_argument("--dry-run", action="store_true", help="CPU: the layers and their predictions, nothing timed")
    ap.add_argument("--measured", type=Path, default=None,
                    help="CPU: take the timings from this earlier result.json (same held-out set) instead of "
                         "measuring; its environment is kept as the timings' provenance")
    args = ap.parse_args()
    if args.measured is not None and args.dry_run:
        ap.error("--measured and --dry-run exclude each other")
    specs = heldout_specs(args.count)
    model = CostModel(load_hardware(args.hardware), head_dim=128)
    measured_env = None
    if args.dry_run:
        points = [describe_spec(s) for s in specs]
    elif args.measured is not None:
        points, measured_env = earlier_timings(args.measured, specs)
    else:
        from attnsearch.costmodel.calibrate import measure

        points = [p for p in measure(specs, progress=lambda m: print(m, flush=True)) if "ms" in p]
    rows = []
    for p in points:
        row = {"label": p["label"], "kind": p["kind"], "density": p.get("density"), "skip_heads": p.get("skip_heads"),
               "families": p.get("families"), "predicted_ms": predict(p, model), "measured_ms": p.get("ms")}
        if row["measured_ms"]:
            row["rel_err"] = row["predicted_ms"] / row["measured_ms"] - 1
        rows.append(row)
    errs = np.array([r["rel_err"] for r in rows if "rel_err" in r])
    summary = {"layers": len(rows), "measured": int(errs.size), "table": model.table.name, "device": model.table.device}
    if measured_env is not None:
        summary["timings_from"] = {"file": str(args.measured), "environment": measured_env}
    if errs.size:
        summary.update(within_10pct=float((np.abs(errs) <= 0.10).mean()), median_abs_rel_err=float(np.median(np.abs(errs))),
                       mean_rel_err=float(errs.mean()))

    def draw(fig):
        ax = fig.add_subplot()
        measured = [r for r in rows if "rel_err" in r]
        if measured:
            ax.loglog([r["measured_ms"] for r in measured], [r["predicted_ms"] for r in measured], "o")
            lo, hi = min(r["measured_ms"] for r in measured), max(r["measured_ms"] for r in measured)
            for f, style in ((1.0, "-"), (1.1, ":"), (0.9, ":")):
                ax.plot([lo, hi], [lo * f, hi * f], style, color="grey")
            ax.set_xlabel("measured ms")
        else:
            ax.semilogy(range(len(rows)), [r["predicted_ms"] for r in rows], "o")
            ax.set_xlabel("held-out layer (dry run: predictions only)")
        ax.set_ylabel("predicted ms")

    text = (f"{summary.get('within_10pct', float('nan')):.0%} of {summary['measured']} held-out layers within ±10% "
            f"(median |error| {summary.get('median_abs_rel_err', float('nan')):.1%})." if errs.size
            else f"Dry run: {len(rows)} held-out layers, predictions only.")
    write_outputs(args.out, "Cost-model accuracy on held-out layers", {"summary": summary, "layers": rows}, draw, text)
    print(text)


if __name__ == "__main__":
    main()
