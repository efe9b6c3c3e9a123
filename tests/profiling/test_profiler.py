"""The profiler's statistics against a brute-force computation from the full attention matrix."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from attnsearch import Geometry, block_mask, profile_tensors
from attnsearch.patterns import expand_block_mask
from attnsearch.profiling.candidates import CandidateGrid
from attnsearch.profiling.profile_io import Profile, ProfileError
from attnsearch.profiling.profiler import sample_queries


def brute_stats(q, k, v, geom, rows, pattern, params, block):
    """recall / rel_err of one candidate for batch element 0, head h, from full N×N softmax."""
    n, d = q.shape[-2:]
    p = torch.softmax(q.double() @ k.double().transpose(-1, -2) / math.sqrt(d), dim=-1)  # [H, N, N]
    keep = expand_block_mask(block_mask(pattern, params, geom, block), n, block)          # [N, N]
    p_rows, keep_rows = p[:, rows], keep[rows].double()
    recall = (p_rows * keep_rows).sum(-1).mean(-1)
    o_full = p_rows @ v.double()
    masked = p_rows * keep_rows
    o_cand = (masked / masked.sum(-1, keepdim=True)) @ v.double()
    rel = (o_cand - o_full).flatten(1).norm(dim=1) / o_full.flatten(1).norm(dim=1)
    return recall, rel


@pytest.mark.slow
@pytest.mark.parametrize("geom,block", [
    (Geometry(4, 8, 16, 10, "prefix"), 64),
    (Geometry(3, 10, 9, 37, "suffix"), 64),
    (Geometry(2, 16, 12, 0, "prefix"), 128),
])
def test_statistics_match_brute_force(geom, block):
    torch.manual_seed(1)
    h, n, d = 3, geom.num_tokens, 32
    # Structured logits (random low-rank + positional bump) so candidates differ in recall.
    q, k, v = torch.randn(1, h, n, d), torch.randn(1, h, n, d), torch.randn(1, h, n, d)
    prof = profile_tensors(q, k, v, geom, block_size=block, queries=48, seed=3, layer=2, step=1)
    rows = sample_queries(n, 48, 3, 1, 2)
    t = prof.table
    assert set(t["step"]) == {1} and set(t["layer"]) == {2} and set(t["head"]) == set(range(h))
    checked = 0
    for _, row in t.iterrows():
        params = json.loads(row["params"])
        recall, rel = brute_stats(q[0], k[0], v[0], geom, rows, row["pattern"], params, block)
        if row["pattern"] == "skip":
            assert row["recall"] == 0 and row["rel_err"] == pytest.approx(1.0)
            continue
        assert row["recall"] == pytest.approx(recall[row["head"]].item(), abs=1e-5)
        assert row["rel_err"] == pytest.approx(rel[row["head"]].item(), abs=1e-4)
        mask = block_mask(row["pattern"], params, geom, block)
        assert row["density"] == pytest.approx(mask.float().mean().item())
        checked += 1
    assert checked > 20


def test_vertical_stripe_picks_the_planted_global_blocks():
    geom = Geometry(1, 640, 1)  # 1-D, 10 blocks of 64
    torch.manual_seed(0)
    n, d = geom.num_tokens, 16
    q = torch.randn(1, 1, n, d)
    k = torch.randn(1, 1, n, d) * 0.1
    # Keys of blocks 3 and 7 align with a direction every query shares: global tokens.
    q[..., 0] = 6.0
    k[0, 0, 3 * 64:4 * 64, 0] = 4.0
    k[0, 0, 7 * 64:8 * 64, 0] = 4.0
    prof = profile_tensors(q, k, torch.randn(1, 1, n, d), geom, block_size=64, queries=64)
    vs = prof.table[prof.table["pattern"] == "vertical_stripe"]
    top2 = vs[vs["candidate"] == "vertical_stripe(top_k=2, rows=0)"].iloc[0]
    assert json.loads(top2["params"])["key_blocks"] == [3, 7]
    assert top2["recall"] > 0.95


def test_batch_and_gqa_are_averaged_consistently():
    geom = Geometry(2, 8, 8, 5, "prefix")
    torch.manual_seed(2)
    n = geom.num_tokens
    q = torch.randn(2, 4, n, 16)
    k, v = torch.randn(2, 2, n, 16), torch.randn(2, 2, n, 16)
    prof = profile_tensors(q, k, v, geom, block_size=64, queries=32)
    one = profile_tensors(q[:1], k[:1], v[:1], geom, block_size=64, queries=32)
    two = profile_tensors(q[1:], k[1:], v[1:], geom, block_size=64, queries=32)
    static = prof.table["pattern"] != "vertical_stripe"
    mean = (one.table.loc[static, "recall"].to_numpy() + two.table.loc[static, "recall"].to_numpy()) / 2
    np.testing.assert_allclose(prof.table.loc[static, "recall"].to_numpy(), mean, atol=1e-6)
    # GQA: query heads 0 and 1 share key head 0.
    ref = profile_tensors(q[:, :1], k[:, :1], v[:, :1], geom, block_size=64, queries=32)
    np.testing.assert_allclose(prof.table[prof.table["head"] == 0]["recall"].to_numpy(),
                               ref.table["recall"].to_numpy(), atol=1e-6)


def test_sampling_is_stratified_and_seeded():
    a = sample_queries(10_000, 100, seed=7, step=0, layer=3)
    assert torch.equal(a, sample_queries(10_000, 100, seed=7, step=0, layer=3))
    assert not torch.equal(a, sample_queries(10_000, 100, seed=7, step=0, layer=4))
    assert torch.equal(a // 100, torch.arange(100))  # one row per stratum of 100
    assert torch.equal(sample_queries(50, 100, 0, 0, 0), torch.arange(50))


def test_head_chunking_does_not_change_results():
    geom = Geometry(2, 8, 8)
    torch.manual_seed(3)
    q, k, v = (torch.randn(1, 5, geom.num_tokens, 16) for _ in range(3))
    big = profile_tensors(q, k, v, geom, block_size=64, queries=16)
    small = profile_tensors(q, k, v, geom, block_size=64, queries=16, chunk_bytes=1)
    np.testing.assert_allclose(big.table["recall"], small.table["recall"], atol=1e-6)
    np.testing.assert_allclose(big.table["rel_err"], small.table["rel_err"], atol=1e-5)


def test_parquet_roundtrip_and_bad_files(tmp_path):
    geom = Geometry(2, 8, 8, 3, "suffix")
    q, k, v = (torch.randn(1, 2, geom.num_tokens, 16) for _ in range(3))
    prof = profile_tensors(q, k, v, geom, block_size=64, queries=16, grid=CandidateGrid(stripe_top_k=(1, 2)))
    path = prof.save(tmp_path / "p.parquet") or tmp_path / "p.parquet"
    back = Profile.load(path)
    assert back.table.equals(prof.table)
    assert back.geometry == geom and back.settings == prof.settings
    for key, m in prof.maps.items():
        torch.testing.assert_close(back.maps[key], m, atol=1e-3, rtol=1e-2)
    assert [p.name for p in tmp_path.iterdir()] == ["p.parquet"]  # no temp file left behind

    (tmp_path / "junk.parquet").write_text("not parquet")
    with pytest.raises(ProfileError, match="not a Parquet file"):
        Profile.load(tmp_path / "junk.parquet")
    import pandas as pd

    pd.DataFrame({"a": [1]}).to_parquet(tmp_path / "other.parquet")
    with pytest.raises(ProfileError, match="not an attnsearch profile"):
        Profile.load(tmp_path / "other.parquet")


def test_shape_errors_are_named():
    geom = Geometry(2, 8, 8)
    q = torch.randn(1, 2, geom.num_tokens + 1, 16)
    with pytest.raises(ValueError, match="does not match geometry"):
        profile_tensors(q, q, q, geom)
    with pytest.raises(ProfileError, match=r"\[batch, heads, N, D\]"):
        profile_tensors(q[0], q[0], q[0], geom)


def test_attention_shape_is_recorded(tmp_path):
    geom = Geometry(2, 8, 8)
    q = torch.randn(2, 4, geom.num_tokens, 32, dtype=torch.float16)
    k = torch.randn(2, 2, geom.num_tokens, 32, dtype=torch.float16)
    prof = profile_tensors(q, k, k, geom, block_size=64, queries=8)
    want = {"batch": 2, "heads": 4, "kv_heads": 2, "head_dim": 32, "dtype": "float16"}
    assert prof.attention == want
    prof.save(tmp_path / "p.parquet")
    assert Profile.load(tmp_path / "p.parquet").attention == want
