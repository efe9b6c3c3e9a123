"""The profile's error under residual reuse against brute force: exact at an exact step, the drift
of each candidate's residual from its span's exact step after it (same sampled rows), its own error
before the first exact step; and what a profile of reuse refuses."""

from __future__ import annotations

import json
import math

import pytest
import torch

from attnsearch import Geometry, block_mask, profile_tensors
from attnsearch.patterns import expand_block_mask
from attnsearch.profiling.profile_io import Profile, ProfileError, ProfileSettings
from attnsearch.profiling.profiler import sample_queries
from attnsearch.profiling.reuse import ReuseTracker

GEOM = Geometry(3, 8, 16, 0)  # N = 384
H, D, Q, B = 2, 32, 40, 64


def residual_rows(q, k, v, rows, pattern, params):
    """candidate − exact output on ``rows`` [H, Q, D] of batch element 0, and the exact one, in fp64."""
    n = q.shape[-2]
    p = torch.softmax(q[0].double() @ k[0].double().transpose(-1, -2) / math.sqrt(D), dim=-1)[:, rows]
    keep = expand_block_mask(block_mask(pattern, params, GEOM, B), n, B)[rows].double()
    full = p @ v[0].double()
    masked = p * keep
    return (masked / masked.sum(-1, keepdim=True)) @ v[0].double() - full, full


def qkv(seed):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(1, H, GEOM.num_tokens, D, generator=g) for _ in range(3)]


def test_reuse_error_is_the_drift_of_each_candidates_residual():
    settings = ProfileSettings(queries=Q, seed=5, block_size=B, residual_steps=(1,))
    tracker = ReuseTracker(settings.residual_steps)
    inputs = {0: qkv(0), 1: qkv(1), 2: qkv(2), 3: qkv(1)}
    t = {s: profile_tensors(*x, GEOM, layer=0, step=s, settings=settings, reuse=tracker).table for s, x in inputs.items()}
    assert (t[0]["rel_err_reuse"] == t[0]["rel_err"]).all()          # before the first exact step: no reuse
    assert (t[1]["rel_err_reuse"] == 0).all()                         # the exact step
    assert t[3]["rel_err_reuse"].max() < 1e-5                         # the exact step's inputs again: exact
    assert (t[3][t[3]["density"] < 0.99]["rel_err"] > 1e-3).all()      # which the masks alone are not
    rows = sample_queries(GEOM.num_tokens, Q, 5, 1, 0)                 # the span's rows: its exact step's
    checked = 0
    for _, row in t[2].iterrows():
        if row["pattern"] in ("skip", "dense", "vertical_stripe"):
            continue
        params = json.loads(row["params"])
        r1, _ = residual_rows(*inputs[1], rows, row["pattern"], params)
        r2, full2 = residual_rows(*inputs[2], rows, row["pattern"], params)
        h = row["head"]
        want = ((r2[h] - r1[h]).norm() / full2[h].norm()).item()
        assert row["rel_err_reuse"] == pytest.approx(want, rel=1e-3, abs=1e-5)
        checked += 1
    assert checked > 10
    stripes = t[2][t[2]["pattern"] == "vertical_stripe"]
    assert set(stripes["params"]) <= set(t[1][t[1]["pattern"] == "vertical_stripe"]["params"])  # the span's stripes


def test_a_profile_of_reuse_round_trips_and_is_refused_where_it_cannot_be_measured(tmp_path):
    settings = ProfileSettings(queries=Q, block_size=B, residual_steps=(0,))
    tracker = ReuseTracker(settings.residual_steps)
    prof = Profile.concat([profile_tensors(*qkv(s), GEOM, layer=0, step=s, settings=settings, reuse=tracker)
                           for s in range(2)])
    prof.save(tmp_path / "p.parquet")
    back = Profile.load(tmp_path / "p.parquet")
    assert back.settings.residual_steps == (0,) and "rel_err_reuse" in back.table.columns
    assert ProfileSettings.from_dict(ProfileSettings().to_dict()).residual_steps == ()
    assert "residual_steps" not in ProfileSettings().to_dict()  # profiles without reuse read as before
    with pytest.raises(ProfileError, match="residual reuse is measured along a trajectory"):
        profile_tensors(*qkv(0), GEOM, layer=0, step=0, settings=settings)
    with pytest.raises(ProfileError, match="the exact step 0 of its span, which was not profiled"):
        profile_tensors(*qkv(0), GEOM, layer=0, step=1, settings=settings, reuse=ReuseTracker((0,)))
    with pytest.raises(ProfileError, match="residual_steps must be distinct step numbers"):
        ProfileSettings(residual_steps=(2, 2))
