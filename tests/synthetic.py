"""A small real profile for search tests: the profiler on random tensors with one planted stripe."""

from __future__ import annotations

from pathlib import Path

import torch

from attnsearch import Geometry, profile_tensors
from attnsearch.profiling.profile_io import Profile


def small_profile(folder: Path, precisions: tuple[str, ...] = ("native",)) -> tuple[Path, Profile]:
    """3 steps × 2 layers × 4 heads, N = 532, B = 64, head_dim 32, saved as folder/small.parquet
    (``precisions`` with "fp8": the FP8 errors too)."""
    geom = Geometry(4, 8, 16, 20)
    gen = torch.Generator().manual_seed(0)
    parts = []
    for step in range(3):
        for layer in range(2):
            q, k, v = (torch.randn(1, 4, geom.num_tokens, 32, generator=gen) for _ in range(3))
            k[:, :, 40:44] += 3 * q[:, :, :1].mean(2, keepdim=True)  # a stripe, so recall varies by head
            parts.append(profile_tensors(q, k, v, geom, layer=layer, step=step, block_size=64, queries=48,
                                         precisions=precisions))
    prof = Profile.concat(parts)
    prof.model = {"name": "random", "fingerprint": "r0"}
    path = Path(folder) / "small.parquet"
    prof.save(path)
    return path, prof
