"""Profiles are data checked on load: every way a file can be unusable is one ProfileError line
naming the file and the field, and the profiler refuses non-finite attention and missing layers."""

from __future__ import annotations

import base64
import json
import math
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
import torch.nn.functional as F

from attnsearch import Geometry, profile_tensors
from attnsearch.models import ModelSpec
from attnsearch.profiling.profile_check import check_steps_complete
from attnsearch.profiling.profile_io import Profile, ProfileError, ProfileSettings
from attnsearch.profiling.profiler import profile_model

GEOM = Geometry(2, 4, 8)


@pytest.fixture(scope="module")
def good(tmp_path_factory, random_profile) -> Path:
    return random_profile(tmp_path_factory.mktemp("profiles") / "good.parquet", head_dim=16)


def rewrite(src: Path, dst: Path, *, table=None, meta=None, blob=None) -> Path:
    """``src`` with its table (a DataFrame), metadata (JSON-able, or raw bytes) or maps blob replaced,
    written as ``dst`` without any of the writer's checks."""
    t = pq.read_table(src)
    md = dict(t.schema.metadata)
    if table is not None:
        t = pa.Table.from_pandas(table, preserve_index=False)
    if meta is not None:
        md[b"attnsearch"] = meta if isinstance(meta, bytes) else json.dumps(meta).encode()
    if blob is not None:
        md[b"attnsearch.maps"] = blob
    pq.write_table(t.replace_schema_metadata(md), dst)
    return dst


def meta_of(path: Path) -> dict:
    return json.loads(pq.read_table(path).schema.metadata[b"attnsearch"])


def refused(path: Path, *words: str) -> str:
    with pytest.raises(ProfileError) as err:
        Profile.load(path)
    msg = str(err.value)
    assert len(msg.splitlines()) == 1 and msg.startswith(str(path)), msg
    for w in words:
        assert w in msg, msg
    return msg


def test_a_good_profile_loads_as_written(good):
    prof = Profile.load(good)
    assert (prof.num_steps, prof.num_layers, prof.num_heads) == (2, 2, 2)
    assert prof.table["density"].between(0, 1).all() and prof.table["recall"].between(0, 1 + 1e-6).all()


@pytest.mark.parametrize("key", ["geometry", "settings", "maps", "model"])
def test_metadata_missing_a_field(good, tmp_path, key):
    meta = meta_of(good)
    del meta[key]
    refused(rewrite(good, tmp_path / "p.parquet", meta=meta), "metadata lacks", key)


@pytest.mark.parametrize("raw, words", [
    (b"[1, 2, 3]", ("metadata is not a JSON object",)),
    (b"{not json", ("not valid JSON",)),
    (b"\xff\xfe", ("not UTF-8",)),
    (b'{"format": "attnsearch-profile", "version": 1, "geometry": [], "settings": {}, "model": {}, "maps": {}}',
     ("metadata geometry",)),
])
def test_metadata_that_is_not_an_object_or_not_json(good, tmp_path, raw, words):
    refused(rewrite(good, tmp_path / "p.parquet", meta=raw), *words)


def test_geometry_and_settings_fields_are_named(good, tmp_path):
    meta = meta_of(good)
    meta["settings"] = {**meta["settings"], "block_size": 96}
    refused(rewrite(good, tmp_path / "s.parquet", meta=meta), "metadata settings", "block_size")
    meta = meta_of(good)
    meta["geometry"] = {"frames": 2}
    refused(rewrite(good, tmp_path / "g.parquet", meta=meta), "metadata geometry", "height")


@pytest.mark.parametrize("blob", [b"not base64 !!", base64.b64encode(b"not zlib"), base64.b64encode(b"")])
def test_a_bad_maps_blob(good, tmp_path, blob):
    refused(rewrite(good, tmp_path / "p.parquet", blob=blob), "maps")


def test_maps_sites_outside_the_table(good, tmp_path):
    meta = meta_of(good)
    meta["maps"]["sites"][0] = [7, 0]
    refused(rewrite(good, tmp_path / "p.parquet", meta=meta), "maps.sites", "(7, 0)")


def table_of(path: Path) -> pd.DataFrame:
    return pq.read_table(path).to_pandas()


@pytest.mark.parametrize("column, value, words", [
    ("density", "0.5", ("'density'", "numbers")),
    ("density", math.nan, ("'density'", "non-finite")),
    ("recall", math.inf, ("'recall'", "non-finite")),
    ("rel_err", -math.inf, ("'rel_err'", "non-finite")),
    ("density", 1.5, ("'density'", "outside [0, 1]")),
    ("recall", -0.25, ("'recall'", "outside [0, 1]")),
    ("rel_err", -1.0, ("'rel_err'", "≥ 0")),
    ("pattern", "spiral", ("unknown pattern", "'spiral'")),
    ("head", -3, ("'head'", "negative")),
    ("params", "{", ("'params'", "not valid JSON")),
    ("params", "[]", ("'params'", "not a JSON object")),
    ("params", '{"rows": NaN}', ("'params'", "NaN")),
])
def test_bad_table_values_are_named(good, tmp_path, column, value, words):
    df = table_of(good)
    if isinstance(value, str) and column == "density":
        df[column] = df[column].astype(str)
    else:
        df.loc[5, column] = value
    refused(rewrite(good, tmp_path / "p.parquet", table=df), *words)


def test_duplicate_rows(good, tmp_path):
    df = table_of(good)
    df = pd.concat([df, df.iloc[[3]]], ignore_index=True)
    refused(rewrite(good, tmp_path / "p.parquet", table=df), "duplicate rows", "more than once")


def test_layers_numbered_far_from_zero(good, tmp_path):
    df = table_of(good)
    df["layer"] += 1000  # layers 1000–1001: a 1002-layer plan if accepted
    refused(rewrite(good, tmp_path / "p.parquet", table=df), "lacks layer(s) 0–999")


def test_a_head_gap(good, tmp_path):
    df = table_of(good)
    df = df[~((df["step"] == 1) & (df["layer"] == 1) & (df["head"] == 0))]
    refused(rewrite(good, tmp_path / "p.parquet", table=df), "step 1 layer 1 lacks head(s) 0")


def test_a_step_gap_loads_as_a_shard_but_is_not_a_whole_profile(good, tmp_path):
    df = table_of(good)
    df.loc[df["step"] == 1, "step"] = 3  # steps 0 and 3: a shard, not a profile of steps [0, 4)
    prof = Profile.load(rewrite(good, tmp_path / "shard.parquet", table=df))
    with pytest.raises(ProfileError, match=r"lacks step\(s\) 1–2 of 0–3"):
        check_steps_complete(prof.table, tmp_path / "shard.parquet")


def test_a_folder_is_not_a_missing_file(tmp_path):
    refused(tmp_path, "is a directory")
    refused(tmp_path / "none.parquet", "does not exist")
    (tmp_path / "x.parquet").write_bytes(b"PAR1 garbage")
    refused(tmp_path / "x.parquet", "not a Parquet file")


def test_a_profile_with_non_finite_statistics_is_never_written(good, tmp_path):
    prof = Profile.load(good)
    prof.table.loc[0, "recall"] = math.nan
    with pytest.raises(ProfileError, match="non-finite"):
        prof.save(tmp_path / "bad.parquet")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("which", ["query", "key", "value"])
def test_non_finite_attention_is_an_error_naming_step_and_layer(which):
    q, k, v = (torch.randn(1, 2, GEOM.num_tokens, 16) for _ in range(3))
    {"query": q, "key": k, "value": v}[which][0, 1, 5, 3] = math.nan
    with pytest.raises(ProfileError, match=f"step 3 layer 7: the attention {which} holds non-finite"):
        profile_tensors(q, k, v, GEOM, layer=7, step=3, block_size=64, queries=16)


class Attention(torch.nn.Module):
    """Two attention calls per forward; ``nan_at`` poisons q at that step, ``short_at`` skips one call."""

    def __init__(self, nan_at: int | None = None, short_at: int | None = None) -> None:
        super().__init__()
        self.nan_at, self.short_at, self.step = nan_at, short_at, 0

    def forward(self, x):
        q = x.clone()
        if self.step == self.nan_at:
            q[..., 0, 0] = math.nan
        layers = 1 if self.step == self.short_at else 2
        self.step += 1
        for _ in range(layers):
            x = x + F.scaled_dot_product_attention(q, x, x)
        return x


def spec_of(model) -> ModelSpec:
    inputs = [torch.randn(1, 2, GEOM.num_tokens, 16, generator=torch.Generator().manual_seed(i)) for i in range(3)]
    return ModelSpec(name="m", model=model, geometry=GEOM, inputs=inputs, fingerprint="f")


def test_a_model_whose_q_is_nan_gives_no_profile():
    with pytest.raises(ProfileError, match="step 1 layer 0: the attention query holds non-finite"):
        profile_model(spec_of(Attention(nan_at=1)), settings=ProfileSettings(queries=8, block_size=64))


def test_a_step_with_fewer_attention_calls_is_an_error_naming_it():
    with pytest.raises(ProfileError, match="step 2: 1 attention call.*step 0 made 2"):
        profile_model(spec_of(Attention(short_at=2)), settings=ProfileSettings(queries=8, block_size=64))


def test_a_forward_that_raises_is_one_line_naming_the_model():
    class Broken(torch.nn.Module):
        def forward(self, x):
            raise RuntimeError("boom\nsecond line")

    with pytest.raises(ProfileError) as err:
        profile_model(spec_of(Broken()), settings=ProfileSettings(queries=8, block_size=64))
    assert str(err.value) == "model 'm' step 0: the forward raised RuntimeError: boom\\nsecond line"


@pytest.mark.parametrize("value", [None, "1", -1.0, math.inf, True])
def test_timing_that_is_not_seconds(good, tmp_path, value):
    """Timings are summed when profiles are joined: anything but a finite number ≥ 0 is refused."""
    meta = meta_of(good)
    meta["timing"] = {**meta.get("timing", {}), "capture_s": value}
    refused(rewrite(good, tmp_path / "p.parquet", meta=meta), "timing.capture_s")



@pytest.mark.parametrize("key, value", [("head_dim", [64]), ("head_dim", 0), ("heads", 1e309), ("batch", "2"),
                                        ("kv_heads", True), ("dtype", 16)])
def test_an_attention_shape_that_is_not_counts(good, tmp_path, key, value):
    """The search costs a plan at the profile's head_dim: a shape field that is not a positive
    integer (or a dtype that is not a name) is refused on load, before any search starts."""
    meta = meta_of(good)
    meta["attention"] = {**meta.get("attention", {}), key: value}
    raw = json.dumps(meta).replace("Infinity", "1e309").encode()
    refused(rewrite(good, tmp_path / "p.parquet", meta=raw), f"attention.{key}")

def test_params_that_their_family_cannot_build(good, tmp_path):
    """A candidate's params must be valid for its pattern at the profile's geometry: a stripe
    without key blocks, or a band of negative width, would otherwise reach the search."""
    df = pq.read_table(good).to_pandas()
    stripe = df["pattern"] == "vertical_stripe"
    band = df["pattern"] == "diagonal"
    assert stripe.any() and band.any()
    broken = df.copy()
    broken.loc[stripe, "params"] = json.dumps({"rows": 0})
    refused(rewrite(good, tmp_path / "s.parquet", table=broken), "not valid for vertical_stripe")
    broken = df.copy()
    broken.loc[band, "params"] = json.dumps({"rows": -3})
    refused(rewrite(good, tmp_path / "d.parquet", table=broken), "not valid for diagonal")


def test_a_model_record_without_a_name(good, tmp_path):
    meta = meta_of(good)
    meta["model"] = {"fingerprint": "abc"}
    refused(rewrite(good, tmp_path / "p.parquet", meta=meta), "metadata model", "name")


def test_a_huge_layer_number_is_refused_without_enumerating_it(good, tmp_path):
    """One cell claiming layer 89,534,501: the gap is named from the values present (enumerating
    0..L−1 took gigabytes)."""
    df = pq.read_table(good).to_pandas()
    df.loc[1, "layer"] = 89_534_501
    msg = refused(rewrite(good, tmp_path / "p.parquet", table=df), "lacks layer(s)", "2–89534500")
    assert "89534501" in msg
