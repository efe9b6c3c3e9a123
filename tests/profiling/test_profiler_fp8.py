"""The profiler's FP8 error (``rel_err_fp8``) against the FP8 kernel's arithmetic on full N×N logits,
and the precisions setting through the profile file, the merge of shards and classification."""

from __future__ import annotations

import json
import math

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from attnsearch import Geometry, block_mask, profile_tensors
from attnsearch.patterns import expand_block_mask
from attnsearch.profiling.classify import classify
from attnsearch.profiling.distributed import merge_shards
from attnsearch.profiling.profile_io import Profile, ProfileError, ProfileSettings
from attnsearch.profiling.profiler import sample_queries
from attnsearch.runtime.quantize import fp8_attention_rows, fp8_operands, round_probabilities
from reference import exact_fp8_inputs
from test_profile_load_checks import meta_of, refused, rewrite

GEOM = Geometry(4, 8, 16, 10, "prefix")  # N = 522: 9 blocks of 64, the last one partial
FP8 = ("native", "fp8")


def structured_qkv(seed: int, batch: int = 1, heads: int = 3, kv_heads: int = 3, d: int = 32):
    """Random q, k, v with local attention (a shared positional code) and per-row magnitudes that
    differ between blocks, so block scales differ and candidates differ in error."""
    g = torch.Generator().manual_seed(seed)
    n = GEOM.num_tokens
    pos = torch.arange(n, dtype=torch.float32)[:, None] / torch.logspace(0, 2, d // 2)[None]
    code = torch.cat([pos.sin(), pos.cos()], 1) * 1.5
    q = torch.randn(batch, heads, n, d, generator=g) + code
    k = torch.randn(batch, kv_heads, n, d, generator=g) + code
    k = k * (1 + torch.rand(batch, kv_heads, n, 1, generator=g))
    v = torch.randn(batch, kv_heads, n, d, generator=g) * torch.logspace(-1, 1, d)
    return q, k, v


def brute_fp8_err(q, k, v, rows, scale, block):
    """``err(pattern, params)``: rel_err of FP8 kept blocks per head of batch element 0 from full
    masked logits of the whole call's quantized operands, against exact fp64 attention:
    ``kernel``, the FP8 kernel's rows (``fp8_attention_rows``, whose weights are relative to the
    kept keys' maximum), and ``row_max``, the same with weights relative to the maximum over all
    keys (the profiler's); and per head whether every sampled row's maximum lies in a kept block."""
    n = q.shape[-2]
    group = q.shape[1] // k.shape[1]
    qd, kd, vd = fp8_operands(q, k, v, block)
    kd, vd = kd.repeat_interleave(group, 1)[0], vd.repeat_interleave(group, 1)[0]
    s = (qd[0][:, rows].double() @ kd.double().transpose(-1, -2)) * scale           # [H, Q, N]
    kk, vv = k.repeat_interleave(group, 1)[0].double(), v.repeat_interleave(group, 1)[0].double()
    o_full = torch.softmax(q[0][:, rows].double() @ kk.transpose(-1, -2) * scale, -1) @ vv
    ref = o_full.flatten(1).norm(dim=1)

    def err(pattern, params):
        keep = expand_block_mask(block_mask(pattern, params, GEOM, block), n, block)[rows]
        masked = s.masked_fill(~keep, -math.inf)
        kernel = fp8_attention_rows(masked.float(), vd).double()
        p = torch.exp(masked - s.amax(-1, keepdim=True))
        row_max = (round_probabilities(p).double() @ vd.double()) / p.sum(-1, keepdim=True).clamp_min(1e-300)
        max_kept = (masked.amax(-1) == s.amax(-1)).all(-1)
        rel = [(o - o_full).flatten(1).norm(dim=1) / ref for o in (kernel, row_max)]
        return rel[0], rel[1], max_kept

    return err


@pytest.mark.parametrize("kv_heads", [2, 1])
def test_rel_err_fp8_matches_the_kernels_arithmetic_on_full_logits(kv_heads):
    """Equal to the full-logit computation with the profiler's maximum; equal to the emulation's rows
    (``fp8_attention_rows``, maximum over the kept keys) wherever every sampled row's maximum is
    kept, and within the subnormal effect elsewhere (logits here spread over 20-30 nats, so many
    weights fall into e4m3's subnormals)."""
    q, k, v = structured_qkv(1, heads=2, kv_heads=kv_heads)
    prof = profile_tensors(q, k, v, GEOM, block_size=64, queries=48, seed=3, layer=2, step=1, precisions=FP8)
    err = brute_fp8_err(q, k, v, sample_queries(GEOM.num_tokens, 48, 3, 1, 2), 1 / math.sqrt(q.shape[-1]), 64)
    t = prof.table
    assert t["rel_err_fp8"].dtype == np.float64
    both = 0
    for (pattern, params), group in t.groupby(["pattern", "params"]):
        kernel, row_max, max_kept = err(pattern, json.loads(params))
        for h, got in zip(group["head"], group["rel_err_fp8"]):
            assert got == pytest.approx(row_max[h].item(), rel=1e-5, abs=1e-7), (pattern, params, h)
            tight = bool(max_kept[h])
            close = pytest.approx(kernel[h].item(), rel=1e-4 if tight else 3e-2, abs=1e-6)
            assert got == close, (pattern, params, h)
            both += tight
    assert both >= 10
    assert (t.loc[t["pattern"] == "skip", "rel_err_fp8"] == 1.0).all()


def test_the_column_is_added_and_nothing_else_changes():
    q, k, v = structured_qkv(2, batch=2)
    native = profile_tensors(q, k, v, GEOM, block_size=64, queries=32)
    both = profile_tensors(q, k, v, GEOM, block_size=64, queries=32, precisions=FP8)
    assert "rel_err_fp8" not in native.table and native.settings.precisions == ("native",)
    assert list(both.table.columns) == list(native.table.columns) + ["rel_err_fp8"]
    assert both.table.drop(columns="rel_err_fp8").equals(native.table)
    assert both.settings.precisions == FP8
    # Head chunks quantize per head, as the scales are: any chunking gives the same errors.
    small = profile_tensors(q, k, v, GEOM, block_size=64, queries=32, precisions=FP8, chunk_bytes=1)
    np.testing.assert_allclose(small.table["rel_err_fp8"], both.table["rel_err_fp8"], rtol=1e-5, atol=1e-7)


def test_exact_fp8_operands_cost_only_the_rounding_of_small_weights():
    """q, k of ``exact_fp8_inputs`` and V of integers in [−2, 2] (each channel's amax 2: V/scale ∈
    {0, ±224, ±448}, exact): under scale ln 2 every weight is a power of two, exact in e4m3 down to
    2^-15 of the row's maximum, so the FP8 error is the native one but for the rounding of the
    weights below that (rounding V alone would move it by about 3 %)."""
    q, k, _ = exact_fp8_inputs(GEOM.num_tokens, 2, 2, seed=4)
    v = torch.randint(-2, 3, (1, 2, GEOM.num_tokens, 64), generator=torch.Generator().manual_seed(5)).float()
    v[:, :, 0] = 2.0
    t = profile_tensors(q, k, v, GEOM, block_size=64, queries=64, scale=math.log(2), precisions=FP8).table
    assert t["rel_err"].max() > 0.5  # candidates with real errors
    np.testing.assert_allclose(t["rel_err_fp8"], t["rel_err"], rtol=0, atol=5e-4)
    whole = t[t["recall"] > 1 - 1e-6]
    assert len(whole) >= 8 and (whole["rel_err_fp8"] < 5e-5).all()


def test_fp8_error_exceeds_native_on_random_inputs():
    g = torch.Generator().manual_seed(6)
    q, k, v = (torch.randn(1, 3, GEOM.num_tokens, 32, generator=g) for _ in range(3))
    t = profile_tensors(q, k, v, GEOM, block_size=64, queries=32, precisions=FP8).table
    dense = t[t["pattern"] == "dense"]
    assert (dense["rel_err"] < 1e-5).all()
    assert (dense["rel_err_fp8"] > 0.01).all() and (dense["rel_err_fp8"] < 0.15).all()


def test_per_prompt_fp8_errors_are_each_prompts_own():
    q, k, v = structured_qkv(7, batch=2)
    both = profile_tensors(q, k, v, GEOM, block_size=64, queries=32, precisions=FP8, prompts=2)
    assert [c for c in both.table.columns if c.startswith("prompt")] == [
        "prompt0.recall", "prompt0.rel_err", "prompt0.rel_err_fp8",
        "prompt1.recall", "prompt1.rel_err", "prompt1.rel_err_fp8"]
    static = both.table["pattern"] != "vertical_stripe"  # stripes come from batch element 0
    for i in range(2):
        own = profile_tensors(q[i:i + 1], k[i:i + 1], v[i:i + 1], GEOM, block_size=64, queries=32,
                              precisions=FP8)
        np.testing.assert_allclose(both.table.loc[static, f"prompt{i}.rel_err_fp8"],
                                   own.table.loc[static, "rel_err_fp8"], rtol=1e-6)
    mean = both.table[["prompt0.rel_err_fp8", "prompt1.rel_err_fp8"]].mean(axis=1)
    np.testing.assert_allclose(both.table["rel_err_fp8"], mean, rtol=1e-6)
    # The prompt's own table carries its FP8 error; classification ignores it.
    both.prompts = ("a", "b")
    assert both.prompt_table(1)["rel_err_fp8"].equals(both.table["prompt1.rel_err_fp8"].rename("rel_err_fp8"))


@pytest.mark.parametrize("value, words", [
    (("fp8",), "must include 'native'"),
    (("native", "int4"), "unknown precision 'int4'"),
    ("fp8", "must be a list"),
    ([1], "must be a list"),
])
def test_bad_precisions_are_one_line(value, words):
    with pytest.raises(ProfileError, match=words) as err:
        ProfileSettings(precisions=value)
    assert len(str(err.value).splitlines()) == 1


def test_precisions_are_held_in_one_order():
    assert ProfileSettings(precisions=["fp8", "native", "fp8"]).precisions == FP8
    assert ProfileSettings(precisions=FP8) == ProfileSettings(precisions=("fp8", "native"))


def fp8_profile(step: int = 0, seed: int = 8) -> Profile:
    q, k, v = structured_qkv(seed, heads=2, kv_heads=2)
    return profile_tensors(q, k, v, GEOM, step=step, block_size=64, queries=16, precisions=FP8)


def test_settings_and_column_round_trip_through_the_file(tmp_path):
    prof = fp8_profile()
    prof.save(tmp_path / "p.parquet")
    back = Profile.load(tmp_path / "p.parquet")
    assert back.settings == prof.settings and back.settings.precisions == FP8
    assert back.table.equals(prof.table)
    assert meta_of(tmp_path / "p.parquet")["settings"]["precisions"] == ["native", "fp8"]


def test_a_file_without_precisions_reads_as_native(tmp_path):
    prof = fp8_profile()
    prof.save(tmp_path / "p.parquet")
    meta = meta_of(tmp_path / "p.parquet")
    del meta["settings"]["precisions"]
    table = pq.read_table(tmp_path / "p.parquet").to_pandas().drop(columns="rel_err_fp8")
    old = Profile.load(rewrite(tmp_path / "p.parquet", tmp_path / "old.parquet", table=table, meta=meta))
    assert old.settings.precisions == ("native",) and "rel_err_fp8" not in old.table
    assert old.table.equals(prof.table.drop(columns="rel_err_fp8"))
    old.save(tmp_path / "native.parquet")  # a native profile's settings do not name precisions
    assert meta_of(tmp_path / "native.parquet")["settings"] == meta["settings"]


def test_a_file_whose_settings_name_fp8_needs_the_column(tmp_path):
    fp8_profile().save(tmp_path / "p.parquet")
    table = pq.read_table(tmp_path / "p.parquet").to_pandas().drop(columns="rel_err_fp8")
    refused(rewrite(tmp_path / "p.parquet", tmp_path / "a.parquet", table=table),
            "lacks column(s) rel_err_fp8", "settings.precisions")
    meta = meta_of(tmp_path / "p.parquet")
    meta["settings"]["precisions"] = ["native", "int4"]
    refused(rewrite(tmp_path / "p.parquet", tmp_path / "b.parquet", meta=meta), "metadata settings", "'int4'")
    table = pq.read_table(tmp_path / "p.parquet").to_pandas()
    table.loc[3, "rel_err_fp8"] = -0.5
    refused(rewrite(tmp_path / "p.parquet", tmp_path / "c.parquet", table=table), "'rel_err_fp8'", "≥ 0")


def test_merge_keeps_the_column(tmp_path):
    shards = []
    for step in range(2):
        shards.append(tmp_path / f"p.rank{step}-of-2.parquet")
        fp8_profile(step, seed=9 + step).save(shards[-1])
    merged = merge_shards(shards[::-1])
    whole = Profile.concat([fp8_profile(0, seed=9), fp8_profile(1, seed=10)])
    assert merged.settings.precisions == FP8
    assert merged.table.equals(whole.table)
    merged.save(tmp_path / "merged.parquet")
    assert Profile.load(tmp_path / "merged.parquet").table.equals(whole.table)
    with pytest.raises(ProfileError, match="different geometry or settings"):
        native = fp8_profile(1)
        native.settings = ProfileSettings(queries=16, block_size=64)
        Profile.concat([fp8_profile(0), native])


def test_classification_does_not_change():
    parts = [fp8_profile(step, seed=11 + step) for step in range(2)]
    both = Profile.concat(parts)
    native = Profile(both.table.drop(columns="rel_err_fp8"), both.geometry,
                     ProfileSettings(queries=16, block_size=64), maps=both.maps)
    for over_steps in (False, True):
        assert classify(both, over_steps=over_steps).equals(classify(native, over_steps=over_steps))


def test_the_size_check_counts_the_fp8_pass():
    """``profile --fp8`` is checked at its own size: more memory and time than the native profile's
    lower bounds, at most twice the sampled part's (the pass repeats the sampled rows' work)."""
    from attnsearch.profiling.estimate import profile_cost

    geom = Geometry(21, 30, 52)
    native = profile_cost(geom, block_size=128, queries=256, steps=4)
    fp8 = profile_cost(geom, block_size=128, queries=256, steps=4, fp8=True)
    assert native.memory_bytes < fp8.memory_bytes < 2 * native.memory_bytes
    assert native.cpu_seconds < fp8.cpu_seconds < 2 * native.cpu_seconds
