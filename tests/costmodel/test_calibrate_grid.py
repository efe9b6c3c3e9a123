"""The CPU side of calibration with FP8: which specs the grid holds for a device with and without
FP8 tensor cores (the device is its compute capability), the quantization pass's points, and the
points files that carry them."""

from __future__ import annotations

import json

import pytest

from attnsearch.costmodel import calibrate
from attnsearch.costmodel.calibrate import (GRID_SHAPES, default_grid, describe_spec, fp8_kernels, fp8_shapes,
                                            load_points, save_points)
from attnsearch.costmodel.fit import MIN_POINTS
from attnsearch.geometry import Geometry
from attnsearch.runtime.backends import TritonBackend

KERNELS = set(GRID_SHAPES)
#: What a spec times apart from its label and precision.
SAME = ("kind", "role", "geometry", "heads", "head_dim", "block_size", "batch", "layer")


#: family_params results of this module's grids (the bisection is most of a grid's time).
_FOUND: dict = {}


@pytest.fixture
def grid(monkeypatch):
    """``default_grid(quick=True, **kw)`` with the family parameters' bisection memoised across the
    module's grids (each would otherwise search them again)."""
    real = calibrate.family_params

    def memo(pattern, geometry, block_size, target):
        key = (pattern, geometry, block_size, target)
        if key not in _FOUND:
            _FOUND[key] = real(pattern, geometry, block_size, target)
        return _FOUND[key]

    monkeypatch.setattr(calibrate, "family_params", memo)
    return lambda **kw: default_grid(quick=True, **kw)


def test_a_device_without_fp8_calibrates_the_native_grid(grid):
    native = grid()
    assert grid(capability=(8, 0)) == native and grid(capability=[8, 6]) == native
    assert all("precision" not in s and s["kind"] != "quantize" for s in native)
    assert fp8_kernels(None) == [] and fp8_kernels((7, 5)) == []


@pytest.mark.parametrize("capability", [(8, 9), [9, 0], (10, 0)])
def test_a_device_with_fp8_adds_its_layers_and_the_quantization_pass(grid, capability):
    native = grid()
    specs = grid(capability=capability)
    assert specs[: len(native)] == native   # the native grid first, unchanged
    added = specs[len(native):]
    fp8 = [s for s in added if s["kind"] == "sparse"]
    passes = [s for s in added if s["kind"] == "quantize"]
    assert len(fp8) + len(passes) == len(added) and all(s["precision"] == "fp8" for s in fp8)
    assert all("precision" not in s for s in passes)
    for kernel in KERNELS:
        assert sum((s["head_dim"], s["block_size"]) == kernel for s in fp8) >= MIN_POINTS, kernel
    # Each FP8 layer is a native layer of the grid again, products in FP8.
    twins = {(s["label"], json.dumps([s[k] for k in SAME])) for s in native}
    for s in fp8:
        assert s["label"].startswith("fp8 ")
        assert (s["label"][4:], json.dumps([s[k] for k in SAME])) in twins, s["label"]
    # The pass over 10 kB … 1 GB of bf16 q, k and v; a point's bytes are those it moves: q, k read
    # once and v twice (8 bytes a value), e4m3 q, k written (2), e4m3 v in rows padded to 16 tokens.
    inputs = [3 * s["heads"] * Geometry.from_dict(s["geometry"]).num_tokens * s["head_dim"] * 2 for s in passes]
    assert inputs == sorted(inputs) and inputs[0] < 20_000 and inputs[-1] > 1e9 and len(inputs) >= 4
    for s in passes:
        n = Geometry.from_dict(s["geometry"]).num_tokens
        assert describe_spec(s)["bytes"] == s["heads"] * s["head_dim"] * (n * 10 + -(-n // 16) * 16)


def test_the_grid_asks_the_triton_backend_which_fp8_kernels_run(monkeypatch):
    assert set(fp8_kernels((9, 0))) == KERNELS
    monkeypatch.setattr(TritonBackend, "fp8_capability", (10, 0))
    assert fp8_kernels((9, 0)) == [] and set(fp8_kernels((10, 0))) == KERNELS
    real = TritonBackend.not_supported_reasons.__func__

    def no_head_dim_64(cls, **kw):
        return ["head_dim 64 refused"] if kw["head_dim"] == 64 else real(cls, **kw)

    monkeypatch.setattr(TritonBackend, "not_supported_reasons", classmethod(no_head_dim_64))
    assert set(fp8_kernels((10, 0))) == {(128, 128), (128, 64)}


def test_fp8_shapes_keep_the_tuning_shape_and_the_largest():
    for kernel, shapes in GRID_SHAPES.items():
        picked = fp8_shapes(shapes)
        assert picked[0] == shapes[0] and picked[-1] == shapes[-1], kernel
        assert all(s in shapes for s in picked) and len(picked) < len(shapes) or len(shapes) <= 3
        assert fp8_shapes(shapes, quick=True) == shapes[:2]
    assert sum(len(fp8_shapes(s)) for s in GRID_SHAPES.values()) == 15


def test_fp8_holdouts_are_the_first_held_out_layer_of_each_shape(grid, monkeypatch):
    a, b = Geometry(4, 8, 16).to_dict(), Geometry(8, 16, 16).to_dict()
    held = [{"kind": "sparse", "role": "holdout", "label": f"holdout {i}", "geometry": g, "heads": 2,
             "head_dim": 128, "block_size": 128, "batch": 1, "layer": [["dense", {}]] * 2}
            for g in (a, b) for i in range(3)]
    monkeypatch.setattr(calibrate, "holdout_specs", lambda **kw: [dict(h) for h in held])
    native = grid(holdout=True)
    assert native[-6:] == held
    specs = grid(holdout=True, capability=(9, 0))
    assert specs[-8:-2] == held
    assert specs[-2:] == [dict(held[0], precision="fp8", label="fp8 holdout 0"),
                          dict(held[3], precision="fp8", label="fp8 holdout 0")]


def test_calibrate_builds_the_grid_for_the_device_it_measures(monkeypatch, tmp_path):
    asked = []

    class Built(Exception):
        pass

    def recorder(**kw):
        asked.append(kw)
        raise Built

    monkeypatch.setattr(calibrate, "default_grid", recorder)
    for env, capability in (({"capability": [8, 0]}, [8, 0]), ({"capability": [9, 0]}, [9, 0]), ({}, None)):
        with pytest.raises(Built):
            calibrate.calibrate(tmp_path, timer=lambda p: {}, env={"device": "X", "sm_count": 1, **env},
                                progress=None)
        assert asked.pop() == {"quick": False, "capability": capability, "dtype": "bfloat16"}


def test_points_files_carry_fp8_and_quantize_points(tmp_path):
    env = {"device": "Synthetic GPU", "sm_count": 132}
    points = [{"kind": "quantize", "label": "quantize 4 heads", "bytes": 6_291_456, "ms": 0.02},
              {"kind": "sparse", "label": "fp8 mixed 25%", "precision": "fp8", "ms": 0.5},
              {"kind": "sparse", "label": "mixed 25%", "ms": 0.6}]   # no precision: native
    path = save_points(points, env, tmp_path / "points.json")
    assert load_points(path) == (env, points)
    for bad, words in (({"kind": "requantize"}, "points[3] is not a sparse, dense, fill or quantize point"),
                       ({"kind": "sparse", "precision": "int8"}, "points[3] (?): precision must be one of")):
        save_points(points + [bad], env, path)
        with pytest.raises(ValueError, match=words.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")
                           .replace("]", r"\]").replace("?", r"\?")):
            load_points(path)


def test_points_carry_host_measurements_and_bad_ones_are_named(tmp_path):
    env = {"device": "Synthetic GPU", "sm_count": 132}
    points = [{"kind": "sparse", "label": "mixed 25%", "ms": 0.05,
               "host": [{"parts": ["native"], "us": 230.0}, {"parts": ["native", "fill"], "us": 255.0}]},
              {"kind": "dense", "label": "cuDNN dense", "ms": 0.08, "host_us": 96.0}]
    path = save_points(points, env, tmp_path / "points.json")
    assert load_points(path) == (env, points)
    for bad, words in (({"host": [{"parts": ["bf16"], "us": 1.0}]}, r"host\[0\] must be"),
                       ({"host": [{"parts": ["native"], "us": -1.0}]}, r"host\[0\] must be"),
                       ({"host": {"parts": ["native"]}}, r"host\[0\] must be"),
                       ({"host_us": float("nan")}, "host_us must be a finite number")):
        save_points(points + [{"kind": "sparse", "label": "x", **bad}], env, path)
        with pytest.raises(ValueError, match=words):
            load_points(path)


def test_host_parts_are_the_launches_and_the_fill_a_call_has():
    from attnsearch.costmodel.calibrate import host_parts
    from attnsearch.layer_plan import LayerPlan

    geom = Geometry(4, 8, 16)
    heads = [("diagonal", {"rows": 2}), ("skip", {}), ("dense", {}), ("diagonal", {"rows": 4})]
    lp = LayerPlan.from_heads(heads, geom, 64)
    assert host_parts(lp) == ["native", "fill"]
    assert host_parts(lp.with_precision("fp8")) == ["fp8", "fill"]
    assert host_parts(lp.with_precision("fp8", heads=[0])) == ["native", "fp8", "fill"]
    assert host_parts(LayerPlan.from_heads(heads[:1], geom, 64)) == ["native"]
    assert host_parts(LayerPlan.from_heads([("skip", {})] * 2, geom, 64)) == ["fill"]
