"""Load balance of the hopper kernel's persistent grid, on the CPU: the largest program's share of
the work over the mean share (1.0 = perfect), for the runtime's mixed-family layers, with a static
stride (program p runs tiles p, p + P, ...) and with ``hopper_kernel.schedule`` (list scheduling by
kept blocks). Cost of a tile: its kept blocks + ``TILE_OVERHEAD``; P = 132 (H100 SMs).

    .venv/bin/python benchmarks/tile_balance.py      # writes reports/kernel/tile_balance.md
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from attnsearch import Geometry  # noqa: E402
from attnsearch.bench import mixed_layer_plan  # noqa: E402
from attnsearch.runtime.block_tables import build_block_tables  # noqa: E402
from attnsearch.runtime.hopper_kernel import TILE_OVERHEAD, schedule  # noqa: E402

PROGRAMS = 132


def imbalance(loads: torch.Tensor) -> float:
    return float(loads.max() / loads.mean())


def main() -> None:
    rows = ["| layer (1, H, N, 128) | density | tiles | static stride | list-scheduled |", "|---|---|---|---|---|"]
    for heads, geom in ((12, Geometry(21, 30, 52)), (40, Geometry(21, 60, 60))):
        for target in (0.05, 0.1, 0.25, 0.5):
            lp = mixed_layer_plan(geom, heads, 128, target)
            tables = build_block_tables(lp, "cpu")
            work = tables.launches[0].work
            cost = tables.counts.flatten()[work.long()].double() + TILE_OVERHEAD
            static = torch.stack([cost[p::PROGRAMS].sum() for p in range(PROGRAMS)])
            listed = torch.stack([cost[torch.tensor(t, dtype=torch.long)].sum() if t else torch.tensor(0.0)
                                  for t in schedule(tables.counts, work, 1, PROGRAMS)])
            rows.append(f"| {heads}, {geom.num_tokens} | {lp.density:.3f} | {work.numel()} | "
                        f"{imbalance(static):.3f} | {imbalance(listed):.3f} |")
    text = "# Persistent-grid load balance (max / mean program load, 132 programs)\n\n" + "\n".join(rows) + "\n"
    out = Path(__file__).resolve().parents[1] / "reports" / "kernel" / "tile_balance.md"
    out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
