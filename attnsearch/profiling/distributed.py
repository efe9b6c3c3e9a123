"""Sharded profiling under torchrun: each rank profiles a share of the steps and writes a shard;
rank 0 gathers every rank's per-call results and writes the merged profile.

    torchrun --nproc-per-node 4 -m attnsearch profile --model ... --out profiles/wan.parquet

Steps are dealt round-robin (rank r takes steps r, r + K, …), so early (noisy) and late steps
spread evenly. Sampling is seeded per (seed, step, layer) and the merge joins per-call results in
(step, layer) order, so the merged profile equals a single-process run with the same seed.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Callable

import torch
import torch.distributed as dist

from .profile_check import check_steps_complete
from .profile_io import Profile, ProfileSettings
from .profiler import finish_profile, profile_calls


def world() -> tuple[int, int]:
    """(rank, world size) from torchrun's environment; (0, 1) outside it."""
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


def is_distributed() -> bool:
    return world()[1] > 1


def shard_steps(num_steps: int, rank: int, size: int) -> list[int]:
    return list(range(rank, num_steps, size))


def shard_path(out: Path, rank: int, size: int) -> Path:
    return out.with_name(f"{out.stem}.rank{rank}-of-{size}{out.suffix}")


def profile_sharded(spec, num_steps: int, settings: ProfileSettings, out: Path,
                    on_call: Callable[[int, int], None] | None = None) -> Profile | None:
    """Profile this rank's steps, write its shard, and on rank 0 return the merged profile."""
    rank, size = world()
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    if torch.cuda.is_available():
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", rank)))
    dist.init_process_group(backend)
    try:
        started = time.perf_counter()
        parts = profile_calls(spec, shard_steps(num_steps, rank, size), settings, on_call)
        if parts:
            finish_profile(parts, spec, time.perf_counter() - started, num_steps).save(shard_path(out, rank, size))
        gathered: list | None = [None] * size if rank == 0 else None
        dist.gather_object(parts, gathered, dst=0)
        if rank != 0:
            return None
        merged = [p for rank_parts in gathered for p in rank_parts]
        return finish_profile(merged, spec, time.perf_counter() - started, num_steps)
    finally:
        dist.destroy_process_group()


def merge_shards(paths: list[Path]) -> Profile:
    """Join shard files (any order) into one profile. The table is exact; the stored maps are
    float16, so their step averages can differ from a single-process run in the last bit. The
    shards together must hold every step 0..S−1 (a missing shard is an error naming its steps)."""
    parts = [Profile.load(p) for p in paths]
    first = parts[0]
    for p, path in zip(parts[1:], paths[1:]):
        if p.model != first.model:
            raise ValueError(f"{path}: model {p.model} differs from {paths[0]}'s {first.model}")
    steps = [set(p.table["step"].unique()) for p in parts]
    for i in range(len(parts)):
        for j in range(i + 1, len(parts)):
            if steps[i] & steps[j]:
                raise ValueError(f"{paths[i]} and {paths[j]} both hold step(s) {sorted(steps[i] & steps[j])}")
    parts.sort(key=lambda p: int(p.table["step"].min()))
    merged = Profile.concat(parts)
    check_steps_complete(merged.table, f"the merge of {len(paths)} shard(s)")
    merged.model = dict(first.model)
    merged.prompts = first.prompts
    return merged
