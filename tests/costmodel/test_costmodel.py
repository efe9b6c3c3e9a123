"""Cost model: list scheduling against a brute-force simulation, the fit against known constants,
table loading and its errors, layer costing against brute-force mask counts."""

from __future__ import annotations

import json

import numpy as np
import pytest

from attnsearch.costmodel.fit import fit_fill, fit_launch
from attnsearch.costmodel import DEFAULT_TABLE, CostModel, HardwareError, LaunchParams, layer_features, load_hardware
from attnsearch.runtime.schedule import assign, item_lengths, list_schedule
from attnsearch.geometry import Geometry
from attnsearch.patterns import block_mask
from attnsearch.plan import LayerPlan, Plan
from reference import list_schedule_by_steps


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
