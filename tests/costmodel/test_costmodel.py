"""Cost model: list scheduling against a brute-force simulation, the fit against known constants,
table loading and its errors, layer costing against brute-force mask counts, FP8 variants and the
quantization pass (table keys, figures by hand, their errors on a table without them)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from attnsearch.costmodel.fit import fit, fit_fill, fit_launch
from attnsearch.costmodel import (DEFAULT_TABLE, CostModel, FillParams, HardwareError, LaunchParams, layer_features,
                                  load_hardware, parse_variant_key, quantize_bytes, variant_key)
from attnsearch.runtime.schedule import assign, item_lengths, list_schedule
from attnsearch.geometry import Geometry
from attnsearch.patterns import block_mask
from attnsearch.plan import LayerPlan, Plan
from reference import list_schedule_by_steps
from synthetic import native_only_table


@pytest.mark.parametrize("seed", range(20))
def test_list_schedule_matches_simulation(seed):
    rng = np.random.default_rng(seed)
    d = rng.integers(1, 12, rng.integers(1, 40)).astype(float)
    slots = int(rng.integers(1, 9))
    makespan, owned = list_schedule_by_steps(d.astype(int).tolist(), slots)
    assert list_schedule(d, slots) == makespan
    assert assign(d, slots) == owned


def test_uniform_items_are_waves():
    p = LaunchParams(3.0, 1000.0, 2.0, 2)
    for items in (1, 263, 264, 265, 1000):
        assert p.uniform_ms(items, 10, 132) == pytest.approx(p.ms(np.full(items, 10.0), 132))


def test_work_order_is_head_major_heaviest_first():
    counts = np.array([[1, 1, 1], [5, 0, 2], [3, 3, 3]])
    assert item_lengths(counts, "head").tolist() == [5, 3, 3, 3, 0, 2, 1, 1, 1]  # 5 > 2 × the mean: first
    flat = np.array([[2, 1, 1], [3, 0, 2], [3, 3, 3]])
    assert item_lengths(flat, "head").tolist() == [3, 3, 3, 3, 0, 2, 2, 1, 1]  # none that long: head order
    assert item_lengths(counts, "lpt").tolist() == [5, 3, 3, 3, 2, 1, 1, 1, 0]
    assert item_lengths(counts[:1], "head", batch=2).tolist() == [1, 1, 1, 1, 1, 1]


def test_fit_recovers_known_constants():
    rng = np.random.default_rng(0)
    true = LaunchParams(4.0, 1500.0, 2.0, 2)
    lengths = [rng.integers(0, rng.integers(2, 200), rng.integers(20, 3000)).astype(float) for _ in range(40)]
    ms = np.array([true.ms(x, 132) for x in lengths]) * rng.lognormal(0, 0.01, 40)
    spans = lambda a, occ: np.array([list_schedule(x + a, 132 * occ) for x in lengths])  # noqa: E731
    fitted, pred = fit_launch(spans, ms)
    assert fitted.slots_per_sm == 2 and fitted.item_tiles == pytest.approx(2.0, abs=0.26)
    assert np.abs(pred / ms - 1).max() < 0.05
    fill = fit_fill([1e4, 1e6, 1e8, 1e9], [0.002 + b / 8e8 for b in (1e4, 1e6, 1e8, 1e9)])
    assert fill.gbps == pytest.approx(800, rel=1e-6) and fill.launch_us == pytest.approx(2.0, rel=1e-6)


def test_shipped_table_loads_and_says_which(monkeypatch):
    monkeypatch.setattr("attnsearch.costmodel.table.local_gpu", lambda: None)
    table = load_hardware()
    assert table.name == DEFAULT_TABLE and table.measured and "no GPU here" in table.note
    assert table.device == "NVIDIA H100 80GB HBM3" and table.sm_count == 132
    cm = CostModel(head_dim=128)
    # Measured anchors for cuDNN dense (H100, bf16): 11.36 ms and 206 ms.
    assert float(cm.dense_ms(32760, 12)) == pytest.approx(11.36, rel=0.05)
    assert float(cm.dense_ms(75600, 40)) == pytest.approx(206.0, rel=0.05)


def test_bad_tables_are_named(tmp_path):
    bad = tmp_path / "other.json"
    bad.write_text(json.dumps({"format": "someone-elses-kernels", "version": 3}))
    with pytest.raises(HardwareError, match="other.json: format 'someone-elses-kernels' version 3"):
        load_hardware(str(bad))
    good = json.loads(load_hardware(DEFAULT_TABLE).source and open(load_hardware(DEFAULT_TABLE).source).read())
    good["params"]["sparse"]["d128_b128"]["slots_per_sm"] = 0
    bad.write_text(json.dumps(good))
    with pytest.raises(HardwareError, match=r"params.sparse.d128_b128.slots_per_sm: must be an integer ≥ 1"):
        load_hardware(str(bad))
    for count in (0, -1, True):   # a table of no SMs would predict negative or zero latencies
        table = json.loads(open(load_hardware(DEFAULT_TABLE).source).read())
        table["device"]["sm_count"] = count
        bad.write_text(json.dumps(table))
        with pytest.raises(HardwareError, match=r"device.sm_count must be an SM count in \[1, 100000\]"):
            load_hardware(str(bad))
    for field, value, words in (("software", [], "software must be a JSON object"),
                                ("capability", float("nan"), "software.capability must be [major, minor]"),
                                ("capability", [9], "software.capability must be [major, minor]"),
                                ("capability", [9, "0"], "software.capability must be [major, minor]")):
        table = json.loads(open(load_hardware(DEFAULT_TABLE).source).read())
        if field == "software":
            table["software"] = value
        else:
            table["software"]["capability"] = value
        bad.write_text(json.dumps(table))
        with pytest.raises(HardwareError, match=words.replace("[", r"\[").replace("]", r"\]")):
            load_hardware(str(bad))
    with pytest.raises(HardwareError, match="no hardware table named 'tpu-v9'"):
        load_hardware("tpu-v9")
    with pytest.raises(HardwareError, match="no sparse-kernel calibration for head_dim 96"):
        CostModel(DEFAULT_TABLE, head_dim=128).table.sparse_params(96, 128)


def test_layer_costs_follow_the_runtime():
    geom = Geometry(4, 8, 16, 20)
    heads = [("diagonal", {"rows": 1}), ("skip", {}), ("vertical_stripe", {"key_blocks": [0, 3]}),
             ("dense", {}), ("energy_decay", {"decay": 0.5})]
    lp = LayerPlan.from_heads(heads, geom, 64)
    f = layer_features(lp)
    brute = np.stack([block_mask(p, q, geom, 64).sum(-1).numpy() for p, q in heads if p != "skip"])
    assert (f.counts == brute).all() and f.skip_heads == 1 and f.items == 4 * lp.num_blocks
    cm = CostModel(DEFAULT_TABLE, head_dim=64)
    n = geom.num_tokens
    expect = cm.sparse_ms(brute, 64, n) + float(cm.fill_ms(1, n))
    assert cm.layer_ms(lp) == pytest.approx(expect)
    assert cm.layer_ms(LayerPlan.dense(geom, 5, 64)) == pytest.approx(float(cm.dense_ms(n, 5)))
    only_skip = LayerPlan.single("skip", {}, geom, 5, 64)
    assert cm.layer_ms(only_skip) == pytest.approx(float(cm.fill_ms(5, n)))
    plan = Plan.dense(geom, 3, 2, 5, 64)
    assert cm.plan_ms(plan) == pytest.approx(cm.dense_plan_ms(plan)) == pytest.approx(6 * float(cm.dense_ms(n, 5)))


def test_additive_form_is_the_throughput_of_many_waves():
    """Far beyond one wave the additive per-head sum + launch is the full model within a few %."""
    geom = Geometry(13, 45, 56)
    lp = LayerPlan.from_heads([("diagonal", {"rows": r}) for r in (4, 8, 16, 32)] * 3, geom, 128)
    cm = CostModel(DEFAULT_TABLE, head_dim=128)
    f = layer_features(lp)
    additive = (cm.head_work_ms(f.counts.sum(1), lp.num_blocks, 128, f.num_tokens).sum()
                + cm.launch_overhead_ms(128))
    assert additive == pytest.approx(cm.layer_ms(lp), rel=0.05)


def test_dense_layers_cost_what_the_runtime_runs_them_with():
    """On a Hopper table an all-dense layer at block size 128 runs the sparse kernel with every key
    block kept (runtime.dense), so it costs that; at block size 64, or on a table of another
    architecture, it runs cuDNN. The plan's dense baseline stays cuDNN either way."""
    import dataclasses

    geom = Geometry(4, 16, 32, 20)
    n, heads = geom.num_tokens, 6
    nb = -(-n // 128)
    hopper = CostModel(DEFAULT_TABLE, head_dim=128)
    assert hopper.table.software["capability"][0] == 9
    assert hopper.dense_on_kernel(128) and not hopper.dense_on_kernel(64)
    kernel = hopper.sparse_ms(np.full((heads, nb), nb), 128, n)
    lp = LayerPlan.dense(geom, heads, 128)
    assert lp.is_dense and not LayerPlan.from_heads([("dense", {})] * 5 + [("skip", {})], geom, 128).is_dense
    assert hopper.layer_ms(lp) == pytest.approx(kernel)
    assert hopper.layer_ms(LayerPlan.dense(geom, heads, 64)) == pytest.approx(float(hopper.dense_ms(n, heads)))
    plan = Plan.dense(geom, 2, 3, heads, 128)
    assert hopper.plan_ms(plan) == pytest.approx(6 * kernel)
    assert hopper.dense_plan_ms(plan) == pytest.approx(6 * float(hopper.dense_ms(n, heads)))
    other = dataclasses.replace(hopper.table, software={**hopper.table.software, "capability": [8, 0]})
    ampere = CostModel(other, head_dim=128)
    assert ampere.layer_ms(LayerPlan.dense(geom, heads, 128)) == pytest.approx(float(ampere.dense_ms(n, heads)))


# --- FP8 kept blocks: the table's FP8 variants and quantization pass ------------------------------

#: A planted FP8 kernel and quantization pass (not the shipped table's calibrated ones).
FP8_KERNEL = LaunchParams(4.0, 1100.0, 1.0, 3)
QUANTIZE = FillParams(9.0, 1800.0)


def with_fp8(table, keys=("d128_b128_fp8",), quantize=QUANTIZE):
    """``table`` plus the planted FP8 variants under ``keys`` and the quantization pass."""
    import dataclasses

    return dataclasses.replace(table, sparse={**table.sparse, **{k: FP8_KERNEL for k in keys}}, quantize=quantize)


def test_the_shipped_h100_table_prices_fp8():
    shipped = load_hardware(DEFAULT_TABLE)
    assert shipped.precisions == ("native", "fp8") and shipped.quantize is not None
    cm = CostModel(DEFAULT_TABLE, head_dim=128)
    assert all(cm.supports("fp8", b) for b in (64, 128)) and CostModel(DEFAULT_TABLE, head_dim=64).supports("fp8", 64)


def test_variant_keys_name_head_dim_block_size_and_precision():
    assert variant_key(128, 128) == variant_key(128, 128, "native") == "d128_b128"
    assert variant_key(64, 64, "fp8") == "d64_b64_fp8"
    for key in ("d128_b128", "d64_b64_fp8"):
        assert variant_key(*parse_variant_key(key)) == key
    assert parse_variant_key("d64_b128_fp8") == (64, 128, "fp8")
    for bad in ("d128_b128_native", "d128_b128_int8", "d128", "b128_d128", "d0_b128"):
        with pytest.raises(HardwareError, match="not d{D}_b{B}"):
            parse_variant_key(bad)
    with pytest.raises(HardwareError, match="precision: must be one of"):
        variant_key(128, 128, "int8")


def test_table_round_trip_with_and_without_fp8(tmp_path):
    shipped = native_only_table()
    assert shipped.quantize is None and shipped.precisions == ("native",)
    plain = tmp_path / "plain.json"
    shipped.save(plain)
    data = json.loads(plain.read_text())
    assert "quantize" not in data["params"] and not any(k.endswith("_fp8") for k in data["params"]["sparse"])
    again = load_hardware(str(plain))
    assert again.sparse == shipped.sparse and again.fill == shipped.fill and again.quantize is None

    fp8 = with_fp8(shipped, ("d128_b128_fp8", "d64_b64_fp8"))
    path = tmp_path / "fp8.json"
    fp8.save(path)
    data = json.loads(path.read_text())
    assert data["version"] == 1
    assert data["params"]["sparse"]["d128_b128_fp8"] == {"launch_us": 4.0, "tile_ns": 1100.0, "item_tiles": 1.0,
                                                        "slots_per_sm": 3}
    assert data["params"]["quantize"] == {"launch_us": 9.0, "gbps": 1800.0}
    back = load_hardware(str(path))
    assert back.sparse == fp8.sparse and back.quantize == QUANTIZE and back.precisions == ("native", "fp8")

    data["params"]["sparse"]["d128_b128_int8"] = data["params"]["sparse"].pop("d128_b128_fp8")
    path.write_text(json.dumps(data))
    with pytest.raises(HardwareError, match=r"fp8.json: params.sparse: sparse variant 'd128_b128_int8'"):
        load_hardware(str(path))
    data["params"]["sparse"]["d128_b128_fp8"] = data["params"]["sparse"].pop("d128_b128_int8")
    data["params"]["quantize"] = {"launch_us": 1.0, "gbps": 0}
    path.write_text(json.dumps(data))
    with pytest.raises(HardwareError, match="params.quantize: launch_us must be ≥ 0 and gbps > 0"):
        load_hardware(str(path))


def test_a_table_without_fp8_says_so_for_every_fp8_figure(tmp_path):
    cm = CostModel(native_only_table(tmp_path), head_dim=128)
    assert cm.supports("native", 128) and cm.supports("native", 64) and not cm.supports("native", 32)
    assert not cm.supports("fp8", 128) and not cm.supports("fp8", 64)
    assert cm.describe()["precisions"] == ["native"]
    counts = np.full((4, 8), 3)
    figures = {"sparse_ms": lambda: cm.sparse_ms(counts, 128, 1024, "fp8"),
               "head_work_ms": lambda: cm.head_work_ms(24, 8, 128, 1024, "fp8"),
               "launch_overhead_ms": lambda: cm.launch_overhead_ms(128, "fp8"),
               "quantize_ms": lambda: cm.quantize_ms(4, 1024),
               "quantize_head_ms": lambda: cm.quantize_head_ms(1024),
               "quantize_overhead_ms": lambda: cm.quantize_overhead_ms()}
    for name, figure in figures.items():
        with pytest.raises(HardwareError) as err:
            figure()
        line = str(err.value)
        assert "\n" not in line and cm.table.source in line, name
        assert "FP8" in line and "compute capability ≥ 8.9" in line and "attnsearch calibrate" in line, name
    # The native figures are those of before.
    assert cm.sparse_ms(counts, 128, 1024) == cm.sparse_ms(counts, 128, 1024, "native")
    # A table with FP8 at one kernel only: the other is not supported, and without the pass none is.
    partial = CostModel(with_fp8(native_only_table()), head_dim=128)
    assert partial.supports("fp8", 128) and not partial.supports("fp8", 64)
    assert partial.describe()["precisions"] == ["native", "fp8"]
    with pytest.raises(HardwareError, match="no FP8 sparse-kernel calibration for head_dim 128, block size 64"):
        partial.sparse_ms(counts, 64, 1024, "fp8")
    no_pass = CostModel(with_fp8(native_only_table(), quantize=None), head_dim=128)
    assert not no_pass.supports("fp8", 128) and no_pass.describe()["precisions"] == ["native"]
    with pytest.raises(HardwareError, match="no calibration of the FP8 quantization pass"):
        no_pass.quantize_ms(4, 1024)


def test_quantize_ms_is_launch_plus_the_bytes_moved_over_bandwidth():
    cm = CostModel(with_fp8(native_only_table()), head_dim=128, batch=2)
    # 2 batch × 5 heads × 128 channels × (32,760 tokens × (bf16 q, k read once, v twice: 8 bytes;
    # e4m3 q, k written: 2 bytes) + e4m3 v written in rows padded to 32,768 tokens) = 461,271,040 bytes.
    nbytes = 2 * 5 * 128 * (32760 * (4 * 2 + 2) + 32768)
    assert nbytes == 461_271_040 and float(quantize_bytes(2, 5, 32760, 128)) == nbytes
    assert float(cm.quantize_ms(5, 32760)) == pytest.approx(0.009 + nbytes / 1.8e12 * 1e3, rel=1e-12)
    assert float(cm.quantize_ms(0, 32760)) == 0.0
    assert cm.quantize_overhead_ms() == pytest.approx(0.009)
    assert cm.quantize_head_ms(32760) == pytest.approx(nbytes / 5 / 1.8e12 * 1e3, rel=1e-12)
    assert cm.quantize_ms([1, 3], 32760).tolist() == pytest.approx(
        [0.009 + h * cm.quantize_head_ms(32760) for h in (1, 3)])
    # vectorised over token counts; fp32 inputs read 4 bytes a value
    assert quantize_bytes(1, 1, [16, 17], 64, 4).tolist() == [64 * (16 * 18 + 16), 64 * (17 * 18 + 32)]


def test_fp8_additive_form_is_the_throughput_of_many_waves():
    """The FP8 heads' kernel and quantization shares, plus the FP8 launch and the pass's fixed part,
    are the full model's FP8 launch and pass within a few % far beyond one wave."""
    geom = Geometry(13, 45, 56)
    lp = LayerPlan.from_heads([("diagonal", {"rows": r}) for r in (4, 8, 16, 32)] * 3, geom, 128)
    cm = CostModel(with_fp8(native_only_table()), head_dim=128)
    f = layer_features(lp)
    heads, n = f.computed_heads, f.num_tokens
    assert f.items > 5 * FP8_KERNEL.slots(cm.sm_count)                           # many waves
    kernel = cm.head_work_ms(f.counts.sum(1), lp.num_blocks, 128, n, "fp8").sum() + cm.launch_overhead_ms(128, "fp8")
    assert kernel == pytest.approx(cm.sparse_ms(f.counts, 128, n, "fp8"), rel=0.05)
    additive = kernel + heads * cm.quantize_head_ms(n) + cm.quantize_overhead_ms()
    full = cm.sparse_ms(f.counts, 128, n, "fp8") + float(cm.quantize_ms(heads, n))
    assert additive == pytest.approx(full, rel=0.05)
    # The FP8 kernel's own constants, not the native kernel's.
    assert cm.sparse_ms(f.counts, 128, n, "fp8") != pytest.approx(cm.sparse_ms(f.counts, 128, n), rel=0.05)
    assert cm.launch_overhead_ms(128, "fp8") == pytest.approx(FP8_KERNEL.launch_us * 1e-3)


def test_fit_recovers_planted_fp8_and_quantize_constants():
    """Points of a native kernel, its FP8 variant (other constants) and the quantization pass, timed
    by a device following the planted constants (±1 % noise): the fit tells them apart."""
    rng = np.random.default_rng(1)
    native = LaunchParams(5.0, 1500.0, 2.0, 2)
    points = []
    for precision, true in (("native", native), ("fp8", FP8_KERNEL)):
        for _ in range(40):
            lengths = rng.integers(0, rng.integers(2, 200), rng.integers(20, 3000)).astype(float)
            point = {"kind": "sparse", "head_dim": 128, "block_size": 128, "num_tokens": 8192, "heads": 8,
                     "ms": true.ms(lengths, 132) * rng.lognormal(0, 0.01), "_lengths": lengths}
            points.append(point if precision == "native" else dict(point, precision=precision))
    for nbytes in (1.2e4, 3.9e5, 6.3e6, 7.5e7, 3.0e8, 1.2e9):
        points.append({"kind": "quantize", "bytes": nbytes, "ms": float(QUANTIZE.ms(nbytes)) * rng.lognormal(0, 0.01)})
        points.append({"kind": "fill", "bytes": nbytes, "ms": float(FillParams(3.0, 2500.0).ms(nbytes))})
    fitted = fit(points, 132)
    assert set(fitted.sparse) == {"d128_b128", "d128_b128_fp8"}
    for key, true in (("d128_b128", native), ("d128_b128_fp8", FP8_KERNEL)):
        got = fitted.sparse[key]
        assert got.slots_per_sm == true.slots_per_sm and got.item_tiles == pytest.approx(true.item_tiles, abs=0.26)
        assert got.tile_ns_at(8192) == pytest.approx(true.tile_ns, rel=0.03), key
        assert fitted.report[f"sparse.{key}"]["max_abs_rel_err"] < 0.05
    assert fitted.quantize.gbps == pytest.approx(QUANTIZE.gbps, rel=0.03)
    assert fitted.quantize.launch_us == pytest.approx(QUANTIZE.launch_us, rel=0.05)
    assert fitted.report["quantize"]["points"] == 6 and fitted.fill.gbps == pytest.approx(2500.0)
    # An FP8 variant a time budget cut short is left out (the native ones must fit).
    few = [p for p in points if p.get("precision") != "fp8"] + [p for p in points if p.get("precision") == "fp8"][:3]
    short = fit(few, 132)
    assert "d128_b128_fp8" not in short.sparse and short.report["sparse.d128_b128_fp8"]["points"] == 3
    # Without quantization points: no pass (the table then supports no FP8).
    assert fit([p for p in points if p["kind"] != "quantize"], 132).quantize is None


def test_a_layer_of_native_and_fp8_heads_costs_two_launches_and_the_pass(tmp_path):
    """A layer plan's FP8 head groups run as their own launch on the FP8 kernel plus the quantization
    pass over their heads; its native heads as the native launch; skip heads as the fill (counts
    from brute-force masks)."""
    geom = Geometry(4, 16, 32, 20)
    heads = [("diagonal", {"rows": 2}), ("skip", {}), ("vertical_stripe", {"key_blocks": [0, 3]}),
             ("dense", {}), ("diagonal", {"rows": 6}), ("energy_decay", {"decay": 0.5})]
    precisions = ["fp8", "native", "native", "fp8", "fp8", "native"]
    lp = LayerPlan.from_heads(heads, geom, 128, precisions=precisions)
    cm = CostModel(with_fp8(native_only_table()), head_dim=128)
    n = geom.num_tokens
    rows = {p: np.stack([block_mask(name, q, geom, 128).sum(-1).numpy() for (name, q), hp in zip(heads, precisions)
                         if name != "skip" and hp == p]) for p in ("native", "fp8")}
    expect = (cm.sparse_ms(rows["native"], 128, n) + cm.sparse_ms(rows["fp8"], 128, n, "fp8")
              + float(cm.quantize_ms(3, n)) + float(cm.fill_ms(1, n)))
    assert cm.layer_ms(lp) == pytest.approx(expect, rel=1e-12)
    # Every head in FP8, dense ones included (an FP8 dense layer is no cuDNN call): one FP8 launch.
    dense8 = LayerPlan.dense(geom, 4, 128).with_precision("fp8")
    nb = lp.num_blocks
    assert cm.layer_ms(dense8) == pytest.approx(cm.sparse_ms(np.full((4, nb), nb), 128, n, "fp8")
                                                + float(cm.quantize_ms(4, n)), rel=1e-12)
    # The same layer in native precision is costed as before; on a table without FP8 the FP8 one raises.
    assert cm.layer_ms(LayerPlan.from_heads(heads, geom, 128)) == pytest.approx(
        cm.sparse_ms(np.concatenate([rows["native"], rows["fp8"]]), 128, n) + float(cm.fill_ms(1, n)), rel=1e-12)
    with pytest.raises(HardwareError, match="compute capability ≥ 8.9"):
        CostModel(native_only_table(tmp_path), head_dim=128).layer_ms(lp)


def with_host(table, fp8_us: float = 300.0):
    """``table`` with planted host dispatch costs: a sparse call 40 µs + 20 per native launch +
    ``fp8_us`` per FP8 launch and pass + 10 for a fill, on every kernel; a cuDNN call 25 µs."""
    import dataclasses

    from attnsearch.costmodel import HostParams
    from attnsearch.costmodel.table import parse_variant_key, variant_key

    row = {"base_us": 40.0, "native_us": 20.0, "fp8_us": fp8_us, "fill_us": 10.0}
    keys = {variant_key(*parse_variant_key(k)[:2]) for k in table.sparse}
    return dataclasses.replace(table, host=HostParams({k: dict(row) for k in keys}, {"d64": 25.0, "d128": 25.0}))


def test_an_eager_call_costs_at_least_its_host_dispatch(tmp_path):
    """execution "eager": a call costs max(device, host), host = base + a part per launch
    precision and the fill; a small FP8 layer is then dearer than the same masks native, though its
    device time is less; a large layer costs its device time; "graph" is device time everywhere."""
    table = with_host(with_fp8(native_only_table()))
    eager, graph = CostModel(table, head_dim=128, execution="eager"), CostModel(table, head_dim=128)
    assert eager.describe()["execution"] == "eager" and graph.execution == "graph"
    small = LayerPlan.from_heads([("diagonal", {"rows": 2}), ("skip", {})] * 2, Geometry(4, 8, 16), 128)
    mixed = small.with_precision("fp8", heads=[0])
    assert graph.layer_ms(small) < 0.06 and graph.layer_ms(mixed) < 0.1
    assert eager.layer_ms(small) == pytest.approx(max(graph.layer_ms(small), (40 + 20 + 10) * 1e-3), rel=1e-12)
    assert eager.layer_ms(mixed) == pytest.approx(max(graph.layer_ms(mixed), (40 + 20 + 300 + 10) * 1e-3), rel=1e-12)
    assert eager.layer_ms(mixed) > eager.layer_ms(small)
    big = LayerPlan.single("diagonal", {"rows": 8}, Geometry(21, 45, 80), 40, 128)
    assert graph.layer_ms(big) > 1.0 and eager.layer_ms(big) == graph.layer_ms(big)
    assert eager.layer_ms(big.with_precision("fp8")) == graph.layer_ms(big.with_precision("fp8"))
    # cuDNN: the same floor.
    assert float(eager.dense_ms(512, 2)) == pytest.approx(max(float(graph.dense_ms(512, 2)), 0.025), rel=1e-12)
    assert float(eager.dense_ms(75_600, 40)) == float(graph.dense_ms(75_600, 40))


def test_eager_costs_need_a_table_that_measured_the_host(tmp_path):
    from synthetic import table_without_host

    table = with_fp8(load_hardware(table_without_host(tmp_path)))
    assert table.host is None and CostModel(table, head_dim=128).execution == "graph"
    assert CostModel(with_host(table), head_dim=128).execution == "graph"     # device time unless asked
    with pytest.raises(HardwareError, match="no host dispatch costs measured"):
        CostModel(table, head_dim=128, execution="eager")
    with pytest.raises(HardwareError, match="execution: must be one of eager, graph"):
        CostModel(table, head_dim=128, execution="compiled")
    with pytest.raises(HardwareError, match="no host dispatch cost of sparse calls at head_dim 128, block size 256"):
        with_host(table).host.sparse_us(128, 256, ["native"])


def test_host_costs_round_trip_and_bad_ones_are_named(tmp_path):
    table = with_host(with_fp8(native_only_table()))
    path = table.save(tmp_path / "t.json")
    back = load_hardware(str(path))
    assert back.host == table.host
    data = json.loads(path.read_text())
    for mutate, words in ((lambda h: h["sparse"]["d128_b128"].pop("fill_us"), "needs exactly base_us"),
                          (lambda h: h["sparse"]["d128_b128"].__setitem__("fp8_us", -1), "fp8_us: must be a number"),
                          (lambda h: h["dense"].__setitem__("x64", 3.0), "key 'x64' is not d{head_dim}"),
                          (lambda h: h.pop("dense"), "params.host: must be")):
        bad = json.loads(json.dumps(data))
        mutate(bad["params"]["host"])
        (tmp_path / "bad.json").write_text(json.dumps(bad))
        with pytest.raises(HardwareError, match=words.replace("{", r"\{").replace("}", r"\}")):
            load_hardware(str(tmp_path / "bad.json"))


def test_fit_host_separates_the_parts_and_borrows_what_a_kernel_never_showed():
    """Host costs planted per kernel come back from calls of each kind; a kernel timed without FP8
    takes the FP8 part fitted over every kernel, and the fit report says so."""
    from attnsearch.costmodel.fit import fit_host

    true = {(128, 128): (40.0, 20.0, 300.0, 10.0), (64, 64): (30.0, 15.0, 300.0, 10.0)}
    calls = [["native"], ["native", "fill"], ["fp8"], ["native", "fp8"], ["fill"]]
    points = []
    for (d, b), (base, nat, fp8, fill) in true.items():
        cost = {"native": nat, "fp8": fp8, "fill": fill}
        shown = calls if d == 128 else [c for c in calls if "fp8" not in c]
        points.append({"kind": "sparse", "head_dim": d, "block_size": b, "ms": 0.01,
                       "host": [{"parts": c, "us": base + sum(cost[x] for x in c)} for c in shown]})
    points.append({"kind": "dense", "head_dim": 128, "ms": 0.01, "host_us": 21.0})
    points.append({"kind": "dense", "head_dim": 128, "ms": 0.01, "host_us": 25.0})
    points.append({"kind": "sparse", "head_dim": 128, "block_size": 64, "ms": 0.01})   # no host measured
    host, report = fit_host(points)
    assert set(host.sparse) == {"d128_b128", "d64_b64"} and host.dense == {"d128": 23.0}
    for field, want in zip(("base_us", "native_us", "fp8_us", "fill_us"), true[128, 128]):
        assert host.sparse["d128_b128"][field] == pytest.approx(want, abs=1e-6)
    assert host.sparse_us(64, 64, ["native", "fill"]) == pytest.approx(30 + 15 + 10, abs=1e-6)
    assert host.sparse["d64_b64"]["fp8_us"] == pytest.approx(300.0, rel=0.05)
    assert report["host.d64_b64"]["pooled"] == ["fp8"] and "pooled" not in report["host.d128_b128"]
    assert fit_host([p for p in points if p["kind"] == "dense"]) == (None, {})


def test_a_residual_entry_pays_a_dense_call_at_its_exact_step_and_a_pass_at_every_step():
    """Figures by hand: a residual entry of k steps over layers with sparse heads costs, per such
    layer, the layer plan k times, an exact call once (as an all-dense layer runs: the Hopper kernel
    with every block kept on this table), and k elementwise passes over the output (3 bytes moved
    per output byte at the fill's bandwidth); an all-dense layer in it pays nothing more."""
    from attnsearch.plan import ScheduleEntry

    geom = Geometry(4, 16, 32, 20)
    n, heads, batch = geom.num_tokens, 6, 2
    cm = CostModel(DEFAULT_TABLE, head_dim=128, batch=batch)
    sparse = LayerPlan.from_heads([("diagonal", {"rows": 2})] * heads, geom, 128)
    dense = LayerPlan.dense(geom, heads, 128)
    plain = Plan(geom, 128, 6, 2, heads, (ScheduleEntry(0, 6, (sparse, dense)),))
    reuse = plain.with_residual([0, 4])                         # [0, 4) and [4, 6) reuse
    pass_ms = cm.table.fill.launch_us * 1e-3 + 3 * batch * heads * n * 128 * 2 / (cm.table.fill.gbps * 1e6)
    assert cm.residual_pass_ms(heads, n) == pytest.approx(pass_ms)
    extra = 2 * cm.dense_layer_ms(n, heads, 128) + 6 * pass_ms  # one sparse layer, two exact steps
    assert cm.residual_ms(reuse) == pytest.approx(extra)
    assert cm.plan_ms(reuse) == pytest.approx(cm.plan_ms(plain) + extra)
    assert cm.residual_ms(plain) == 0.0
    # a layer of two dense heads among six: the exact call and the passes cover the other four
    mixed = LayerPlan.from_heads([("diagonal", {"rows": 2})] * 4 + [("dense", {})] * 2, geom, 128)
    some = Plan(geom, 128, 6, 2, heads, (ScheduleEntry(0, 6, (mixed, dense)),)).with_residual([0])
    assert cm.residual_ms(some) == pytest.approx(cm.dense_layer_ms(n, 4, 128) + 6 * cm.residual_pass_ms(4, n))
    # heads that opt out of reuse pay neither: one reusing head of the four sparse ones
    opted = Plan(geom, 128, 6, 2, heads, (ScheduleEntry(0, 6, (mixed.with_reuse([False] * 3 + [True] * 3), dense)),)
                 ).with_residual([0])
    assert cm.residual_ms(opted) == pytest.approx(cm.dense_layer_ms(n, 1, 128) + 6 * cm.residual_pass_ms(1, n))
    nobody = Plan(geom, 128, 6, 2, heads, (ScheduleEntry(0, 6, (mixed.with_reuse([False] * 6), dense)),)
                  ).with_residual([0])
    assert cm.residual_ms(nobody) == 0.0
