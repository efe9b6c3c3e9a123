"""Precision as a per-head choice of the search: FP8 twins of the profiled candidates, their prices,
the plan's groups, and what the search refuses."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from attnsearch import load_plan
from attnsearch.costmodel import CostModel
from attnsearch.costmodel.table import DEFAULT_TABLE, load_hardware
from attnsearch.search import SearchError, optimize
from attnsearch.search.problem import Knobs, Problem
from attnsearch.search.space import build_space

import synthetic


@pytest.fixture(scope="module")
def fp8_profile(tmp_path_factory):
    return synthetic.small_profile(tmp_path_factory.mktemp("fp8"), precisions=("native", "fp8"))


@pytest.fixture(scope="module")
def large_fp8_profile(tmp_path_factory):
    """2 steps × 2 layers × 4 heads at N = 8,192 (B = 64), with FP8 errors."""
    return synthetic.large_profile(tmp_path_factory.mktemp("fp8large"), precisions=("native", "fp8"))


def fp8_table(folder, tile_factor: float, quantize_gbps: float = 2000.0, fp8_host_us: float | None = None):
    """The shipped H100 table with planted FP8 variants: every native variant's constants with the
    per-tile time × ``tile_factor``, and a quantization pass of 2 µs + bytes / ``quantize_gbps``.
    ``fp8_host_us``: also host dispatch costs (a sparse call 40 µs + 20 per native launch + this per
    FP8 launch and pass + 10 for a fill; cuDNN 25 µs), so the cost model costs eager calls."""
    data = json.loads(Path(load_hardware(DEFAULT_TABLE).source).read_text())
    sparse = data["params"]["sparse"]
    for key in [k for k in sparse if not k.endswith("_fp8")]:
        sparse[f"{key}_fp8"] = {**sparse[key], "tile_ns": sparse[key]["tile_ns"] * tile_factor}
    data["params"]["quantize"] = {"launch_us": 2.0, "gbps": quantize_gbps}
    data["params"].pop("host", None)
    if fp8_host_us is not None:
        row = {"base_us": 40.0, "native_us": 20.0, "fp8_us": fp8_host_us, "fill_us": 10.0}
        data["params"]["host"] = {"sparse": {k: dict(row) for k in sparse if not k.endswith("_fp8")},
                                  "dense": {k: 25.0 for k in data["params"]["dense"]}}
    path = folder / f"fp8-{tile_factor}-{fp8_host_us}.json"
    path.write_text(json.dumps(data))
    return str(path)


def test_the_space_has_an_fp8_twin_of_every_computed_candidate(fp8_profile):
    _, prof = fp8_profile
    sp = build_space(prof)
    native = [c for c, p in enumerate(sp.precisions) if p == "native"]
    twins = [c for c, p in enumerate(sp.precisions) if p == "fp8"]
    assert len(twins) == len(native) - 1 and "skip" not in {sp.families[c] for c in twins}
    t = prof.table
    assert all(sp.native_columns[c] == c for c in native)
    for c in twins:
        base = sp.native_columns[c]
        assert sp.precisions[base] == "native" and sp.names[c] == sp.names[base] + " fp8"
        assert sp.families[c] == sp.families[base] and sp.params[c] == sp.params[base]
        assert np.array_equal(sp.density[..., c], sp.density[..., base], equal_nan=True)
        rows = t[t["candidate"] == sp.names[base]]
        got = sp.rel_err[rows["step"], rows["layer"], rows["head"], c]
        assert np.array_equal(got, rows["rel_err_fp8"].to_numpy())
    # a profile without the FP8 column: no twins, every candidate native
    assert set(build_space(synthetic_native(prof)).precisions) == {"native"}


def synthetic_native(prof):
    import dataclasses

    return dataclasses.replace(prof, table=prof.table.drop(columns=["rel_err_fp8"]),
                               settings=dataclasses.replace(prof.settings, precisions=("native",)))


def test_fp8_twins_cost_the_fp8_kernel_and_their_share_of_the_quantization_pass(fp8_profile, tmp_path):
    _, prof = fp8_profile
    cm = CostModel(fp8_table(tmp_path, 0.5), head_dim=128)
    pb = Problem(build_space(prof), cm)
    sp, nb, n = pb.space, pb.space.num_blocks, prof.geometry.num_tokens
    c8 = sp.precisions.index("fp8")
    base = sp.names.index(sp.names[c8].removesuffix(" fp8"))
    tiles = sp.density[0, 0, 0, base] * nb * nb
    want8 = cm.head_work_ms(tiles, nb, 64, n, "fp8") + cm.quantize_head_ms(n)
    assert pb.cost[0, 0, 0, c8] == pytest.approx(want8, rel=1e-6)
    assert pb.cost[0, 0, 0, base] == pytest.approx(cm.head_work_ms(tiles, nb, 64, n), rel=1e-6)


@pytest.mark.parametrize("tile_factor,expect_fp8", [(0.05, True), (3.0, False)])
def test_the_search_gives_heads_fp8_where_it_pays(large_fp8_profile, tmp_path, tile_factor, expect_fp8):
    """With FP8 tiles twenty times cheaper most heads run FP8 somewhere on the λ sweep; three times
    dearer, none ever does; the plan's groups carry each head's precision."""
    _, prof = large_fp8_profile
    pb = Problem(build_space(prof), CostModel(fp8_table(tmp_path, tile_factor), head_dim=128))
    shares = []
    for lam in (0.3, 1.0, 3.0, 10.0):
        a = pb.solve(Knobs(lam=lam, ranges=1, block_size=64))
        plan = pb.plan(a)
        shares.append(plan.precision_share("fp8"))
        for layer in range(2):
            if not a.dense_unit[0, layer]:
                heads = plan.layer_plan(0, layer).head_precisions
                assert tuple(pb.space.precisions[c] if pb.space.families[c] != "skip" else "native"
                             for c in a.choice[0, layer]) == heads
    assert (max(shares) > 0.5) if expect_fp8 else max(shares) == 0.0


def test_the_plan_predicts_what_the_cost_model_predicts_for_it(large_fp8_profile, tmp_path):
    """optimize's predicted figures are the cost model's own full-model prediction of the plan it
    wrote, FP8 launches and the quantization pass included; the study records the precisions."""
    path, _ = large_fp8_profile
    hw = fp8_table(tmp_path, 0.05)
    res = optimize(path, hardware=hw, head_dim=128, trials=8, max_error=0.9, out=tmp_path / "p.json")
    plan = load_plan(res.path)
    assert plan.precision_share("fp8") > 0
    assert res.plan.search["settings"]["precisions"] == ["native", "fp8"]
    assert CostModel(hw, head_dim=128).plan_ms(plan) == pytest.approx(plan.predicted["attention_ms"], rel=1e-6)


def test_precisions_native_keeps_every_head_native(large_fp8_profile, tmp_path):
    path, _ = large_fp8_profile
    res = optimize(path, hardware=fp8_table(tmp_path, 0.05), head_dim=128, trials=4, precisions=["native"],
                   max_density=0.6, out=tmp_path / "n.json")
    assert res.plan.precision_share("fp8") == 0.0 and "precisions" not in res.plan.search["settings"]


def test_what_the_search_cannot_price_or_did_not_measure_is_named(fp8_profile, tmp_path):
    path, prof = fp8_profile
    with pytest.raises(SearchError, match=r"precisions: the hardware table native-only has no fp8 kernel"):
        optimize(path, hardware=synthetic.native_only_table(tmp_path), head_dim=128, trials=1, out=tmp_path / "x.json")
    native_path = tmp_path / "native.parquet"
    synthetic_native(prof).save(native_path)
    with pytest.raises(SearchError, match="precisions: the profile did not measure fp8 kept blocks"):
        optimize(native_path, hardware=fp8_table(tmp_path, 0.5), head_dim=128, trials=1, precisions=["native", "fp8"],
                 out=tmp_path / "y.json")
    with pytest.raises(SearchError, match="precisions: must include native"):
        Problem(build_space(prof), CostModel(fp8_table(tmp_path, 0.5), head_dim=128), precisions=("fp8",))


def test_a_unit_of_fp8_heads_is_recosted_with_both_launches_and_the_pass(large_fp8_profile, tmp_path):
    """The full-model cost of a solved unit (what small units are re-costed with, and Ulysses ranks)
    is the cost model's layer_ms of the layer plan written for it: the native launch, the FP8
    launch and the quantization pass of its FP8 heads."""
    _, prof = large_fp8_profile
    cm = CostModel(fp8_table(tmp_path, 0.05), head_dim=128)
    pb = Problem(build_space(prof), cm)
    a = pb.solve(Knobs(lam=1.0, warmup=0, ranges=2, dense_layers=0, block_size=64))
    plan = pb.plan(a)
    checked = 0
    for i, r in enumerate(a.ranges):
        for layer in range(2):
            lp = plan.layer_plan(r.start, layer)
            if a.dense_unit[i, layer] or not lp.precision_heads("fp8"):
                continue
            assert pb._unit_full_ms(r, layer, a.choice[i, layer]) == pytest.approx(cm.layer_ms(lp) * len(r), rel=1e-9)
            checked += 1
    assert checked


def test_an_fp8_profile_searched_native_on_a_table_without_fp8(large_fp8_profile, tmp_path):
    """``--precisions native`` with a profile that measured FP8 and a table that prices none: the
    FP8 twins stay unavailable at every step range (multi-step ranges re-cost stripes, never theirs)."""
    _, prof = large_fp8_profile
    pb = Problem(build_space(prof), CostModel(synthetic.native_only_table(), head_dim=128), precisions=("native",))
    for ranges in (1, 2):
        a = pb.solve(Knobs(lam=1.0, ranges=ranges, block_size=64))
        assert pb.plan(a).precision_share("fp8") == 0.0
    assert not np.isfinite(pb.aggregate(0, 1)[1][..., [p == "fp8" for p in pb.space.precisions]]).any()


def test_host_bound_units_run_their_fp8_heads_native(large_fp8_profile, tmp_path):
    """FP8 tiles twenty times cheaper, but an FP8 launch costing the host 5 ms per call: costed
    eagerly, every unit is host-bound and its FP8 heads run native (the same masks, lower error,
    no extra launch); costed as CUDA-graph replays (device time), the same table gives most heads
    FP8. The plan's prediction is the cost model's, host floor included."""
    path, prof = large_fp8_profile
    hw = fp8_table(tmp_path, 0.05, fp8_host_us=5000.0)
    eager, graph = CostModel(hw, head_dim=128, execution="eager"), CostModel(hw, head_dim=128)
    assert graph.execution == "graph"
    shares = {}
    for name, cm in (("eager", eager), ("graph", graph)):
        pb = Problem(build_space(prof), cm)
        shares[name] = []
        for lam in (0.3, 1.0, 3.0, 10.0):
            a = pb.solve(Knobs(lam=lam, ranges=1, block_size=64))
            plan = pb.plan(a)
            shares[name].append(plan.precision_share("fp8"))
            assert cm.plan_ms(plan) == pytest.approx(a.cost_ms, rel=1e-6)
    assert max(shares["eager"]) == 0.0 and max(shares["graph"]) > 0.5
    # With an FP8 launch that costs the host nothing beyond a native one, eager keeps FP8 where the
    # device time pays.
    cheap = CostModel(fp8_table(tmp_path, 0.05, fp8_host_us=0.0), head_dim=128, execution="eager")
    pb = Problem(build_space(prof), cheap)
    assert max(pb.plan(pb.solve(Knobs(lam=lam, ranges=1, block_size=64))).precision_share("fp8")
               for lam in (0.3, 1.0, 3.0, 10.0)) > 0.5


def test_a_density_cap_no_eager_plan_meets_says_the_calls_are_host_bound(large_fp8_profile, tmp_path):
    """A sparse call that costs the host 10 ms: costed eagerly, every unit turns dense and the
    density cap cannot be met, and the error says why and what to do; costed as device time, the
    same search meets the cap."""
    from attnsearch.search.choose import BudgetError

    path, _ = large_fp8_profile
    hw = fp8_table(tmp_path, 0.5, fp8_host_us=0.0)
    data = json.loads(Path(hw).read_text())
    for row in data["params"]["host"]["sparse"].values():
        row["base_us"] = 10_000.0
    Path(hw).write_text(json.dumps(data))
    with pytest.raises(BudgetError, match="costed eagerly, no sparse layer here beats dense: the calls are host-bound"):
        optimize(path, hardware=hw, head_dim=128, trials=6, max_density=0.5, execution="eager",
                 out=tmp_path / "e.json", precisions=["native"])
    res = optimize(path, hardware=hw, head_dim=128, trials=6, max_density=0.5, out=tmp_path / "g.json",
                   precisions=["native"])
    assert res.plan.mean_density <= 0.5 and res.plan.hardware["execution"] == "graph"
