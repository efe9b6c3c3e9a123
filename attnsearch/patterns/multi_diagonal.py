"""Multi-diagonal (temporal) heads: a token attends to the same place in other frames.

A query keeps keys with |(v_i − v_j) − m·S| ≤ w for some m ∈ [−k, k], w = ceil(rows·W), k =
``frames`` (all F − 1 other frames when None): parallel bands one frame apart. Sparse VideoGen
(arXiv:2502.01776) calls these temporal heads; Sparse-vDiT (arXiv:2506.03065) multi-diagonal.
"""

from __future__ import annotations

from typing import Any

import torch

from ..geometry import Geometry
from .base import BlockLayout, Pattern, band_width, check_int, check_keys, check_number

DEFAULT_ROWS = (0.5, 1.0, 2.0, 4.0)
DEFAULT_FRAMES = (1, 2, 4, None)


def normalize(params: dict[str, Any], geometry: Geometry, block_size: int) -> dict[str, Any]:
    check_keys("multi_diagonal", params, {"rows", "frames"}, {"rows"})
    rows = check_number("multi_diagonal", "rows", params["rows"], lo=0.0)
    frames = params.get("frames")
    if frames is not None:
        frames = check_int("multi_diagonal", "frames", frames, lo=0, hi=geometry.frames - 1)
    return {"rows": rows, "frames": frames}


def build(params: dict[str, Any], layout: BlockLayout) -> torch.Tensor:
    geom = layout.geometry
    s = geom.frame_size
    k = geom.frames - 1 if params["frames"] is None else params["frames"]
    w = band_width(params["rows"], geom.width)
    lo, hi = layout.offset_range
    # Is there an m with m·S ∈ [lo − w, hi + w] and |m| ≤ k?  ceil(a/S) = −floor(−a/S).
    m_min = torch.clamp(-torch.div(-(lo - w), s, rounding_mode="floor"), min=-k)
    m_max = torch.clamp(torch.div(hi + w, s, rounding_mode="floor"), max=k)
    return (m_min <= m_max) & layout.video_pairs


def grid(geometry: Geometry, block_size: int) -> list[dict[str, Any]]:
    frames = sorted({f for f in DEFAULT_FRAMES if f is not None and f < geometry.frames - 1})
    out = []
    for rows in DEFAULT_ROWS:
        out += [{"rows": rows, "frames": f} for f in frames]
        if geometry.frames > 1:
            out.append({"rows": rows, "frames": None})
    return out


MULTI_DIAGONAL = Pattern("multi_diagonal", "bands |Δv − m·S| ≤ ceil(rows·W), |m| ≤ frames", normalize, build, grid)


if __name__ == "__main__":
    from . import show

    show("multi_diagonal", {"rows": 1, "frames": 2})
