"""Load balance of the hopper kernel's persistent grid, on the CPU: the largest program's share of
the work over the mean share (1.0 = perfect), for the runtime's mixed-family layers, with a static
stride (program p runs tiles p, p + P, ...) and with ``hopper_kernel.schedule`` (list scheduling by
kept blocks) over the launch's work order, plain head order and the default (items longer than
``block_tables.BIG_ITEM`` × the mean first). Cost of a tile: its kept blocks + ``TILE_OVERHEAD``;
P = 132 (H100 SMs). Layers: issue 6's two shapes, and three with text tokens, whose query blocks keep
every key block: CogVideoX-5B and -2B (48 and 30 heads, 13 × 30 × 45 + 226 tokens) and HunyuanVideo
at 544 × 960 (24 heads, 33 × 34 × 60 + 256).

    .venv/bin/python benchmarks/tile_balance.py      # writes reports/kernel/tile_balance.md
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from attnsearch import Geometry  # noqa: E402
from attnsearch.bench import mixed_layer_plan  # noqa: E402
from attnsearch.runtime.block_tables import build_block_tables, work_order  # noqa: E402
from attnsearch.runtime.hopper_kernel import TILE_OVERHEAD, schedule  # noqa: E402

PROGRAMS = 132


def imbalance(loads: torch.Tensor) -> float:
    return float(loads.max() / loads.mean())


LAYERS = ((12, Geometry(21, 30, 52)), (40, Geometry(21, 60, 60)), (48, Geometry(13, 30, 45, 226)),
          (30, Geometry(13, 30, 45, 226)), (24, Geometry(33, 34, 60, 256)))


def listed(tables, work: torch.Tensor) -> float:
    cost = tables.counts.flatten()[work.long()].double() + TILE_OVERHEAD
    return imbalance(torch.stack([cost[torch.tensor(t, dtype=torch.long)].sum() if t else torch.tensor(0.0)
                                  for t in schedule(tables.counts, work, 1, PROGRAMS)]))


def main() -> None:
    rows = ["| layer (1, H, N) | text tokens | density | tiles | static stride | list, plain head order | "
            "list, longest items first (default) |", "|---|---|---|---|---|---|---|"]
    for heads, geom in LAYERS:
        for target in (0.05, 0.1, 0.25, 0.5):
            lp = mixed_layer_plan(geom, heads, 128, target)
            tables = build_block_tables(lp, "cpu")
            work = tables.launches[0].work
            cost = tables.counts.flatten()[work.long()].double() + TILE_OVERHEAD
            static = torch.stack([cost[p::PROGRAMS].sum() for p in range(PROGRAMS)])
            plain = work_order(tables.launches[0].heads, tables.counts, "head", big_item=float("inf"))
            rows.append(f"| {heads}, {geom.num_tokens} | {geom.text_tokens} | {lp.density:.3f} | {work.numel()} | "
                        f"{imbalance(static):.3f} | {listed(tables, plain):.3f} | {listed(tables, work):.3f} |")
    text = "# Persistent-grid load balance (max / mean program load, 132 programs)\n\n" + "\n".join(rows) + "\n"
    out = Path(__file__).resolve().parents[1] / "reports" / "kernel" / "tile_balance.md"
    out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
