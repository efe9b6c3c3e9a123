"""Fixtures every test folder shares."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def random_profile():
    """``build(path, steps=2, layers=2, heads=2, head_dim=64) -> path``: a real profile of random
    attention at geometry 2×4×8 (N = 64, block size 64) written to ``path``."""
    import torch

    from attnsearch import Geometry, profile_tensors
    from attnsearch.profiling.profile_io import Profile

    def build(path: Path, steps: int = 2, layers: int = 2, heads: int = 2, head_dim: int = 64) -> Path:
        geom = Geometry(2, 4, 8)
        gen = torch.Generator().manual_seed(2)
        parts = []
        for step in range(steps):
            for layer in range(layers):
                q, k, v = (torch.randn(1, heads, geom.num_tokens, head_dim, generator=gen) for _ in range(3))
                parts.append(profile_tensors(q, k, v, geom, layer=layer, step=step, block_size=64, queries=16))
        prof = Profile.concat(parts)
        prof.model = {"name": "random", "fingerprint": "f0"}
        prof.save(path)
        return Path(path)

    return build
