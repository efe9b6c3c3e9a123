"""``attnsearch calibrate --quick`` end to end on the CPU: ``calibrate(quick=True)`` with a synthetic
device whose latencies follow known constants (an FP8-capable one: its FP8 kernel and quantization
pass have their own): the quick grid, its points, the fit, the table written and read back, the raw
points saved apart."""

from __future__ import annotations

import json
import zlib

import numpy as np
import pytest

from attnsearch.costmodel import CostModel, FillParams, LaunchParams, layer_features, load_hardware
from attnsearch.costmodel.calibrate import calibrate, load_points
from attnsearch.costmodel.fit import MIN_POINTS, build_table, point_lengths, spec_layer_plan
from attnsearch.geometry import Geometry
from attnsearch.costmodel.table import DENSE_TILE

SMS = 132
TRUE_SPARSE = LaunchParams(5.0, 1500.0, 2.0, 2)
TRUE_DENSE = LaunchParams(8.0, 900.0, 1.0, 1)
TRUE_FILL = FillParams(3.0, 2500.0)
TRUE_FP8 = LaunchParams(4.0, 1100.0, 1.0, 3)
TRUE_QUANTIZE = FillParams(9.0, 1800.0)
#: The synthetic sparse kernel's per-tile time drifts with N (as L2 reuse falls): ×1 at N = 2,048,
#: ×1.06 at N = 17,776 (the quick grid's two lengths), log-linear between.
DRIFT = ((2048.0, 1.0), (17_776.0, 1.06))


def drift(num_tokens: int) -> float:
    (n0, f0), (n1, f1) = DRIFT
    return float(np.interp(np.log(num_tokens), [np.log(n0), np.log(n1)], [f0, f1]))


def synthetic_ms(point) -> float:
    """A device whose kernels follow the cost model's form with the TRUE_* constants, ±1% noise."""
    # A seed from the point itself (crc32: str hashes change with every interpreter), so the noise is
    # the same in every run.
    rng = np.random.default_rng(zlib.crc32((point["label"] + str(point["geometry"])).encode()))
    if point["kind"] == "fill":
        ms = float(TRUE_FILL.ms(point["bytes"]))
    elif point["kind"] == "quantize":
        ms = float(TRUE_QUANTIZE.ms(point["bytes"]))
    elif point["kind"] == "dense":
        nq = -(-point["num_tokens"] // DENSE_TILE)
        ms = float(TRUE_DENSE.uniform_ms(point["heads"] * nq, nq, SMS))
    else:
        true = TRUE_FP8 if point.get("precision") == "fp8" else TRUE_SPARSE
        launch = true.launch_us * 1e-3
        ms = launch + (true.ms(point_lengths(point), SMS) - launch) * drift(point["num_tokens"])
    return ms * float(rng.lognormal(0.0, 0.01))


#: Host dispatch of the synthetic device's calls (µs): a sparse call's base and each part it has,
#: kernel by kernel (the Hopper-like 128 × 128 one dearer), and a cuDNN call.
TRUE_HOST = {"d128_b128": {"base_us": 40.0, "native_us": 30.0, "fp8_us": 250.0, "fill_us": 12.0},
             "d128_b64": {"base_us": 35.0, "native_us": 25.0, "fp8_us": 200.0, "fill_us": 12.0},
             "d64_b128": {"base_us": 35.0, "native_us": 25.0, "fp8_us": 180.0, "fill_us": 12.0},
             "d64_b64": {"base_us": 35.0, "native_us": 25.0, "fp8_us": 180.0, "fill_us": 12.0}}
TRUE_HOST_DENSE = 22.0


def synthetic_host(point, rng) -> dict:
    """What calibration measures of a point's host dispatch (``calibrate._time_spec``), ±2% noise."""
    noise = lambda: float(rng.lognormal(0.0, 0.02))  # noqa: E731
    if point["kind"] == "dense":
        return {"host_us": TRUE_HOST_DENSE * noise()}
    if point["kind"] != "sparse" or point["families"] == ["dense"]:
        return {}
    row = TRUE_HOST[f"d{point['head_dim']}_b{point['block_size']}"]
    calls = ([["fp8"], ["native", "fp8"]] if point.get("precision") == "fp8" else [["native"], ["native", "fill"]])
    return {"host": [{"parts": parts, "us": (row["base_us"] + sum(row[f"{x}_us"] for x in parts)) * noise()}
                     for parts in calls]}


def synthetic_timer(point) -> dict:
    rng = np.random.default_rng(zlib.crc32(("host" + point["label"] + str(point["geometry"])).encode()))
    return {"ms": synthetic_ms(point), "method": "graph", "eager_ms": 1.0, **synthetic_host(point, rng)}


ENV = {"device": "Synthetic GPU", "sm_count": SMS, "capability": [9, 0], "order": "head"}


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    """``calibrate(quick=True)`` on the synthetic device, run once: (its folder, the table it returned);
    the raw points are in ``points.json`` beside the table."""
    out = tmp_path_factory.mktemp("quick")
    return out, calibrate(out, quick=True, timer=synthetic_timer, env=ENV, points_path=out / "points.json",
                          progress=None)


@pytest.mark.slow
def test_quick_calibration_writes_a_table_the_cost_model_reads(quick):
    folder, path = quick
    assert path == folder / "synthetic-gpu.json"
    _, points = load_points(folder / "points.json")
    grid = [p for p in points if p["role"] == "grid"]
    assert len(grid) == len(points) and all("ms" in p for p in points)
    # Every kernel the fit needs has enough points in the quick grid.
    for head_dim in (64, 128):
        assert sum(p["kind"] == "dense" and p["head_dim"] == head_dim for p in grid) >= MIN_POINTS
    assert sum(p["kind"] == "fill" for p in grid) >= 2 and sum(p["kind"] == "quantize" for p in grid) >= 2
    table = load_hardware(str(path))
    assert "points" not in json.loads(path.read_text())  # raw points stay out of the table
    kernels = {"d128_b128", "d128_b64", "d64_b128", "d64_b64"}
    assert set(table.sparse) == kernels | {k + "_fp8" for k in kernels} and set(table.dense) == {"d64", "d128"}
    assert {f"sparse.{k}_fp8" for k in kernels} | {"quantize"} <= set(table.fit)
    sparse = table.sparse["d128_b128"]
    assert sparse.slots_per_sm == TRUE_SPARSE.slots_per_sm
    # The fit explains the drift partly by a longer per-item cost (short items at small N), the rest
    # is tabulated per N in the drift's direction.
    assert sparse.tile_ns == pytest.approx(TRUE_SPARSE.tile_ns * 1.03, rel=0.1)
    assert [n for n, _ in sparse.n_scale] == [2048.0, 17_776.0]
    assert sparse.tile_ns_at(17_776) > sparse.tile_ns_at(2048)
    assert table.fill.gbps == pytest.approx(TRUE_FILL.gbps, rel=0.05)
    fp8 = table.sparse["d128_b128_fp8"]
    assert fp8.slots_per_sm == TRUE_FP8.slots_per_sm and fp8.tile_ns == pytest.approx(TRUE_FP8.tile_ns, rel=0.1)
    assert table.quantize.gbps == pytest.approx(TRUE_QUANTIZE.gbps, rel=0.05)
    assert table.quantize.launch_us == pytest.approx(TRUE_QUANTIZE.launch_us, rel=0.1)
    # The host dispatch costs come back per kernel, for every kind of call (FP8 with a skip head was
    # never measured: base + its parts); eager costs are asked for, device time stays the default.
    assert set(table.host.sparse) == kernels
    for key, row in TRUE_HOST.items():
        d, b = (int(x[1:]) for x in key.split("_"))
        for parts in (["native"], ["native", "fill"], ["fp8"], ["native", "fp8"], ["fp8", "fill"]):
            true = row["base_us"] + sum(row[f"{x}_us"] for x in parts)
            assert table.host.sparse_us(d, b, parts) == pytest.approx(true, rel=0.03), (key, parts)
    assert table.host.dense == {"d64": pytest.approx(TRUE_HOST_DENSE, rel=0.05),
                                "d128": pytest.approx(TRUE_HOST_DENSE, rel=0.05)}
    assert CostModel(table).execution == "graph" and CostModel(table, execution="eager").execution == "eager"
    # The fitted model predicts the layers as the synthetic device times them (all-dense layers run
    # the block-sparse kernel at block size 128 only; at 64 the model costs them as cuDNN): device
    # time, what the grid measures.
    model = CostModel(table, execution="graph")
    for p in grid:
        if p["kind"] == "sparse" and not p["skip_heads"] and p["head_dim"] == 128 and p.get("batch", 1) == 1 \
                and (p["block_size"] == 128 or p["families"] != ["dense"]):
            lp = spec_layer_plan(Geometry.from_dict(p["geometry"]), p["heads"], p["block_size"], p["layer"])
            if p.get("precision") == "fp8":
                f = layer_features(lp)
                assert model.sparse_ms(f.counts, p["block_size"], f.num_tokens, "fp8") == pytest.approx(
                    p["ms"], rel=0.05), p["label"]
            else:
                assert model.layer_ms(lp) == pytest.approx(p["ms"], rel=0.05), p["label"]
        elif p["kind"] == "quantize":
            assert float(model.quantize_ms(p["heads"], p["num_tokens"])) == pytest.approx(p["ms"], rel=0.05), p["label"]


@pytest.mark.slow
def test_refit_from_saved_points_reproduces_the_table(quick, tmp_path):
    """``calibrate --refit POINTS`` (no GPU): the same measurements give the same table, and a
    broken points file is one error line with exit code 2 and no table written."""
    from tests.cli.cli_inputs import cli, one_error

    folder, path = quick
    code, out = cli("calibrate", "--refit", folder / "points.json", "--out", tmp_path / "b")
    assert code == 0, out
    a, b = json.loads(path.read_text()), json.loads((tmp_path / "b" / path.name).read_text())
    assert a["params"] == b["params"] and a["fit"] == b["fit"] and a["device"] == b["device"]

    env, points = load_points(folder / "points.json")
    points[3]["ms"] = float("nan")
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"env": env, "points": points}))
    line = one_error(*cli("calibrate", "--refit", bad, "--out", tmp_path / "c"))
    assert "points[3]" in line and "ms must be a finite number" in line
    (tmp_path / "garbage.json").write_text('{"env": 1}')
    assert "not a calibration points file" in one_error(*cli("calibrate", "--refit", tmp_path / "garbage.json",
                                                            "--out", tmp_path / "c"))
    assert not (tmp_path / "c").exists()
