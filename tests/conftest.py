"""Shared test setup.

Layout: one folder per package folder (``tests/profiling`` tests ``attnsearch/profiling`` …); the
top-level modules' tests (plan, geometry, atomic_io, jsondata, metrics, telemetry) sit here beside
the helpers every folder imports by name: ``reference`` (brute-force references from the
definitions), ``synthetic`` (a small real profile) and ``tiny_models`` (a tiny user model file).
The folders have no ``__init__.py``: pytest puts this folder and each test's folder on the
import path, so test file names must be unique across folders.

Markers: ``slow`` on every test over 5 s on 2 CPU cores (``-m "not slow"`` leaves them out; the
full suite runs them), ``gpu`` on those that need CUDA.
"""

from __future__ import annotations

import ctypes
import gc
import os
from pathlib import Path

import pytest


#: Modules holding a test far longer than any other (the shipped mini-vdit weights' held-out
#: generation: about a CPU-minute). They are collected first, so that under
#: ``make test`` (``--dist worksteal``) one worker starts there while the other takes the rest,
#: instead of a worker starting one late and running it alone at the end.
LONGEST_FIRST = ("tests/models/test_mini_vdit_weights.py",)


def pytest_collection_modifyitems(config, items) -> None:
    """The LONGEST_FIRST modules' tests first; every other test keeps its place."""
    items.sort(key=lambda item: item.nodeid.split("::")[0] not in LONGEST_FIRST)


#: glibc's mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3


def keep_freed_memory() -> None:
    """Let glibc keep freed memory for the next allocation instead of handing it back to the kernel.

    By default glibc maps every block over 32 MiB on its own and unmaps it when freed, and returns
    the free top of its heap once it exceeds a threshold, so a loop over tensors of a few MiB and
    more (a model's activations) page-faults every page of them in again, zero-filled by the
    kernel, on every iteration: on a small VM that is a fifth of a CPU forward's time. Nothing a
    test checks depends on it (no test reads the process's resident memory). Without glibc: no-op.
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return
    libc.mallopt(_M_MMAP_THRESHOLD, 1 << 30)
    libc.mallopt(_M_TRIM_THRESHOLD, 1 << 31)


def pytest_configure(config) -> None:
    """Under pytest-xdist each worker gets its share of the cores for torch's intra-op threads:
    two workers with torch's default (every core each) oversubscribe a 2-core machine. Every test
    process keeps its freed memory (``keep_freed_memory``)."""
    keep_freed_memory()
    workers = os.environ.get("PYTEST_XDIST_WORKER_COUNT")
    if workers:
        import torch

        torch.set_num_threads(max(1, (os.cpu_count() or 1) // int(workers)))


def pytest_collection_finish() -> None:
    """Move every object alive after collection (the imported modules of torch, pandas, optuna …,
    a few million) into the collector's permanent generation (``gc.freeze``): a full collection
    then traverses only what the tests allocate, instead of re-walking the imported modules each
    time. Objects are still freed exactly as before; frozen ones are module state that lives for
    the whole process anyway."""
    gc.freeze()


def pytest_unconfigure(config) -> None:
    """Back into the collector before the process ends, so that interpreter shutdown frees them as
    it would have (extension modules such as Triton's check at exit that their objects were)."""
    gc.unfreeze()


#: The tiny Wan pipeline's folder, built by the first test process's first test that asks for it.
_TINY_WAN: dict[str, Path] = {}


@pytest.fixture(scope="module")
def tiny_wan_pipeline(tmp_path_factory) -> Path:
    """A Wan2.1 diffusers pipeline of tiny random components (``tiny_pipelines.build("wan")``:
    tokenizer, UMT5 text encoder, VAE, transformer, scheduler), built once per test process (the
    tests only read it); skips where its extras are missing."""
    pytest.importorskip("diffusers",
                        reason="diffusers is an optional extra (pip install 'attnsearch[diffusers]')")
    pytest.importorskip("tokenizers")
    pytest.importorskip("transformers")
    pytest.importorskip("accelerate", reason="diffusers loads Wan's float32-kept modules through accelerate")
    import tiny_pipelines

    if "wan" not in _TINY_WAN:
        _TINY_WAN["wan"] = tiny_pipelines.build("wan", tmp_path_factory.mktemp("tiny_wan") / "pipe")
    return _TINY_WAN["wan"]


@pytest.fixture(scope="module")
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
