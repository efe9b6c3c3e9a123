"""Layer plans at a chosen density: each mask family's parameters found by bisection on exact block
masks, and layers mixing the families (what calibration and benchmarks time)."""

from __future__ import annotations

import math
from typing import Callable, Sequence

from ..geometry import Geometry
from ..patterns import SPARSE_FAMILIES, block_mask, density
from ..plan import LayerPlan


def _bisect(make: Callable[[float], dict], lo: float, hi: float, pattern: str, geometry: Geometry,
            block_size: int, target: float, iters: int = 24) -> tuple[dict, float]:
    """Params of ``pattern`` from a monotone (increasing-density) one-number family, closest to target."""
    best, best_d = None, math.inf
    for _ in range(iters):
        mid = (lo + hi) / 2
        params = make(mid)
        d = density(block_mask(pattern, params, geometry, block_size))
        if abs(d - target) < abs(best_d - target):
            best, best_d = params, d
        lo, hi = (mid, hi) if d < target else (lo, mid)
    return best, best_d


def family_params(pattern: str, geometry: Geometry, block_size: int, target: float) -> tuple[dict, float]:
    """Parameters of ``pattern`` whose block-mask density is closest to ``target``, and that density."""
    g = geometry
    if pattern == "diagonal":
        return _bisect(lambda r: {"rows": r}, 0.0, float(g.frames * g.height), pattern, g, block_size, target)
    if pattern == "multi_diagonal":
        # Few neighbour frames with a wide band, or all frames with a thin one: take the closest.
        options = [_bisect(lambda r, f=f: {"rows": r, "frames": f}, 0.0, float(g.height), pattern, g,
                           block_size, target) for f in sorted({1, 2, max(1, g.frames // 4), g.frames - 1})
                   if f <= g.frames - 1]
        if not options:  # a single frame: multi_diagonal is the diagonal band
            return _bisect(lambda r: {"rows": r, "frames": 0}, 0.0, float(g.height), pattern, g, block_size,
                           target)
        return min(options, key=lambda o: abs(o[1] - target))
    if pattern == "energy_decay":
        options = [_bisect(lambda dec, s=s: {"decay": max(dec, 1e-6), "sink": s}, 0.0, 1.0, pattern, g,
                           block_size, target) for s in (False, True)]
        return min(options, key=lambda o: abs(o[1] - target))
    if pattern == "vertical_stripe":
        # A band worth ~half the target, the rest in evenly spaced global key blocks.
        nb = g.num_blocks(block_size)
        band, _ = _bisect(lambda r: {"rows": r}, 0.0, float(g.frames * g.height), "diagonal", g, block_size,
                          target / 2)
        best, best_d = None, math.inf
        lo, hi = 0, nb
        while lo <= hi:
            m = (lo + hi) // 2
            params = {"key_blocks": sorted({round(i * nb / m) % nb for i in range(m)}) if m else [],
                      "rows": band["rows"]}
            d = density(block_mask(pattern, params, g, block_size))
            if abs(d - target) < abs(best_d - target):
                best, best_d = params, d
            lo, hi = (m + 1, hi) if d < target else (lo, m - 1)
        return best, best_d
    if pattern in ("dense", "skip"):
        return {}, 1.0 if pattern == "dense" else 0.0
    raise ValueError(f"pattern: unknown {pattern!r}")


def mixed_layer_plan(geometry: Geometry, num_heads: int, block_size: int, target: float,
                     families: Sequence[str] = SPARSE_FAMILIES) -> LayerPlan:
    """A layer whose heads cycle through ``families``, each at the density closest to ``target``."""
    params = {f: family_params(f, geometry, block_size, target)[0] for f in families}
    heads = [(families[h % len(families)], params[families[h % len(families)]]) for h in range(num_heads)]
    return LayerPlan.from_heads(heads, geometry, block_size)


__all__ = ["family_params", "mixed_layer_plan"]
