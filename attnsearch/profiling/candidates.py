"""The candidate grid a profile measures, and the block masks of every candidate.

Data-independent families (diagonal, multi_diagonal, energy_decay) take their grid from the
pattern modules and their masks depend only on (geometry, block size): they are built once and
shared by every head, layer and step. vertical_stripe is data-dependent: which key blocks are the
stripes is a property of the head, so its candidates are the top-k key blocks by measured column
mass, built per head from the profile's own sample.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import numpy as np
import torch

from ..geometry import Geometry
from ..patterns import PATTERNS, PatternError, block_layout, block_mask, normalize_params, params_key

DEFAULT_STRIPE_TOP_K = (1, 2, 4, 8, 16, 32)
DEFAULT_STRIPE_ROWS = (0.0, 1.0)
#: Families measured by default: the four structured ones plus the two ends of the scale.
DEFAULT_FAMILIES = ("dense", "diagonal", "multi_diagonal", "vertical_stripe", "energy_decay", "skip")


#: Largest stripe count and band width (in frames) a grid may ask for; more means nothing at any size.
MAX_STRIPE_TOP_K = 4096
MAX_STRIPE_ROWS = 1e6


def _kind(value: Any) -> str:
    return {list: "a list", dict: "an object", str: "a string"}.get(type(value), type(value).__name__)


def _numbers(value: Any, where: str, *, integer: bool) -> tuple:
    """``value`` as a tuple of finite numbers (integers with ``integer``); PatternError naming ``where``."""
    import math

    if not isinstance(value, (list, tuple)):
        raise PatternError(f"{where} must be a list of numbers, got {_kind(value)}")
    out = []
    for v in value:
        ok = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
        if ok and integer:
            ok = float(v).is_integer()
        if not ok:
            raise PatternError(f"{where} must hold {'integers' if integer else 'finite numbers'}, got {v!r}")
        out.append(int(v) if integer else float(v))
    return tuple(out)


@dataclass(frozen=True)
class CandidateGrid:
    """What a profile measures. ``fixed`` lists explicit params per data-independent family
    (None: the family's default grid for the geometry); vertical_stripe candidates are the
    top-k key blocks for each k in ``stripe_top_k``, with each band width in ``stripe_rows``."""

    families: tuple[str, ...] = DEFAULT_FAMILIES
    fixed: tuple[tuple[str, str], ...] = ()  # (family, JSON list of params) overrides
    stripe_top_k: tuple[int, ...] = DEFAULT_STRIPE_TOP_K
    stripe_rows: tuple[float, ...] = DEFAULT_STRIPE_ROWS

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CandidateGrid:
        """``{"families": [...], "diagonal": [{"rows": 1}, ...], "vertical_stripe": {"top_k": [...],
        "rows": [...]}}`` — the form the CLI's ``--grid FILE.json`` takes."""
        if not isinstance(data, dict):
            raise PatternError(f"grid must be a JSON object, got {_kind(data)}")
        families = data.get("families", list(DEFAULT_FAMILIES))
        if not isinstance(families, (list, tuple)) or not all(isinstance(n, str) for n in families):
            raise PatternError("grid.families must be a list of pattern names")
        families = tuple(families)
        for name in families:
            if name not in PATTERNS:
                raise PatternError(f"grid.families: unknown pattern {name!r} (known: {', '.join(PATTERNS)})")
        fixed = []
        for name, value in data.items():
            if name in ("families", "vertical_stripe"):
                continue
            if name not in PATTERNS:
                raise PatternError(f"grid: unknown key {name!r}")
            if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
                raise PatternError(f"grid.{name} must be a list of params objects")
            fixed.append((name, json.dumps(value)))
        stripe = data.get("vertical_stripe", {})
        if not isinstance(stripe, dict):
            raise PatternError(f"grid.vertical_stripe must be an object with top_k and rows, got {_kind(stripe)}")
        top_k = _numbers(stripe.get("top_k", DEFAULT_STRIPE_TOP_K), "grid.vertical_stripe.top_k", integer=True)
        if any(not 1 <= k <= MAX_STRIPE_TOP_K for k in top_k):
            raise PatternError(f"grid.vertical_stripe.top_k must hold integers in [1, {MAX_STRIPE_TOP_K}]")
        rows = _numbers(stripe.get("rows", DEFAULT_STRIPE_ROWS), "grid.vertical_stripe.rows", integer=False)
        if any(not 0 <= r <= MAX_STRIPE_ROWS for r in rows):
            raise PatternError(f"grid.vertical_stripe.rows must hold numbers in [0, {MAX_STRIPE_ROWS}]")
        return cls(families, tuple(fixed), top_k, rows)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"families": list(self.families)}
        out.update({name: json.loads(value) for name, value in self.fixed})
        out["vertical_stripe"] = {"top_k": list(self.stripe_top_k), "rows": list(self.stripe_rows)}
        return out

    def params_for(self, family: str, geometry: Geometry, block_size: int) -> list[dict[str, Any]]:
        """Normalized params of a data-independent family's candidates."""
        override = dict(self.fixed).get(family)
        raw = json.loads(override) if override is not None else PATTERNS[family].grid(geometry, block_size)
        return [normalize_params(family, p, geometry, block_size) for p in raw]


@dataclass(frozen=True)
class StaticCandidates:
    """The data-independent candidates of one (geometry, block size, grid): names, params and the
    stacked masks [C, nb, nb]."""

    patterns: tuple[str, ...]
    params: tuple[str, ...]  # canonical JSON
    masks: torch.Tensor = field(repr=False)
    density: torch.Tensor = field(repr=False)  # [C] float64


@lru_cache(maxsize=16)
def static_candidates(geometry: Geometry, block_size: int, grid: CandidateGrid) -> StaticCandidates:
    names, params, masks = [], [], []
    for family in grid.families:
        if family == "vertical_stripe":
            continue
        seen: list[torch.Tensor] = []
        for p in grid.params_for(family, geometry, block_size):
            mask = block_mask(family, p, geometry, block_size)
            # On small geometries several params round to the same blocks: the runtime cannot tell
            # them apart, so only the first (the grid lists the narrowest first) is measured.
            if any(torch.equal(mask, other) for other in seen):
                continue
            seen.append(mask)
            names.append(family)
            params.append(params_key(p))
            masks.append(mask)
    stacked = torch.stack(masks) if masks else torch.zeros(0, 0, 0, dtype=torch.bool)
    return StaticCandidates(tuple(names), tuple(params), stacked, stacked.flatten(1).double().mean(1))


@lru_cache(maxsize=16)
def stripe_base(geometry: Geometry, block_size: int, rows: float) -> torch.Tensor:
    """vertical_stripe with no key blocks: own block, band, text. Stripes are OR-ed in per head."""
    return block_mask("vertical_stripe", {"key_blocks": [], "rows": rows}, geometry, block_size)


@lru_cache(maxsize=16)
def stripe_gain(geometry: Geometry, block_size: int, rows: float) -> tuple[int, np.ndarray]:
    """(blocks the stripe-free base keeps, float64 [nb]: the blocks a stripe on each key block adds,
    i.e. the rows the base does not already keep there). A vertical_stripe mask on distinct key
    blocks K keeps ``base + Σ_{b∈K} gain[b]`` blocks, so its exact density needs no mask."""
    base = stripe_base(geometry, block_size, rows)
    gain = (base.shape[0] - base.sum(0)).numpy().astype(np.float64)
    gain.flags.writeable = False
    return int(base.sum()), gain


@dataclass(frozen=True)
class StripeCandidates:
    """vertical_stripe candidates of a chunk of heads, built on the profiling device.

    ``ids[h]``: (pattern, params JSON) per candidate; ``masks``: [h, C, nb, nb] bool;
    ``density``: [h, C]. Candidate order: for each band width, for each k (narrowest first)."""

    ids: list[list[tuple[str, str]]]
    masks: torch.Tensor = field(repr=False)
    density: torch.Tensor = field(repr=False)


def stripe_candidates(column_mass: torch.Tensor, geometry: Geometry, block_size: int,
                      grid: CandidateGrid) -> StripeCandidates:
    """vertical_stripe candidates of several heads from their mean column mass per key block.

    column_mass: [h, nb] on the profiling device. For each k of the grid, the stripes are the k key
    blocks of highest mass; text blocks are kept anyway, so they are never chosen, and k beyond the
    remaining blocks is dropped. No host loop over heads: masks are built by broadcasting.
    """
    heads, device = column_mass.shape[0], column_mass.device
    layout = block_layout(geometry, block_size)
    nb = layout.num_blocks
    free = int((~layout.has_text).sum())
    top_k = sorted({k for k in grid.stripe_top_k if k <= free}) if "vertical_stripe" in grid.families else []
    if not top_k or not grid.stripe_rows:
        empty = torch.zeros(heads, 0, nb, nb, dtype=torch.bool, device=device)
        return StripeCandidates([[] for _ in range(heads)], empty, torch.zeros(heads, 0, device=device))
    mass = column_mass.detach().double().clone()
    mass[:, layout.has_text.to(device)] = -torch.inf
    order = torch.argsort(mass, dim=1, descending=True, stable=True)
    rank = torch.empty_like(order).scatter_(1, order, torch.arange(nb, device=device).expand(heads, -1))
    chosen = rank[:, None, :] < torch.tensor(top_k, device=device)[None, :, None]          # [h, K, nb]
    bases = torch.stack([stripe_base(geometry, block_size, r) for r in grid.stripe_rows]).to(device)
    masks = (bases[None, :, None] | chosen[:, None, :, None, :]).flatten(1, 2)            # [h, R·K, nb, nb]
    top = order[:, : max(top_k)].cpu().tolist()
    ids = [[("vertical_stripe", params_key({"key_blocks": sorted(top[h][:k]), "rows": float(r)}))
            for r in grid.stripe_rows for k in top_k] for h in range(heads)]
    return StripeCandidates(ids, masks, masks.flatten(2).double().mean(2))


def candidate_label(pattern: str, params: dict[str, Any]) -> str:
    """A step-independent identity for a candidate: vertical_stripe is named by its count of key
    blocks and band (the blocks themselves may move between steps), the rest by their params."""
    if pattern == "vertical_stripe":
        return f"vertical_stripe(top_k={len(params['key_blocks'])}, rows={params['rows']:g})"
    if not params:
        return pattern
    inner = ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in sorted(params.items()))
    return f"{pattern}({inner})"


__all__ = ["CandidateGrid", "StaticCandidates", "StripeCandidates", "candidate_label", "static_candidates", "stripe_candidates"]
