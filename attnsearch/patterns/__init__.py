"""The pattern library: every mask family of docs/design.md as an exact [nb, nb] block mask.

    >>> from attnsearch import Geometry, block_mask
    >>> geom = Geometry(frames=13, height=9, width=14, text_tokens=37)
    >>> block_mask("diagonal", {"rows": 2}, geom, block_size=64).shape
    torch.Size([27, 27])

Run a family's module (``python -m attnsearch.patterns.energy_decay``) to see its mask.
"""

from __future__ import annotations

import json
from typing import Any

import torch

from ..geometry import Geometry
from .base import BlockLayout, Pattern, PatternError, band_width, block_layout, keep_text
from .diagonal import DIAGONAL
from .energy_decay import ENERGY_DECAY
from .multi_diagonal import MULTI_DIAGONAL
from .trivial import DENSE, SKIP
from .vertical_stripe import VERTICAL_STRIPE

PATTERNS: dict[str, Pattern] = {
    p.name: p for p in (DENSE, DIAGONAL, MULTI_DIAGONAL, VERTICAL_STRIPE, ENERGY_DECAY, SKIP)
}
#: The four structured families a head can be classified into (besides ``dense``).
SPARSE_FAMILIES = ("diagonal", "multi_diagonal", "vertical_stripe", "energy_decay")


def get_pattern(name: str) -> Pattern:
    try:
        return PATTERNS[name]
    except KeyError:
        raise PatternError(f"unknown pattern {name!r} (known: {', '.join(PATTERNS)})") from None


def normalize_params(name: str, params: dict[str, Any] | None, geometry: Geometry, block_size: int) -> dict[str, Any]:
    """Check ``params`` for pattern ``name`` and return them complete; raises PatternError."""
    return get_pattern(name).normalize(dict(params or {}), geometry, block_size)


def block_mask(name: str, params: dict[str, Any] | None, geometry: Geometry, block_size: int) -> torch.Tensor:
    """Exact block mask of one candidate: bool [nb, nb], nb = ceil(N / block_size), on CPU.

    Block (bq, bk) is True iff some token pair (i ∈ bq, j ∈ bk) is kept by the pattern; text rows
    and columns are kept by every pattern but ``skip``. Never materialises an N×N tensor.
    """
    pattern = get_pattern(name)
    norm = pattern.normalize(dict(params or {}), geometry, block_size)
    layout = block_layout(geometry, block_size)
    mask = pattern.build(norm, layout)
    if pattern.keeps_text:
        keep_text(mask, layout)  # build() returns a fresh tensor, so in-place is safe
    return mask


def density(mask: torch.Tensor) -> float:
    """Kept blocks / all blocks of the tile grid."""
    return mask.float().mean().item()


def params_key(params: dict[str, Any]) -> str:
    """Canonical JSON of a params dict: how profiles and plans store it."""
    return json.dumps(params, sort_keys=True, separators=(",", ":"))


def expand_block_mask(mask: torch.Tensor, num_tokens: int, block_size: int) -> torch.Tensor:
    """[..., nb, nb] block mask → [..., N, N] token mask. Only for references at small N."""
    idx = torch.arange(num_tokens, device=mask.device) // block_size
    return mask[..., idx[:, None], idx[None, :]]


def show(name: str, params: dict[str, Any], geometry: Geometry | None = None, block_size: int = 64) -> None:
    """Print a block mask as text: the tiny visual main of every family module."""
    geom = geometry or Geometry(frames=6, height=8, width=16, text_tokens=20)
    mask = block_mask(name, params, geom, block_size)
    print(f"{name} {params} on {geom}, B={block_size}: density {density(mask):.3f}")
    for row in mask.tolist():
        print("".join("█" if x else "·" for x in row))


__all__ = [
    "PATTERNS", "SPARSE_FAMILIES", "BlockLayout", "Pattern", "PatternError", "band_width", "block_layout",
    "block_mask", "density", "expand_block_mask", "get_pattern", "normalize_params", "params_key", "show",
]
