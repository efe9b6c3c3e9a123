"""The two ends of the scale: ``dense`` keeps every block, ``skip`` computes nothing (zero output)."""

from __future__ import annotations

from typing import Any

import torch

from ..geometry import Geometry
from .base import BlockLayout, Pattern, check_keys


def _no_params(name: str):
    def normalize(params: dict[str, Any], geometry: Geometry, block_size: int) -> dict[str, Any]:
        check_keys(name, params, set(), set())
        return {}

    return normalize


def _build_dense(params: dict[str, Any], layout: BlockLayout) -> torch.Tensor:
    return torch.ones(layout.num_blocks, layout.num_blocks, dtype=torch.bool)


def _build_skip(params: dict[str, Any], layout: BlockLayout) -> torch.Tensor:
    return torch.zeros(layout.num_blocks, layout.num_blocks, dtype=torch.bool)


DENSE = Pattern("dense", "every block", _no_params("dense"), _build_dense, lambda g, b: [{}])
SKIP = Pattern("skip", "no block: the head's output is zero", _no_params("skip"), _build_skip,
               lambda g, b: [{}], keeps_text=False)
