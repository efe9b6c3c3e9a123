"""A small real profile for search tests: the profiler on random tensors with one planted stripe."""

from __future__ import annotations

from pathlib import Path

import torch

from attnsearch import Geometry, profile_tensors
from attnsearch.profiling.profile_io import Profile


def small_profile(folder: Path, precisions: tuple[str, ...] = ("native",),
                  geometry: Geometry | None = None) -> tuple[Path, Profile]:
    """3 steps × 2 layers × 4 heads, N = 532 (or ``geometry``'s), B = 64, head_dim 32, saved as
    folder/small.parquet (``precisions`` with "fp8": the FP8 errors too)."""
    geom = geometry or Geometry(4, 8, 16, 20)
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


def large_profile(folder: Path, steps: int = 2, seed: int = 1, precisions: tuple[str, ...] = ("native",),
                  fingerprint: str = "r1", residual_steps: tuple[int, ...] = ()) -> tuple[Path, Profile]:
    """``steps`` × 2 layers × 4 heads of random attention at N = 8,192 (B = 64, head_dim 32): large
    enough that sparse layers beat dense ones in the H100 table; saved as folder/large.parquet.
    ``residual_steps``: also the errors under reuse there (each step's inputs the previous step's
    plus a little noise, so residuals drift slowly, as along a denoising trajectory)."""
    from attnsearch.profiling.profile_io import ProfileSettings
    from attnsearch.profiling.reuse import ReuseTracker

    geom = Geometry(8, 32, 32)
    gen = torch.Generator().manual_seed(seed)
    settings = ProfileSettings(queries=32, block_size=64, precisions=precisions, residual_steps=residual_steps)
    tracker = ReuseTracker(residual_steps) if residual_steps else None
    layers = [[torch.randn(1, 4, geom.num_tokens, 32, generator=gen) for _ in range(3)] for _ in range(2)]
    parts = []
    for step in range(steps):
        for layer in range(2):
            if step:
                layers[layer] = [t + 0.1 * torch.randn(t.shape, generator=gen) for t in layers[layer]]
            parts.append(profile_tensors(*layers[layer], geom, layer=layer, step=step, settings=settings,
                                         reuse=tracker))
    prof = Profile.concat(parts)
    prof.model = {"name": "random", "fingerprint": fingerprint}
    path = Path(folder) / "large.parquet"
    prof.save(path)
    return path, prof


def table_without_host(folder: Path):
    """The shipped H100 table without host dispatch costs (a table calibrated before they were
    measured), saved as folder/without-host.json; its path."""
    import dataclasses

    from attnsearch.costmodel.table import DEFAULT_TABLE, load_hardware

    shipped = load_hardware(DEFAULT_TABLE)
    path = Path(folder) / "without-host.json"
    dataclasses.replace(shipped, host=None, fit={k: v for k, v in shipped.fit.items()
                                                 if not k.startswith("host.")}).save(path)
    return str(path)


def native_only_table(folder: Path | None = None):
    """The shipped H100 table without its FP8 variants and quantization pass (a table calibrated on
    a GPU without FP8); saved as folder/native-only.json and its path returned when ``folder`` is given."""
    import dataclasses

    from attnsearch.costmodel.table import DEFAULT_TABLE, load_hardware

    shipped = load_hardware(DEFAULT_TABLE)
    table = dataclasses.replace(shipped, sparse={k: v for k, v in shipped.sparse.items() if not k.endswith("_fp8")},
                                quantize=None, fit={k: v for k, v in shipped.fit.items()
                                                    if not k.endswith("_fp8") and k != "quantize"})
    if folder is None:
        return table
    path = Path(folder) / "native-only.json"
    table.save(path)
    return str(path)
