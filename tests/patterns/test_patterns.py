"""block_mask equals the brute-force token-level construction rounded to blocks."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from attnsearch import Geometry, PatternError, block_mask
from attnsearch.patterns import PATTERNS, normalize_params

from reference import round_to_blocks, token_mask, vertical_stripe_blocks


@st.composite
def geometries(draw):
    frames = draw(st.integers(1, 6))
    height = draw(st.integers(1, 9))
    width = draw(st.integers(1, 12))
    text = draw(st.sampled_from([0, 0, 1, 7, 37, 70]))
    pos = draw(st.sampled_from(["prefix", "suffix"]))
    geom = Geometry(frames, height, width, text, pos)
    block = draw(st.sampled_from([64, 128]))
    return geom, block


def brute(name, params, geom, block):
    if name == "vertical_stripe":
        return vertical_stripe_blocks(params, geom, block)
    return round_to_blocks(token_mask(name, {**params, "_block_size": block}, geom), block)


def check(name, params, geom, block):
    got = block_mask(name, params, geom, block)
    assert got.dtype == torch.bool and got.shape == (math.ceil(geom.num_tokens / block),) * 2
    want = brute(name, params, geom, block)
    np.testing.assert_array_equal(got.numpy(), want, err_msg=f"{name} {params} {geom} B={block}")


@settings(max_examples=60, deadline=None)
@given(geometries(), st.sampled_from([0.0, 0.3, 0.5, 1.0, 2.0, 3.7]))
def test_diagonal_matches_brute_force(gb, rows):
    check("diagonal", {"rows": rows}, *gb)


@settings(max_examples=60, deadline=None)
@given(geometries(), st.sampled_from([0.0, 0.5, 1.0, 2.5]), st.data())
def test_multi_diagonal_matches_brute_force(gb, rows, data):
    geom, block = gb
    frames = data.draw(st.one_of(st.none(), st.integers(0, geom.frames - 1)))
    check("multi_diagonal", {"rows": rows, "frames": frames}, geom, block)


@settings(max_examples=60, deadline=None)
@given(geometries(), st.sampled_from([1.0, 0.7, 0.5, 0.25, 0.1, 0.03]), st.booleans())
def test_energy_decay_matches_brute_force(gb, decay, sink):
    check("energy_decay", {"decay": decay, "sink": sink}, *gb)


@settings(max_examples=40, deadline=None)
@given(geometries(), st.sampled_from([0, 0.5, 2.0]), st.data())
def test_vertical_stripe_matches_definition(gb, rows, data):
    geom, block = gb
    nb = math.ceil(geom.num_tokens / block)
    keys = data.draw(st.lists(st.integers(0, nb - 1), unique=True, max_size=4))
    check("vertical_stripe", {"key_blocks": keys, "rows": rows}, geom, block)


def test_energy_decay_on_large_frames_uses_strided_bands():
    # S = 16·16 = 256 ≥ B: exercises both the c ≥ B and the c < B (strided) branches.
    geom = Geometry(frames=9, height=16, width=16, text_tokens=13, text_position="suffix")
    for decay in (1.0, 0.5, 0.25, 0.1):
        for sink in (False, True):
            check("energy_decay", {"decay": decay, "sink": sink}, geom, 64)


@pytest.mark.parametrize("name", ["dense", "skip"])
def test_trivial_patterns(name):
    geom = Geometry(3, 5, 7, 11, "prefix")
    check(name, {}, geom, 64)


def test_sequence_geometry_rows_count_tokens():
    geom = Geometry.sequence(300)
    m = block_mask("diagonal", {"rows": 64}, geom, 64)
    assert m.shape == (5, 5)
    assert m[0, 1] and not m[0, 2]  # |i − j| ≤ 64 reaches only the adjacent block


def test_multi_diagonal_contains_diagonal():
    geom = Geometry(5, 6, 10, 20, "prefix")
    d = block_mask("diagonal", {"rows": 1.0}, geom, 64)
    md = block_mask("multi_diagonal", {"rows": 1.0, "frames": 2}, geom, 64)
    assert bool((md | ~d).all())


@pytest.mark.parametrize(
    "name,params,field",
    [
        ("diagonal", {"rows": -1}, "diagonal.rows"),
        ("diagonal", {}, "missing parameter"),
        ("diagonal", {"rows": 1, "width": 3}, "unknown parameter"),
        ("multi_diagonal", {"rows": 1, "frames": 99}, "multi_diagonal.frames"),
        ("energy_decay", {"decay": 0}, "energy_decay.decay"),
        ("energy_decay", {"decay": 1.5}, "energy_decay.decay"),
        ("energy_decay", {"decay": 0.5, "sink": 1}, "energy_decay.sink"),
        ("vertical_stripe", {"key_blocks": [0, 999]}, "vertical_stripe.key_blocks"),
        ("vertical_stripe", {"key_blocks": [1, 1]}, "twice"),
        ("dense", {"rows": 1}, "unknown parameter"),
        ("banded", {}, "unknown pattern"),
    ],
)
def test_bad_params_name_the_field(name, params, field):
    with pytest.raises(PatternError, match=field):
        block_mask(name, params, Geometry(4, 8, 8), 64)


def test_every_default_grid_candidate_is_valid():
    geom = Geometry(13, 9, 14, 37, "prefix")
    for name, pattern in PATTERNS.items():
        for params in pattern.grid(geom, 64):
            assert normalize_params(name, params, geom, 64) is not None
