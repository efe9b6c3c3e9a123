"""Energy-decay heads: attention shrinks spatially as frame distance grows (Radial Attention).

Li et al., "Radial Attention: O(n log n) Sparse Attention with Energy Decay for Long Video
Generation" (2025, arXiv:2506.19853). With frame distance d = |f_i − f_j|: d = 0 keeps the whole
frame; d ≥ 1 keeps |p_i − p_j| < c with c = decay·S / 2^floor(log2 d). When c drops below the
block size the band cannot shrink further in blocks, so instead a block-wide band is kept on every
ceil(B/c)-th frame — compute density still halves with each octave of d, as in the paper's code.
``sink`` also keeps all of frame 0 for every query.
"""

from __future__ import annotations

from typing import Any

import torch

from ..geometry import Geometry
from .base import BlockLayout, Pattern, check_bool, check_keys, check_number, reduce_segments

DEFAULT_DECAY = (1.0, 0.5, 0.25, 0.125, 0.0625)


def normalize(params: dict[str, Any], geometry: Geometry, block_size: int) -> dict[str, Any]:
    check_keys("energy_decay", params, {"decay", "sink"}, {"decay"})
    decay = check_number("energy_decay", "decay", params["decay"], lo=0.0, hi=1.0, lo_open=True)
    return {"decay": decay, "sink": check_bool("energy_decay", "sink", params.get("sink", False))}


def build(params: dict[str, Any], layout: BlockLayout) -> torch.Tensor:
    geom, bs = layout.geometry, layout.block_size
    d, gap = layout.segment_pairs
    # Everything that depends on the frame distance alone, as tables over d ∈ [0, F).
    dist = torch.arange(geom.frames, dtype=torch.int64)
    octave = torch.tensor([max(x.bit_length() - 1, 0) for x in range(geom.frames)], dtype=torch.float64)
    c = params["decay"] * geom.frame_size / torch.pow(2.0, octave)           # band half-width
    stride = torch.ceil(bs / c).to(torch.int64)
    wide = c >= bs
    limit = torch.where(wide, c, torch.full_like(c, float(bs)))              # keep iff gap < limit
    on_frame = wide | (dist % stride == 0)                                   # strided frames when c < B
    limit = torch.where(on_frame, limit, torch.zeros_like(limit))
    limit[0] = float("inf")                                                  # d = 0 keeps the frame
    keep = gap < limit[d]
    if params["sink"]:
        keep |= (layout.seg_frame == 0)[None, :]
    return reduce_segments(keep, layout)


def grid(geometry: Geometry, block_size: int) -> list[dict[str, Any]]:
    if geometry.frames < 2:
        return []
    return [{"decay": d, "sink": s} for d in DEFAULT_DECAY for s in (False, True)]


ENERGY_DECAY = Pattern("energy_decay", "Radial Attention: band of width decay·S/2^⌊log2 d⌋", normalize, build, grid)


if __name__ == "__main__":
    from . import show

    show("energy_decay", {"decay": 0.5})
