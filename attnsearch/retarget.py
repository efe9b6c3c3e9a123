"""Plans at another geometry: each head's parameters carried from the geometry a plan was searched at
(the source) to the geometry of a call (the target). docs/design.md, "Plans at another geometry".

Every head has a geometry-independent description (:func:`describe`), instantiated at any geometry
the plan can serve (:func:`instantiate`); at the source geometry the instantiated block masks equal
the searched ones exactly.

* ``diagonal.rows``, ``multi_diagonal.rows``, ``vertical_stripe.rows`` (when > 0): frame rows (W
  tokens each), carried as the reach a query gets. Block rounding keeps every block a band touches,
  so what a query attends reaches its own block's end and ceil(w / B) blocks beyond (w = ceil(rows·W)):
  (B − 1)/2 + B·ceil(w / B) tokens on average (:func:`band_reach_rows`). At the same frame width the
  rows are unchanged (the same mask); at another the band keeps the block count whose reach in rows
  is nearest the source's (:class:`Band`), so where a block is a smaller share of the frame than at
  the source the band widens rather than keeping a sliver of what the search measured. A band wider
  than the whole target video is the whole video: ``rows`` is capped at the target's frames × height
  (the same mask).
* ``multi_diagonal.frames``: frames, the same number; capped at the target's frames − 1 (then every
  other frame, as ``None`` means).
* ``energy_decay``: ``decay`` is a share of the frame and ``sink`` means frame 0: unchanged.
* ``vertical_stripe.key_blocks`` are block ids at the source. Their description is the video
  positions those blocks cover (:class:`Region`: boxes of frames × rows × columns of the source
  grid). At the target, frame 0 stays frame 0 and frames 1.. F−1 map proportionally onto 1.. F'−1
  (all onto frame 0 when F' = 1), rows and columns map proportionally; a target token is covered
  when its cell overlaps a covered source cell, and the target key blocks are the blocks holding a
  covered token. Text positions need no mapping: every pattern but ``skip`` keeps the text rows and
  columns, so a text prefix or suffix of any length is served.
* ``dense``, ``skip``: nothing to carry.

A target the plan cannot serve raises :class:`~attnsearch.plan_checks.PlanError` naming the field
(:func:`check_target`): text on the other side of the video, a 1-D sequence plan at a video
geometry or the reverse (a "row" would change meaning), more tokens than the runtime indexes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

from .geometry import Geometry
from .patterns import band_width, block_layout, normalize_params
from .plan_checks import MAX_TOKENS, PlanError

#: Box of a region: (first frame, last frame, first row, last row, first column, last column), inclusive.
Box = tuple[int, int, int, int, int, int]


def is_sequence(geometry: Geometry) -> bool:
    """A 1-D (text-model) geometry, as :meth:`Geometry.sequence` makes: one frame one token wide."""
    return geometry.frames == 1 and geometry.width == 1


def check_target(source: Geometry, target: Geometry) -> None:
    """Raise PlanError naming the field when a plan searched at ``source`` cannot serve ``target``."""
    if not isinstance(target, Geometry):
        raise PlanError(f"geometry: must be a Geometry, got {type(target).__name__}")
    if target.num_tokens > MAX_TOKENS:
        raise PlanError(f"geometry: {target} holds {target.num_tokens} tokens, more than the runtime's "
                        f"{MAX_TOKENS}")
    if is_sequence(source) != is_sequence(target):
        what = "a 1-D sequence (frames = width = 1)" if is_sequence(source) else f"a video ({source})"
        raise PlanError(f"geometry.width: the plan was searched on {what}; it cannot serve {target}, where a "
                        "band's rows would mean something else")
    if source.text_tokens and target.text_tokens and source.text_position != target.text_position:
        raise PlanError(f"geometry.text_position: the plan was searched with its text as a "
                        f"{source.text_position}, the target has it as a {target.text_position}")


# --- vertical stripes: the video positions their key blocks cover -----------------------------------


def _map_range(lo: int, hi: int, n_src: int, n_dst: int) -> tuple[int, int]:
    """Cells [lo, hi] of n_src equal cells of [0, 1) → the cells of n_dst that overlap them."""
    return lo * n_dst // n_src, -(-(hi + 1) * n_dst // n_src) - 1


def _map_frames(lo: int, hi: int, n_src: int, n_dst: int) -> tuple[int, int]:
    """Frames [lo, hi] of n_src → frames of n_dst: frame 0 stays frame 0, frames 1.. map onto 1..
    proportionally (onto frame 0 when the target has one frame). Always one contiguous range."""
    if hi == 0 or n_dst == 1:
        return 0, 0
    first, last = _map_range(max(lo, 1) - 1, hi - 1, n_src - 1, n_dst - 1)
    return (0 if lo == 0 else first + 1), last + 1


@dataclass(frozen=True)
class Region:
    """Video positions of a grid of ``frames`` × ``height`` × ``width`` cells, as a union of boxes."""

    frames: int
    height: int
    width: int
    boxes: tuple[Box, ...]

    @classmethod
    def of_blocks(cls, key_blocks: list[int], geometry: Geometry, block_size: int) -> Region:
        """The video tokens the key blocks hold at ``geometry`` (their text tokens are always kept)."""
        layout = block_layout(geometry, block_size)
        s, w = geometry.frame_size, geometry.width
        boxes: list[Box] = []
        runs: list[list[int]] = []
        for b in sorted(key_blocks):
            lo, hi = int(layout.v_lo[b]), int(layout.v_hi[b])
            if hi < lo:
                continue  # a text-only block
            if runs and runs[-1][1] + 1 == lo:
                runs[-1][1] = hi
            else:
                runs.append([lo, hi])
        for lo, hi in runs:
            f_lo, f_hi = lo // s, hi // s
            for f in range(f_lo, f_hi + 1):
                p_lo = lo - f * s if f == f_lo else 0
                p_hi = hi - f * s if f == f_hi else s - 1
                if f_lo < f < f_hi:  # whole frames in between: one box for all of them
                    if f == f_lo + 1:
                        boxes.append((f, f_hi - 1, 0, geometry.height - 1, 0, w - 1))
                    continue
                boxes += _frame_boxes(f, p_lo, p_hi, w)
        return cls(geometry.frames, geometry.height, geometry.width, tuple(boxes))

    def mapped(self, frames: int, height: int, width: int) -> Region:
        """The region on another grid: every cell overlapping a covered cell (frame 0 anchored)."""
        boxes = []
        for f0, f1, y0, y1, x0, x1 in self.boxes:
            boxes.append((*_map_frames(f0, f1, self.frames, frames), *_map_range(y0, y1, self.height, height),
                          *_map_range(x0, x1, self.width, width)))
        return Region(frames, height, width, tuple(boxes))

    def blocks(self, geometry: Geometry, block_size: int) -> list[int]:
        """Ids of the blocks at ``geometry`` (whose grid this region is on) that hold a covered token."""
        if (self.frames, self.height, self.width) != (geometry.frames, geometry.height, geometry.width):
            raise ValueError(f"region on a {self.frames}×{self.height}×{self.width} grid, geometry "
                             f"{geometry}")
        nb = geometry.num_blocks(block_size)
        diff = np.zeros(nb + 1, dtype=np.int64)
        s, w = geometry.frame_size, geometry.width
        for f0, f1, y0, y1, x0, x1 in self.boxes:
            starts = (np.arange(f0, f1 + 1)[:, None] * s + np.arange(y0, y1 + 1)[None, :] * w + x0).ravel()
            first = (starts + geometry.video_start) // block_size
            last = (starts + (x1 - x0) + geometry.video_start) // block_size
            np.add.at(diff, first, 1)
            np.add.at(diff, last + 1, -1)
        return [int(b) for b in np.flatnonzero(np.cumsum(diff[:nb]) > 0)]

    def to_dict(self) -> dict[str, Any]:
        return {"grid": [self.frames, self.height, self.width], "boxes": [list(b) for b in self.boxes]}


def _frame_boxes(f: int, p_lo: int, p_hi: int, width: int) -> list[Box]:
    """Spatial indices [p_lo, p_hi] of frame f as at most three boxes (part row, whole rows, part row)."""
    y_lo, x_lo = divmod(p_lo, width)
    y_hi, x_hi = divmod(p_hi, width)
    if y_lo == y_hi:
        return [(f, f, y_lo, y_lo, x_lo, x_hi)]
    boxes = [(f, f, y_lo, y_lo, x_lo, width - 1)]
    if y_hi - y_lo > 1:
        boxes.append((f, f, y_lo + 1, y_hi - 1, 0, width - 1))
    boxes.append((f, f, y_hi, y_hi, 0, x_hi))
    return boxes


# --- bands: the reach their kept blocks give ------------------------------------------------------


def band_reach_rows(rows: float, width: int, block_size: int) -> float:
    """Mean one-sided reach, in frame rows of ``width`` tokens, of the keys a query of the
    block-rounded band of ``rows`` rows attends: its own block's remainder, (B − 1)/2 tokens on
    average, plus the ceil(w / B) whole blocks that a band of w = ceil(rows·W) tokens touches beyond it."""
    return ((block_size - 1) / 2 + block_size * math.ceil(band_width(rows, width) / block_size)) / width


@dataclass(frozen=True)
class Band:
    """A band of ``rows`` frame rows searched at frame width ``width``."""

    rows: float
    width: int

    def rows_at(self, width: int, block_size: int) -> float:
        """``rows`` at frame width ``width``: the same at the same width (the same mask); elsewhere the
        band whose block-rounded reach (:func:`band_reach_rows`) is nearest the source's in rows, with
        its width in the middle of the block count it keeps (w = k·B − B/2), so the repeated bands of a
        multi-diagonal, which no block boundary aligns, reach as far on average."""
        if width == self.width:
            return self.rows
        reach = band_reach_rows(self.rows, self.width, block_size) * width
        k = max(0, round((reach - (block_size - 1) / 2) / block_size))
        w = 0 if k == 0 else k * block_size - block_size // 2
        rows = w / width
        while band_width(rows, width) > w:   # w / W · W may round up past w
            rows = math.nextafter(rows, 0.0)
        return rows


# --- one head ------------------------------------------------------------------------------------


def _has_band(pattern: str, params: Mapping[str, Any]) -> bool:
    rows = params.get("rows")
    return pattern in ("diagonal", "multi_diagonal") or (pattern == "vertical_stripe" and bool(rows))


def describe(pattern: str, params: Mapping[str, Any], geometry: Geometry, block_size: int) -> dict[str, Any]:
    """The geometry-independent description of one head's (normalized) parameters: a band's ``rows``
    become ``band`` (a :class:`Band`), ``vertical_stripe``'s ``key_blocks`` become
    ``region`` (a :class:`Region`); every other parameter is itself."""
    desc = dict(params)
    if _has_band(pattern, params):
        desc["band"] = Band(float(desc.pop("rows")), geometry.width)
    if pattern == "vertical_stripe":
        desc["region"] = Region.of_blocks(desc.pop("key_blocks"), geometry, block_size)
    return desc


def instantiate(pattern: str, description: Mapping[str, Any], geometry: Geometry,
                block_size: int) -> dict[str, Any]:
    """Normalized parameters of a head at ``geometry`` from its :func:`describe` description."""
    params = dict(description)
    if "band" in params:
        params["rows"] = params.pop("band").rows_at(geometry.width, block_size)
    if pattern == "vertical_stripe":
        region = params.pop("region").mapped(geometry.frames, geometry.height, geometry.width)
        params["key_blocks"] = region.blocks(geometry, block_size)
    limit = geometry.frames * geometry.height
    if params.get("rows") is not None and params["rows"] > limit:
        params["rows"] = float(limit)  # a band over the whole video: the same mask
    if pattern == "multi_diagonal" and params.get("frames") is not None:
        params["frames"] = min(params["frames"], geometry.frames - 1)
    return normalize_params(pattern, params, geometry, block_size)


def retarget_params(pattern: str, params: Mapping[str, Any], source: Geometry, target: Geometry,
                    block_size: int) -> dict[str, Any]:
    """One head's parameters at ``target`` (``check_target`` first); unchanged at the source."""
    if target == source:
        return dict(params)
    return instantiate(pattern, describe(pattern, params, source, block_size), target, block_size)


__all__ = ["Band", "Box", "Region", "band_reach_rows", "check_target", "describe", "instantiate", "is_sequence",
           "retarget_params"]
