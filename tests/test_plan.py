"""Plan JSON: round trip, lookup, and validation errors that name their field."""

from __future__ import annotations

import copy
import json

import pytest
import torch

from attnsearch import Geometry, block_mask
from attnsearch.plan import LayerPlan, Plan, PlanError, ScheduleEntry, load_plan, validate_plan, write_plan

GEOM = Geometry(frames=4, height=6, width=10, text_tokens=20, text_position="prefix")  # N = 260
B = 64


def layer(groups):
    return {"groups": groups}


def plan_dict():
    """3 layers × 4 heads; steps [0, 2) dense, [2, 5) sparse with every family."""
    sparse_layers = [
        {"layer": 0, "groups": [
            {"pattern": "diagonal", "heads": [0, 2], "params": [{"rows": 1}, {"rows": 2.5}]},
            {"pattern": "energy_decay", "heads": [1], "params": [{"decay": 0.5}], "precision": "fp8"},
            {"pattern": "skip", "heads": [3], "params": [{}]},
        ]},
        {"layer": 2, "groups": [
            {"pattern": "vertical_stripe", "heads": [3, 1],
             "params": [{"key_blocks": [0, 2]}, {"key_blocks": [1]}]},
            {"pattern": "multi_diagonal", "heads": [0, 2],
             "params": [{"rows": 1, "frames": 1}, {"rows": 0.5}]},
        ]},
        {"layer": 1, "groups": [{"pattern": "dense", "heads": [0, 1, 2, 3], "params": [{}] * 4}]},
    ]
    return {
        "format": "attnsearch-plan", "version": 2,
        "model": {"name": "toy", "fingerprint": "abc"},
        "geometry": GEOM.to_dict(), "block_size": B,
        "num_steps": 5, "num_layers": 3, "num_heads": 4,
        "hardware": {"device": "H100", "calibration": "kernels/h100.json"},
        "schedule": [{"steps": [2, 5], "layers": sparse_layers}, {"steps": [0, 2], "layers": "dense"}],
        "predicted": {"attention_ms": 1.0, "dense_attention_ms": 2.0, "speedup": 2.0, "rel_err": 0.01},
        "search": {"trial": 7},
    }


def test_round_trip_through_file(tmp_path):
    plan = Plan.from_dict(plan_dict())
    path = write_plan(plan, tmp_path / "sub" / "plan.json")
    assert [p.name for p in path.parent.iterdir()] == ["plan.json"]  # temp file renamed away
    again = load_plan(path)
    assert again == plan
    assert again.to_dict() == plan.to_dict()
    assert json.loads(path.read_text())["schedule"][0]["steps"] == [0, 2]  # sorted by start


def test_layer_plan_lookup_and_masks():
    plan = Plan.from_dict(plan_dict())
    for step in (0, 1):
        lp = plan.layer_plan(step, 2)
        assert all(g.pattern == "dense" for g in lp.groups) and lp.density == 1.0
    lp = plan.layer_plan(4, 0)
    assert lp.skip_heads == (3,) and lp.computed_heads == (0, 1, 2)
    masks = lp.block_masks()
    assert masks.shape == (4, 5, 5) and masks.dtype == torch.bool
    assert torch.equal(masks[0], block_mask("diagonal", {"rows": 1}, GEOM, B))
    assert torch.equal(masks[2], block_mask("diagonal", {"rows": 2.5}, GEOM, B))
    assert torch.equal(masks[1], block_mask("energy_decay", {"decay": 0.5}, GEOM, B))
    assert not masks[3].any()
    # Parameters come back normalized (defaults filled in).
    assert plan.layer_plan(2, 1 + 1).head_specs[1] == ("vertical_stripe", {"key_blocks": [1], "rows": 0.0})
    # Equal content, equal key: the runtime caches share them across layers and steps.
    assert plan.layer_plan(2, 0) == plan.layer_plan(3, 0) and hash(plan.layer_plan(2, 0)) == hash(lp)
    assert plan.layer_plan(2, 0) != plan.layer_plan(2, 2)
    assert len(plan.layer_plans()) == 3  # the dense layer of the sparse entry equals the dense default


@pytest.mark.parametrize("step,layer,field", [(5, 0, "step"), (-1, 0, "step"), (0, 3, "layer")])
def test_lookup_outside_the_plan(step, layer, field):
    with pytest.raises(PlanError, match=f"^{field}: "):
        Plan.from_dict(plan_dict()).layer_plan(step, layer)


def mutate(fn):
    d = plan_dict()
    fn(d)
    return d


SPARSE = lambda d: d["schedule"][0]["layers"]  # noqa: E731


@pytest.mark.parametrize("edit,field", [
    (lambda d: d.update(format="other"), "^format: "),
    (lambda d: d.update(version=5), "^version: "),
    (lambda d: d.update(version=1), r"^schedule\[0\].layers\[0\].groups\[1\].precision: a version 1 plan"),
    (lambda d: SPARSE(d)[0]["groups"][1].update(precision="fp16"), r"^schedule\[0\].layers\[0\].groups\[1\]"
                                                                    r".precision: must be one of"),
    (lambda d: SPARSE(d)[0]["groups"][2].update(precision="fp8"), r"^schedule\[0\].layers\[0\].groups\[2\]"
                                                                   r".precision: a skip group"),
    (lambda d: d.pop("geometry"), "^geometry: missing"),
    (lambda d: d.update(extra=1), "^extra: unknown field"),
    (lambda d: d["geometry"].update(frames=0), "^geometry: geometry.frames"),
    (lambda d: d.update(block_size=32), "^block_size: "),
    (lambda d: d.update(num_heads=0), "^num_heads: "),
    (lambda d: d["model"].update(name=3), "^model.name: "),
    (lambda d: d["schedule"][1].update(steps=[0, 1]), r"^schedule: steps \[1, 2\) are covered by no entry"),
    (lambda d: d["schedule"][0].update(steps=[1, 5]),
     r"^schedule\[0\].steps: \[1, 5\) overlaps schedule\[1\]"),
    (lambda d: d["schedule"][0].update(steps=[2, 6]), r"^schedule\[0\].steps\[1\]: "),
    (lambda d: d["schedule"][0].update(steps=[3, 3]), r"^schedule\[0\].steps\[1\]: "),
    (lambda d: d["schedule"][1].update(layers="sparse"), r"^schedule\[1\].layers: must be \"dense\""),
    (lambda d: SPARSE(d).pop(1), r"^schedule\[0\].layers: layer\(s\) 2 of 3 missing"),
    (lambda d: SPARSE(d)[1].update(layer=0), r"^schedule\[0\].layers\[1\].layer: layer 0 already listed"),
    (lambda d: SPARSE(d)[1].update(layer=3), r"^schedule\[0\].layers\[1\].layer: "),
    (lambda d: SPARSE(d)[0]["groups"][0].update(pattern="banded"),
     r"^schedule\[0\].layers\[0\].groups\[0\].pattern: unknown pattern"),
    (lambda d: SPARSE(d)[0]["groups"][0]["params"][1].update(rows=-1),
     r"^schedule\[0\].layers\[0\].groups\[0\].params\[1\].rows: diagonal.rows must be"),
    (lambda d: SPARSE(d)[0]["groups"][1]["params"][0].update(decay=2),
     r"^schedule\[0\].layers\[0\].groups\[1\].params\[0\].decay: "),
    (lambda d: SPARSE(d)[1]["groups"][0]["params"][0].update(key_blocks=[9]),
     r"^schedule\[0\].layers\[1\].groups\[0\].params\[0\].key_blocks: "),
    (lambda d: SPARSE(d)[0]["groups"][0]["params"][0].update(width=3),
     r"^schedule\[0\].layers\[0\].groups\[0\].params\[0\]: diagonal: unknown parameter"),
    (lambda d: SPARSE(d)[0]["groups"][0]["params"].pop(),
     r"^schedule\[0\].layers\[0\].groups\[0\].params: 1 entries for 2 heads"),
    (lambda d: SPARSE(d)[0]["groups"][1]["heads"].append(0),
     r"^schedule\[0\].layers\[0\].groups\[1\].params: 1 entries for 2 heads"),
    (lambda d: SPARSE(d)[0]["groups"][2].update(heads=[0]),
     r"^schedule\[0\].layers\[0\].groups\[2\].heads\[0\]: head 0 already listed in groups\[0\]"),
    (lambda d: SPARSE(d)[0]["groups"].pop(2),
     r"^schedule\[0\].layers\[0\].groups: head\(s\) 3 of 4 appear in no"),
    (lambda d: SPARSE(d)[0]["groups"][2].update(heads=[4]),
     r"^schedule\[0\].layers\[0\].groups\[2\].heads\[0\]: "),
])
def test_validation_names_the_field(edit, field):
    with pytest.raises(PlanError, match=field):
        validate_plan(mutate(edit))


def test_valid_plan_passes_and_original_untouched():
    d = plan_dict()
    before = copy.deepcopy(d)
    assert isinstance(validate_plan(d), Plan)
    assert d == before


def test_load_plan_reports_path_and_json_errors(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"format": ')
    with pytest.raises(PlanError, match=r"bad.json: not valid JSON \(line 1"):
        load_plan(bad)
    d = plan_dict()
    d["version"] = 9
    bad.write_text(json.dumps(d))
    with pytest.raises(PlanError, match=r"bad.json: version: "):
        validate_plan(bad)
    with pytest.raises(PlanError, match="cannot read"):
        load_plan(tmp_path / "missing.json")


def test_dense_plan_and_single_layer_plan():
    plan = Plan.dense(GEOM, num_steps=3, num_layers=2, num_heads=5, block_size=128)
    assert Plan.from_dict(plan.to_dict()) == plan
    lp = plan.layer_plan(2, 1)
    assert lp.num_heads == 5 and lp.block_masks().all()
    single = LayerPlan.single("diagonal", {"rows": 1}, GEOM, num_heads=3, block_size=B)
    assert len(single.groups) == 1 and single.groups[0].heads == (0, 1, 2)
    with pytest.raises(PlanError, match=r"^groups\[0\].params\[0\].rows: "):
        LayerPlan.single("diagonal", {"rows": -2}, GEOM, num_heads=2, block_size=B)


def test_check_inputs_names_geometry_and_heads():
    lp = LayerPlan.dense(GEOM, num_heads=4, block_size=B)
    lp.check_inputs(GEOM.num_tokens, 4)
    with pytest.raises(PlanError, match="^geometry: sequence length 259 does not match"):
        lp.check_inputs(259, 4)
    with pytest.raises(PlanError, match="^num_heads: the call has 8 query heads, the plan 4"):
        lp.check_inputs(GEOM.num_tokens, 8)


def test_precision_per_group_round_trips_and_names_each_heads_precision():
    plan = Plan.from_dict(plan_dict())
    lp = plan.layer_plan(3, 0)
    assert lp.head_precisions == ("native", "fp8", "native", "native")
    assert lp.precision_heads("fp8") == (1,) and lp.precision_heads("native") == (0, 2)  # skip head 3: neither
    assert lp.precisions == ("native", "fp8")
    stored = plan.to_dict()["schedule"][1]["layers"][0]["groups"]   # sorted by start: [0, 2) is dense
    assert [g.get("precision") for g in stored] == [None, "fp8", None]    # the default is not written
    # The same layer in native precision is another plan (runtime caches key on it).
    native = plan_dict()
    del SPARSE(native)[0]["groups"][1]["precision"]
    assert Plan.from_dict(native).layer_plan(3, 0) != lp


def test_version_1_plans_load_as_all_native():
    d = plan_dict()
    del SPARSE(d)[0]["groups"][1]["precision"]
    v2 = Plan.from_dict(d)
    d["version"] = 1
    v1 = Plan.from_dict(d)
    assert v1 == v2 and all(p == "native" for lp in v1.layer_plans() for p in lp.head_precisions)
    assert v1.to_dict()["version"] == 2


def test_from_heads_groups_by_family_and_precision():
    lp = LayerPlan.from_heads([("diagonal", {"rows": 1}), ("diagonal", {"rows": 2}), ("skip", {}),
                               ("dense", {})], GEOM, B, precisions=["fp8", "native", "fp8", "fp8"])
    assert [(g.pattern, g.heads, g.precision) for g in lp.groups] == [
        ("diagonal", (0,), "fp8"), ("diagonal", (1,), "native"), ("skip", (2,), "native"), ("dense", (3,), "fp8")]
    assert not lp.is_dense and LayerPlan.from_heads([("dense", {})] * 2, GEOM, B).is_dense
    with pytest.raises(PlanError, match="^precisions: 1 entries for 4 heads"):
        LayerPlan.from_heads([("dense", {})] * 4, GEOM, B, precisions=["fp8"])


def test_plan_with_precision_converts_every_sparse_layer_and_keeps_dense_ones():
    plan = Plan.from_dict(plan_dict())
    fp8 = plan.with_precision("fp8")
    assert fp8.layer_plan(0, 0).is_dense                                  # a dense entry stays dense
    for step in (2, 4):
        for layer in range(3):
            lp, lp8 = plan.layer_plan(step, layer), fp8.layer_plan(step, layer)
            assert torch.equal(lp.block_masks(), lp8.block_masks())
            assert lp8.head_precisions == tuple("native" if s[0] == "skip" or lp.is_dense else "fp8"
                                                for s in lp.head_specs)          # an all-dense layer stays exact
    assert fp8.predicted == {} and Plan.from_dict(fp8.to_dict()) == fp8
    assert fp8.with_precision("native").layer_plan(3, 0) == plan.layer_plan(3, 0).with_precision("native")


def test_layer_plan_with_precision_of_some_heads_moves_those_alone():
    heads = [("diagonal", {"rows": 2}), ("skip", {}), ("dense", {}), ("diagonal", {"rows": 4})]
    lp = LayerPlan.from_heads(heads, GEOM, B, precisions=["native", "native", "fp8", "native"])
    some = lp.with_precision("fp8", heads=[0, 1])          # head 1 is a skip head: it stays one
    assert some.head_precisions == ("fp8", "native", "fp8", "native")
    assert torch.equal(some.block_masks(), lp.block_masks()) and some.head_specs == lp.head_specs
    back = some.with_precision("native", heads=[0, 2])
    assert back.head_precisions == ("native",) * 4 and back == LayerPlan.from_heads(heads, GEOM, B)
    assert lp.with_precision("fp8") == lp.with_precision("fp8", heads=lp.computed_heads)


def test_precision_share_counts_computed_heads_over_steps():
    plan = Plan.from_dict(plan_dict())
    # steps [0, 2) dense: 2 × 3 layers × 4 native heads; steps [2, 5): layer 0 has 1 FP8 head of 3 computed
    # (head 3 skips), layers 1 and 2 four native heads each.
    total = 2 * 3 * 4 + 3 * (3 + 4 + 4)
    assert plan.precision_share("fp8") == pytest.approx(3 / total)
    assert plan.precision_share("native") == pytest.approx(1 - 3 / total)
    assert plan.with_precision("fp8").precision_share("fp8") == pytest.approx(3 * (3 + 4) / total)


# --- residual reuse ----------------------------------------------------------------------------------


def test_residual_entries_split_listed_entries_at_the_exact_steps(tmp_path):
    plan = Plan.from_dict(plan_dict()).with_residual([0, 3])   # dense [0, 2), sparse [2, 5)
    got = [(e.start, e.stop, e.layers is None, e.residual) for e in plan.schedule]
    # step 0 falls in the dense entry (nothing to reuse); [2, 3) precedes the sparse entry's exact step
    assert got == [(0, 2, True, False), (2, 3, False, False), (3, 5, False, True)]
    assert plan.residual_steps == (3,) and plan.search["residual_steps"] == [0, 3]
    d = plan.to_dict()
    assert d["version"] == 3 and [e.get("residual", False) for e in d["schedule"]] == [False, False, True]
    again = load_plan(write_plan(plan, tmp_path / "plan.json"))
    assert again == plan and again.to_dict() == d
    assert Plan.from_dict(plan_dict()).to_dict()["version"] == 2  # written as the oldest version that holds it
    one = Plan.from_dict(plan_dict()).with_residual([4])  # a one-step remainder runs its masks alone
    assert [(e.start, e.stop, e.residual) for e in one.schedule][1:] == [(2, 4, False), (4, 5, False)]


def test_mean_density_counts_the_exact_calls_of_a_residual_entrys_inexact_heads():
    plain = Plan.from_dict(plan_dict())
    reuse = plain.with_residual([2])
    # layer 0: 4 inexact heads (an FP8 head is inexact too); layer 2: 4; layer 1 all dense: none
    assert [len(lp.inexact_heads) for lp in plain.schedule[1].layers] == [4, 0, 4]
    mixed = LayerPlan.from_heads([("dense", {}), ("diagonal", {"rows": 1}), ("dense", {}), ("skip", {})], GEOM, B)
    assert mixed.inexact_heads == (1, 3)
    # one exact step (of 5 steps × 3 layers): each inexact head computes a dense call beside its mask
    assert reuse.mean_density == pytest.approx(plain.mean_density + (4 / 4 + 4 / 4) / (5 * 3))


def test_residual_bytes_count_one_residual_per_layer_of_its_most_inexact_heads():
    plain = Plan.from_dict(plan_dict())
    assert plain.residual_bytes() == 0
    reuse = plain.with_residual([2])                      # layers 0 and 2: 4 inexact heads each
    n = GEOM.num_tokens
    assert reuse.costed_call() == (128, 1)                # the plan records no costed call: the defaults
    assert reuse.residual_bytes() == 8 * n * 128 * 2
    assert reuse.residual_bytes(head_dim=64, batch=2, element_size=4, calls_per_layer=2) == 8 * n * 64 * 2 * 4 * 2
    d = reuse.to_dict()
    d["search"]["settings"] = {"head_dim": 64, "batch": 2}
    assert Plan.from_dict(d).residual_bytes() == 8 * n * 64 * 2 * 2
    # two residual entries: a layer holds one residual at a time, of its entries' most inexact heads
    one = LayerPlan.from_heads([("diagonal", {"rows": 1})] + [("dense", {})] * 3, GEOM, B)
    three = LayerPlan.from_heads([("diagonal", {"rows": 1})] * 3 + [("dense", {})], GEOM, B)
    twice = Plan(GEOM, B, 4, 1, 4, (ScheduleEntry(0, 2, (one,), residual=True), ScheduleEntry(2, 4, (three,), residual=True)))
    assert twice.residual_bytes() == 3 * n * 128 * 2


@pytest.mark.parametrize("edit, field", [
    (lambda d: d["schedule"][0].update(residual=True), r"^schedule\[0\].residual: a version 2 plan has no residual"),
    (lambda d: (d.update(version=3), d["schedule"][1].update(residual=True)),
     r"^schedule\[1\].residual: a dense entry has no residual"),
    (lambda d: (d.update(version=3), d["schedule"][0].update(residual=1)), r"^schedule\[0\].residual: must be true or false"),
    (lambda d: (d.update(version=3), d["schedule"][0].update(steps=[2, 3], residual=True),
                d["schedule"].append({"steps": [3, 5], "layers": "dense"})),
     r"^schedule\[0\].residual: the entry spans one step \[2, 3\)"),
])
def test_residual_validation_names_the_field(edit, field):
    d = plan_dict()
    edit(d)
    with pytest.raises(PlanError, match=field):
        Plan.from_dict(d)


@pytest.mark.parametrize("steps, message", [
    ([], "must name at least one exact step"), ([1, 1], "listed twice"), ([-1], "integers ≥ 0"),
    ([5], r"step 5 is outside the plan's steps \[0, 5\)"), ([True], "integers ≥ 0"), (3, "must be a list"),
])
def test_residual_steps_are_checked(steps, message):
    with pytest.raises(PlanError, match=f"^residual_steps: .*{message}"):
        Plan.from_dict(plan_dict()).with_residual(steps)


def test_residual_entries_survive_geometry_and_precision_changes():
    plan = Plan.from_dict(plan_dict()).with_residual([2])
    moved = plan.for_geometry(Geometry(frames=8, height=6, width=10, text_tokens=20, text_position="prefix"))
    assert moved.residual_steps == (2,) and plan.with_precision("fp8").residual_steps == (2,)


# --- heads that opt out of reuse ---------------------------------------------------------------------


def test_heads_that_opt_out_of_reuse_are_not_counted_kept_or_exact():
    heads = [("diagonal", {"rows": 1}), ("diagonal", {"rows": 1}), ("dense", {}), ("skip", {})]
    lp = LayerPlan.from_heads(heads, GEOM, B, reuse=[False, True, False, False])
    assert lp.inexact_heads == (0, 1, 3) and lp.reuse_heads == (1,)
    assert lp.head_reuse == (False, True, True, False)            # a native dense head is exact: it counts as yes
    assert lp != LayerPlan.from_heads(heads, GEOM, B)               # reuse is part of the plan's content
    assert lp.with_reuse([True] * 4) == LayerPlan.from_heads(heads, GEOM, B)
    assert lp.with_precision("fp8", [0]).head_reuse == lp.head_reuse
    moved = lp.for_geometry(Geometry(frames=8, height=6, width=10, text_tokens=20, text_position="prefix"))
    assert moved.head_reuse == lp.head_reuse and moved.reuse_heads == (1,)
    plan = Plan(GEOM, B, 4, 1, 4, (ScheduleEntry(0, 4, (lp,), residual=True),))
    every = Plan(GEOM, B, 4, 1, 4, (ScheduleEntry(0, 4, (lp.with_reuse([True] * 4),), residual=True),))
    # the exact step counts one reusing head's exact call, not three; its residual is one head's
    assert plan.mean_density == pytest.approx(lp.density + (1 / 4) / 4)
    assert every.mean_density == pytest.approx(lp.density + (3 / 4) / 4)
    assert plan.residual_bytes() == GEOM.num_tokens * 128 * 2 and every.residual_bytes() == 3 * plan.residual_bytes()


def test_reuse_is_written_as_version_4_and_read_back(tmp_path):
    lp = LayerPlan.from_heads([("diagonal", {"rows": 1}), ("energy_decay", {"decay": 0.5})], GEOM, B,
                              reuse=[False, True])
    plan = Plan(GEOM, B, 4, 1, 2, (ScheduleEntry(0, 4, (lp,), residual=True),))
    d = plan.to_dict()
    assert d["version"] == 4
    assert [g.get("reuse", True) for g in d["schedule"][0]["layers"][0]["groups"]] == [False, True]
    again = load_plan(write_plan(plan, tmp_path / "plan.json"))
    assert again == plan and again.schedule[0].layers[0].reuse_heads == (1,)
    plain = Plan(GEOM, B, 4, 1, 2, (ScheduleEntry(0, 4, (lp.with_reuse([True, True]),), residual=True),))
    assert plain.to_dict()["version"] == 3                      # no head opts out: the version that holds it


@pytest.mark.parametrize("edit, field", [
    (lambda g: g.update(reuse="no"), r"\.groups\[0\]\.reuse: must be true or false"),
    (lambda g: g.update(pattern="dense", params=[{}] * len(g["params"]), reuse=False),
     r"\.groups\[0\]\.reuse: a native dense group is exact attention"),
])
def test_reuse_validation_names_the_field(edit, field):
    d = plan_dict()
    d["version"] = 4
    edit(d["schedule"][0]["layers"][0]["groups"][0])
    with pytest.raises(PlanError, match=field):
        Plan.from_dict(d)


def test_reuse_in_an_older_plan_is_an_error():
    d = plan_dict()
    d["version"] = 3
    d["schedule"][0]["layers"][0]["groups"][0]["reuse"] = False
    with pytest.raises(PlanError, match=r"groups\[0\]\.reuse: a version 3 plan has no reuse \(it came with version 4\)"):
        Plan.from_dict(d)
