"""Diagonal (local window) heads: each video token attends to its neighbours in video order.

A query keeps keys with |v_i − v_j| ≤ w, w = ceil(rows·W): the same and adjacent rows of its own
frame. Sparse VideoGen (Xi et al., 2025, arXiv:2502.01776) calls these spatial heads; Sparse-vDiT
(Chen et al., 2025, arXiv:2506.03065) the diagonal pattern.
"""

from __future__ import annotations

from typing import Any

import torch

from ..geometry import Geometry
from .base import BlockLayout, Pattern, band_width, check_keys, check_number

DEFAULT_ROWS = (0.5, 1.0, 2.0, 4.0, 8.0, 16.0)


def normalize(params: dict[str, Any], geometry: Geometry, block_size: int) -> dict[str, Any]:
    check_keys("diagonal", params, {"rows"}, {"rows"})
    return {"rows": check_number("diagonal", "rows", params["rows"], lo=0.0)}


def band_mask(rows: float, layout: BlockLayout) -> torch.Tensor:
    """[nb, nb]: some pair of the two blocks is within w of each other in video order."""
    w = band_width(rows, layout.geometry.width)
    lo, hi = layout.offset_range
    return (lo <= w) & (hi >= -w) & layout.video_pairs


def build(params: dict[str, Any], layout: BlockLayout) -> torch.Tensor:
    return band_mask(params["rows"], layout)


def grid(geometry: Geometry, block_size: int) -> list[dict[str, Any]]:
    if geometry.width == 1:
        # 1-D (text) geometry: a "row" is one token, so frame-row widths would all round to the
        # adjacent block; measure bands of half a block up to 8 blocks instead.
        return [{"rows": block_size * f} for f in (0.5, 1.0, 2.0, 4.0, 8.0) if block_size * f < geometry.height]
    return [{"rows": r} for r in DEFAULT_ROWS if r <= geometry.height * geometry.frames]


DIAGONAL = Pattern("diagonal", "band |v_i − v_j| ≤ ceil(rows·W)", normalize, build, grid)


if __name__ == "__main__":
    from . import show

    show("diagonal", {"rows": 2})
