"""Vertical-stripe heads: every query attends to a few global key blocks.

A query keeps the listed key blocks, its own block and, when ``rows`` > 0, the diagonal band of
``rows`` frame rows. Defined on blocks directly, so the key blocks are ids at the plan's block
size. The stripes are the attention sinks of Xiao et al. (StreamingLLM, arXiv:2309.17453) and the
"vertical" lines of MInference (Jiang et al., 2024, arXiv:2407.02490); which blocks they are is a
property of the head, so the profiler picks them from measured column mass.
"""

from __future__ import annotations

from typing import Any

import torch

from ..geometry import Geometry
from .base import BlockLayout, Pattern, PatternError, check_keys, check_number
from .diagonal import band_mask


def normalize(params: dict[str, Any], geometry: Geometry, block_size: int) -> dict[str, Any]:
    check_keys("vertical_stripe", params, {"key_blocks", "rows"}, {"key_blocks"})
    nb = geometry.num_blocks(block_size)
    blocks = params["key_blocks"]
    if not isinstance(blocks, (list, tuple)) or not all(
        isinstance(b, int) and not isinstance(b, bool) and 0 <= b < nb for b in blocks
    ):
        raise PatternError(f"vertical_stripe.key_blocks must be a list of block ids in [0, {nb}), got {blocks!r}")
    if len(set(blocks)) != len(blocks):
        raise PatternError(f"vertical_stripe.key_blocks lists a block twice: {blocks!r}")
    rows = check_number("vertical_stripe", "rows", params.get("rows", 0), lo=0.0)
    return {"key_blocks": sorted(blocks), "rows": rows}


def build(params: dict[str, Any], layout: BlockLayout) -> torch.Tensor:
    nb = layout.num_blocks
    mask = band_mask(params["rows"], layout) if params["rows"] > 0 else torch.zeros(nb, nb, dtype=torch.bool)
    mask[:, params["key_blocks"]] = True
    mask.fill_diagonal_(True)
    return mask


VERTICAL_STRIPE = Pattern("vertical_stripe", "listed key blocks + own block (+ band)", normalize, build)


if __name__ == "__main__":
    from . import show

    show("vertical_stripe", {"key_blocks": [0, 5], "rows": 0})
