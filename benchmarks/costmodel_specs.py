"""Write the calibration specs (grid + holdout layers) to benchmarks/costmodel_specs.json.

    .venv/bin/python benchmarks/costmodel_specs.py

Finding every layer's parameters by bisection on exact block masks takes about a minute of CPU;
doing it here keeps that minute off the GPU machine's clock (benchmarks/costmodel_calibrate.py
reads the file).
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from attnsearch.calibrate import default_grid  # noqa: E402

OUT = Path(__file__).with_name("costmodel_specs.json")

if __name__ == "__main__":
    specs = default_grid(holdout=True, seed=0)
    OUT.write_text(json.dumps(specs) + "\n")
    print(f"{len(specs)} specs → {OUT}")
    print(dict(Counter((s["kind"], s["role"]) for s in specs)))
