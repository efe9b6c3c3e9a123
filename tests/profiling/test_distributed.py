"""Sharded profiling: 2 torchrun processes (gloo, CPU) give the single-process profile."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from attnsearch.models import load_model
from attnsearch.profiling.distributed import merge_shards, shard_path, shard_steps
from attnsearch.profiling.profile_io import Profile, ProfileSettings
from attnsearch.profiling.profiler import profile_model


def test_round_robin_shards_cover_every_step_once():
    shards = [shard_steps(7, r, 3) for r in range(3)]
    assert shards == [[0, 3, 6], [1, 4], [2, 5]]


@pytest.mark.slow
def test_torchrun_two_ranks_equal_single_process(tmp_path):
    out = tmp_path / "toy.parquet"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    # --standalone: the ranks meet on a free port of their own, so two runs of this test at once
    # (xdist workers, or two checkouts on one machine) never share a rendezvous.
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           "-m", "attnsearch", "profile", "--queries", "32", "--steps", "3", "--out", str(out)]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    merged = Profile.load(out)

    spec = load_model("toy-vdit")
    single = profile_model(spec, steps=3, settings=ProfileSettings(queries=32, block_size=64))
    single.save(tmp_path / "single.parquet")
    single = Profile.load(tmp_path / "single.parquet")

    assert merged.table.equals(single.table)
    assert merged.model == single.model and merged.settings == single.settings
    assert merged.maps.keys() == single.maps.keys()
    for key in single.maps:
        assert torch.equal(merged.maps[key], single.maps[key]), key

    shards = [shard_path(out, r, 2) for r in range(2)]
    assert all(p.is_file() for p in shards)
    assert sorted(Profile.load(shards[0]).table["step"].unique()) == [0, 2]
    again = merge_shards(shards[::-1])
    assert again.table.equals(single.table)
    for key in single.maps:
        np.testing.assert_allclose(again.maps[key].numpy(), single.maps[key].numpy(), rtol=2e-3, atol=1e-6)
    with pytest.raises(ValueError, match="both hold step"):
        merge_shards([shards[0], shards[0]])
