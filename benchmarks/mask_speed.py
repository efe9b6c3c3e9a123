"""How long building every candidate mask of one head takes at video scale (CPU).

    python benchmarks/mask_speed.py [--out reports/mask_speed.json]

HunyuanVideo 720p × 129 frames: 33 latent frames × 45 × 80 = 118,800 tokens, B = 128 (929 blocks).
"Every candidate of one head" = the default static grid plus the vertical_stripe candidates of
one head (these are the per-head part; the static masks are shared by all heads).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch

from attnsearch import Geometry
from attnsearch.candidates import CandidateGrid, static_candidates, stripe_candidates


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("reports/mask_speed.json"))
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    geom = Geometry(frames=33, height=45, width=80)
    grid = CandidateGrid()
    times, per_head = [], []
    for _ in range(args.repeats):
        static_candidates.cache_clear()
        from attnsearch.candidates import _stripe_base
        from attnsearch.patterns.base import block_layout

        _stripe_base.cache_clear()
        block_layout.cache_clear()
        t0 = time.perf_counter()
        static = static_candidates(geom, 128, grid)
        t1 = time.perf_counter()
        ids = stripe_candidates(torch.rand(1, geom.num_blocks(128)), geom, 128, grid).ids[0]
        t2 = time.perf_counter()
        times.append(t2 - t0)
        per_head.append(t2 - t1)
    result = {
        "geometry": geom.to_dict(), "num_tokens": geom.num_tokens, "block_size": 128,
        "num_blocks": geom.num_blocks(128), "static_candidates": len(static.patterns),
        "stripe_candidates": len(ids), "median_all_s": statistics.median(times),
        "median_stripes_s": statistics.median(per_head), "cpu": platform.processor() or platform.machine(),
        "threads": torch.get_num_threads(), "torch": torch.__version__,
    }
    print(json.dumps(result, indent=1))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
