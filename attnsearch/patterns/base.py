"""Shared machinery of the pattern library: block layout, parameter checks, the Pattern record.

Every pattern is exact under the block-rounding rule of docs/design.md: block (bq, bk) is kept iff at least one
token pair (i ∈ bq, j ∈ bk) is kept. None of them builds an N×N tensor: a block's video tokens form
one contiguous run of video indices (text sits wholly before or after the video), so band patterns
reduce to interval arithmetic per block pair, and frame-aware patterns to arithmetic per pair of
(block ∩ frame) segments — at most nb + F of them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import cached_property, lru_cache
from typing import Any, Callable

import torch

from ..geometry import Geometry, check_block_size


class PatternError(ValueError):
    """A pattern name or parameter is unknown or out of range; the message names the field."""


@dataclass(frozen=True)
class BlockLayout:
    """Per-block view of a geometry at one block size (all tensors int64 / bool on CPU).

    ``v_lo``/``v_hi``: first/last video index of the block's video tokens (``v_hi < v_lo`` when the
    block holds no video). ``has_text``: the block holds at least one text token.
    ``seg_*``: the (block ∩ frame) segments in block order: owning block, frame, first/last spatial
    index.
    """

    geometry: Geometry
    block_size: int
    num_blocks: int
    v_lo: torch.Tensor
    v_hi: torch.Tensor
    has_text: torch.Tensor
    seg_block: torch.Tensor
    seg_frame: torch.Tensor
    seg_p_lo: torch.Tensor
    seg_p_hi: torch.Tensor

    @property
    def has_video(self) -> torch.Tensor:
        return self.v_hi >= self.v_lo

    # Pair quantities shared by every candidate of a geometry: computed once per cached layout.
    @cached_property
    def offset_range(self) -> tuple[torch.Tensor, torch.Tensor]:
        """[nb, nb] bounds of v_i − v_j over i ∈ bq, j ∈ bk; every integer in between is attained."""
        return self.v_lo[:, None] - self.v_hi[None, :], self.v_hi[:, None] - self.v_lo[None, :]

    @cached_property
    def video_pairs(self) -> torch.Tensor:
        """[nb, nb] bool: both blocks hold video tokens."""
        return self.has_video[:, None] & self.has_video[None, :]

    @cached_property
    def segment_pairs(self) -> tuple[torch.Tensor, torch.Tensor]:
        """[nseg, nseg] frame distance |f_i − f_j| and smallest |p_i − p_j| between two segments."""
        f, p_lo, p_hi = self.seg_frame, self.seg_p_lo, self.seg_p_hi
        d = (f[:, None] - f[None, :]).abs()
        gap = torch.clamp(torch.maximum(p_lo[None, :] - p_hi[:, None], p_lo[:, None] - p_hi[None, :]), min=0)
        return d, gap


@lru_cache(maxsize=64)
def block_layout(geometry: Geometry, block_size: int) -> BlockLayout:
    check_block_size(block_size)
    n, bs = geometry.num_tokens, block_size
    nb = math.ceil(n / bs)
    start = torch.arange(nb, dtype=torch.int64) * bs
    stop = torch.clamp(start + bs, max=n)  # exclusive
    vs, nv = geometry.video_start, geometry.video_tokens
    v_lo = torch.clamp(start, min=vs) - vs
    v_hi = torch.clamp(stop, max=vs + nv) - 1 - vs
    text_lo, text_hi = (0, geometry.text_tokens) if geometry.text_position == "prefix" else (nv, n)
    has_text = (start < text_hi) & (stop > text_lo)

    s = geometry.frame_size
    has_video = v_hi >= v_lo
    f_lo = torch.where(has_video, v_lo // s, 0)
    f_hi = torch.where(has_video, v_hi // s, -1)
    counts = f_hi - f_lo + 1
    seg_block = torch.repeat_interleave(torch.arange(nb), counts)
    first_seg = torch.cumsum(counts, 0) - counts
    seg_frame = f_lo[seg_block] + torch.arange(seg_block.numel()) - first_seg[seg_block]
    seg_p_lo = torch.maximum(v_lo[seg_block], seg_frame * s) - seg_frame * s
    seg_p_hi = torch.minimum(v_hi[seg_block], seg_frame * s + s - 1) - seg_frame * s
    return BlockLayout(geometry, bs, nb, v_lo, v_hi, has_text, seg_block, seg_frame, seg_p_lo, seg_p_hi)


def band_width(rows: float, width: int) -> int:
    """w = ceil(rows · W) tokens: the half-width of a diagonal band of ``rows`` frame rows."""
    return math.ceil(rows * width)


def reduce_segments(seg_mask: torch.Tensor, layout: BlockLayout) -> torch.Tensor:
    """OR a [nseg, nseg] segment-pair mask into the [nb, nb] block mask."""
    nb, idx = layout.num_blocks, layout.seg_block
    rows = torch.zeros(nb, seg_mask.shape[1], dtype=torch.int32).index_add_(0, idx, seg_mask.to(torch.int32))
    out = torch.zeros(nb, nb, dtype=torch.int32).index_add_(1, idx, rows)
    return out > 0


def keep_text(mask: torch.Tensor, layout: BlockLayout) -> torch.Tensor:
    """Text rows and text columns are kept by every pattern but skip."""
    mask[layout.has_text, :] = True
    mask[:, layout.has_text] = True
    return mask


# --- parameter checks: each names the offending field ------------------------------------------


def check_keys(pattern: str, params: dict[str, Any], allowed: set[str], required: set[str]) -> None:
    if not isinstance(params, dict):
        raise PatternError(f"{pattern}: params must be an object, got {type(params).__name__}")
    unknown = sorted(set(params) - allowed)
    if unknown:
        raise PatternError(f"{pattern}: unknown parameter(s) {', '.join(unknown)} (allowed: {sorted(allowed) or 'none'})")
    missing = sorted(required - set(params))
    if missing:
        raise PatternError(f"{pattern}: missing parameter(s) {', '.join(missing)}")


def check_number(pattern: str, key: str, value: Any, *, lo: float, hi: float = math.inf,
                 lo_open: bool = False) -> float:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if ok:
        ok = (value > lo if lo_open else value >= lo) and value <= hi
    if not ok:
        lo_s = f"({lo}" if lo_open else f"[{lo}"
        hi_s = f"{hi}]" if math.isfinite(hi) else "∞)"
        raise PatternError(f"{pattern}.{key} must be a number in {lo_s}, {hi_s}, got {value!r}")
    return float(value)


def check_int(pattern: str, key: str, value: Any, *, lo: int, hi: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
        raise PatternError(f"{pattern}.{key} must be an integer in [{lo}, {hi}], got {value!r}")
    return value


def check_bool(pattern: str, key: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise PatternError(f"{pattern}.{key} must be true or false, got {value!r}")
    return value


@dataclass(frozen=True)
class Pattern:
    """One mask family.

    ``normalize(params, geometry, block_size)`` checks the parameters and returns them complete
    (defaults filled in, canonical types). ``build(params, layout)`` returns the video part of the
    [nb, nb] block mask for normalized params; text rows/columns are added by ``block_mask``.
    ``grid(geometry, block_size)`` is the default candidate grid (data-independent families).
    """

    name: str
    summary: str
    normalize: Callable[[dict[str, Any], Geometry, int], dict[str, Any]]
    build: Callable[[dict[str, Any], BlockLayout], torch.Tensor]
    grid: Callable[[Geometry, int], list[dict[str, Any]]] = field(default=lambda g, b: [])
    keeps_text: bool = True
