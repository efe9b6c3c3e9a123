"""Plans are checked as data on load: one PlanError line naming the file and field for every bad
value, never another exception, never a plan that cannot run; plan files are strict JSON."""

from __future__ import annotations

import json
import math
import os
import re
from pathlib import Path

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from test_jsondata import deep_list
from test_plan import plan_dict

from attnsearch import Geometry
from attnsearch.atomic_io import OutputError
from attnsearch.jsondata import MAX_DEPTH
from attnsearch.plan import (
    MAX_HEADS, MAX_TOKENS, LayerPlan, Plan, PlanError, load_plan, validate_plan, write_plan,
)

GROUP0 = ("schedule", 0, "layers", 0, "groups", 0)  # diagonal heads [0, 2] of layer 0, steps [2, 5)


def at(data, path):
    for k in path:
        data = data[k]
    return data


def mutated(path, value):
    data = plan_dict()
    at(data, path[:-1])[path[-1]] = value
    return data


def write_json(path: Path, data) -> Path:
    path.write_text(json.dumps(data))  # Python's json: NaN and Infinity pass, as a careless writer's would
    return path


def refused(tmp_path, data, says: str) -> str:
    """Load ``data`` from a file and from memory: both one PlanError line naming the field."""
    path = write_json(tmp_path / "plan.json", data)
    before = path.read_bytes()
    with pytest.raises(PlanError) as err:
        load_plan(path)
    msg = str(err.value)
    assert msg.startswith(f"{path}: ") and says in msg and len(msg.splitlines()) == 1, msg
    with pytest.raises(PlanError) as err2:
        validate_plan(data)
    assert str(err2.value) == msg[len(f"{path}: "):]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plan.json"] and path.read_bytes() == before
    return msg


# --- reproductions -------------------------------------------------------------------------------


def test_a_band_wider_than_the_video_is_refused(tmp_path):
    msg = refused(tmp_path, mutated((*GROUP0, "params", 0, "rows"), 1e18),
                  "schedule[0].layers[0].groups[0].params[0].rows: diagonal.rows must be at most "
                  "frames × height = 24")
    assert "1e+18" in msg
    # The same rule for every family with a band, and at the limit the plan is fine.
    data = mutated(("schedule", 0, "layers", 1, "groups", 1, "params", 1, "rows"), 24.5)
    refused(tmp_path, data, "multi_diagonal.rows must be at most frames × height = 24")
    data = mutated(("schedule", 0, "layers", 1, "groups", 0, "params", 0), {"key_blocks": [0], "rows": 25})
    refused(tmp_path, data, "vertical_stripe.rows must be at most")
    plan = validate_plan(mutated((*GROUP0, "params", 0, "rows"), 24))
    assert bool(plan.layer_plan(2, 0).block_masks()[0].all())
    with pytest.raises(PlanError, match=r"^groups\[0\]\.params\[0\]\.rows: diagonal.rows must be at most"):
        LayerPlan.single("diagonal", {"rows": 10 ** 18}, Geometry(2, 3, 4), 2, 64)


def test_parameters_beyond_the_geometry_are_refused(tmp_path):
    layer1 = ("schedule", 0, "layers", 1, "groups")
    refused(tmp_path, mutated((*layer1, 1, "params", 0, "frames"), 4),
            "multi_diagonal.frames must be an integer in [0, 3]")
    refused(tmp_path, mutated((*layer1, 0, "params", 1, "key_blocks"), [5]),
            "key_blocks must be a list of block ids in [0, 5)")
    for decay in (0, -0.5, 1.5):
        refused(tmp_path, mutated(("schedule", 0, "layers", 0, "groups", 1, "params", 0, "decay"), decay),
                "energy_decay.decay must be a number in (0.0, 1.0]")


def test_an_unknown_pattern_is_refused(tmp_path):
    refused(tmp_path, mutated((*GROUP0, "pattern"), "diagonol"),
            "schedule[0].layers[0].groups[0].pattern: unknown pattern 'diagonol' (known: dense, diagonal")


@pytest.mark.parametrize("params, says", [
    ([["rows", 1], ["rows", 2]], "params[0]: must be an object, got list"),   # dict() would take it
    ([[1, 2, 3], {"rows": 2}], "params[0]: must be an object, got list"),     # dict() would raise TypeError
    ([None, {"rows": 2}], "params[0]: must be an object, got NoneType"),
    ({"rows": 1}, "params: must be a list, got dict"),
])
def test_params_of_the_wrong_json_type_name_the_field(tmp_path, params, says):
    refused(tmp_path, mutated((*GROUP0, "params"), params), f"schedule[0].layers[0].groups[0].{says}")


@pytest.mark.parametrize("value, says", [
    (math.nan, "params[0].rows: NaN is not a JSON number"),
    (math.inf, "params[0].rows: Infinity is not a JSON number"),
    (10 ** 30, "params[0].rows: integer of 100 bits is outside the signed 64-bit range"),
])
def test_non_finite_and_out_of_range_numbers_name_the_field(tmp_path, value, says):
    refused(tmp_path, mutated((*GROUP0, "params", 0, "rows"), value),
            f"schedule[0].layers[0].groups[0].{says}")


def test_numbers_in_the_metadata_are_finite_and_in_range(tmp_path):
    refused(tmp_path, mutated(("predicted", "speedup"), math.nan), "predicted.speedup: NaN")
    refused(tmp_path, mutated(("predicted", "speedup"), -1.68), "predicted.speedup: must be > 0, got -1.68")
    refused(tmp_path, mutated(("predicted", "rel_err"), -0.1), "predicted.rel_err: must be ≥ 0")
    refused(tmp_path, mutated(("predicted", "attention_ms"), -1), "predicted.attention_ms: must be ≥ 0")
    refused(tmp_path, mutated(("search", "settings"), {"tau": 1.5}), "search.settings.tau: must be in [0, 1]")
    refused(tmp_path, mutated(("search", "density"), 2.0), "search.density: must be in [0, 1]")
    refused(tmp_path, mutated(("search", "pareto"), [{"error": -1.0}]), "search.pareto[0].error: must be ≥ 0")
    refused(tmp_path, mutated(("model", "name"), 3), "model.name: must be a string, got 3")
    refused(tmp_path, mutated(("predicted", "speedup"), None),
            "predicted.speedup: must be a number, got None")
    refused(tmp_path, mutated(("search", "x"), {"y": [math.inf]}), "search.x.y[0]: Infinity")


def test_sizes_the_runtime_cannot_mean_are_refused(tmp_path):
    refused(tmp_path, mutated(("num_heads",), MAX_HEADS + 1),
            f"num_heads: must be an integer [1, {MAX_HEADS}]")
    big = {"frames": MAX_TOKENS, "height": 2, "width": 1, "text_tokens": 0, "text_position": "prefix"}
    refused(tmp_path, mutated(("geometry",), big),
            f"geometry: {2 * MAX_TOKENS} tokens, more than the runtime's")


def test_coverage_gaps_are_refused(tmp_path):
    refused(tmp_path, mutated(("schedule", 1, "steps"), [0, 1]),
            "schedule: steps [1, 2) are covered by no entry")
    data = plan_dict()
    del at(data, ("schedule", 0, "layers"))[2]
    refused(tmp_path, data, "schedule[0].layers: layer(s) 1 of 3 missing")
    refused(tmp_path, mutated((*GROUP0, "heads"), [0, 3]), "head 3 already listed")


@pytest.mark.parametrize("content, says", [
    (b"\xff\xfe{}", "not UTF-8 text (byte 0xff at offset 0)"),
    (b"[" * 100_000 + b"]" * 100_000, "nested too deeply to parse"),
    (b'{"a": ' + b"1" * 5000 + b"}", "Exceeds the limit (4300 digits)"),
    (b'{"format": "attnsearch-plan",', "not valid JSON (line 1, column 30"),
    (b"[1, 2]", "plan: must be an object, got list"),
    (b"null", "plan: must be an object, got NoneType"),
])
def test_load_plan_failures_are_one_plan_error_line(tmp_path, content, says):
    path = tmp_path / "plan.json"
    path.write_bytes(content)
    with pytest.raises(PlanError) as err:
        load_plan(path)
    msg = str(err.value)
    assert msg.startswith(f"{path}: ") and says in msg and len(msg.splitlines()) == 1, msg


def test_deep_nesting_inside_a_valid_plan_is_refused(tmp_path):
    data = mutated(("search", "deep"), "DEEP")
    path = tmp_path / "plan.json"
    for depth in (MAX_DEPTH, 900, 100_000):  # below Python's parser limit and above it
        nest = "[" * depth + "]" * depth
        path.write_text(json.dumps(data).replace('"DEEP"', nest))
        with pytest.raises(PlanError, match=rf"^{re.escape(str(path))}: .*nested"):
            load_plan(path)
        with pytest.raises(PlanError, match="nested deeper than"):
            validate_plan(mutated(("search", "deep"), deep_list(depth)))
    with pytest.raises(PlanError, match=r"^groups\[0\]\.params\[0\]\.rows(\[0\]){11}…: nested deeper than"):
        LayerPlan.single("diagonal", {"rows": deep_list(100_000)}, Geometry(2, 3, 4), 2, 64)


def test_a_folder_or_missing_file_names_the_path(tmp_path):
    with pytest.raises(PlanError, match=rf"^{re.escape(str(tmp_path))}: is a directory, not a plan file$"):
        load_plan(tmp_path)
    with pytest.raises(PlanError, match=r"cannot read plan file \(No such file or directory\)$"):
        load_plan(tmp_path / "none.json")


# --- strict JSON out, documented nulls in ------------------------------------------------------


def strict_loads(text: str):
    def refuse(name):
        raise AssertionError(f"non-strict JSON constant {name}")

    return json.loads(text, parse_constant=refuse)


def test_an_infinite_psnr_is_written_as_null_and_read_back(tmp_path):
    data = plan_dict()
    data["search"] = {"validation": {"rel_l2": 0.0, "psnr_db": math.inf},
                      "pareto": [{"trial": 0, "speedup": 1.2, "rel_l2": math.nan, "psnr_db": -math.inf}]}
    plan = Plan.from_dict(data)
    assert plan.search["validation"]["psnr_db"] is None
    memory = Plan(plan.geometry, plan.block_size, plan.num_steps, plan.num_layers, plan.num_heads,
                  plan.schedule, model=data["model"], hardware=data["hardware"], predicted=data["predicted"],
                  search=data["search"])
    assert memory.search["validation"]["psnr_db"] == math.inf  # kept as given in memory
    path = write_plan(memory, tmp_path / "plan.json")
    stored = strict_loads(path.read_text())
    assert stored["search"] == {"validation": {"rel_l2": 0.0, "psnr_db": None},
                                "pareto": [{"trial": 0, "speedup": 1.2, "rel_l2": None, "psnr_db": None}]}
    assert load_plan(path) == plan and load_plan(path).to_dict() == memory.to_dict()
    # A file written before plans were strict (Python's json wrote Infinity) still loads, the same way.
    old = write_json(tmp_path / "old.json", data)
    assert "Infinity" in old.read_text() and load_plan(old) == plan


def test_non_finite_numbers_elsewhere_are_not_written(tmp_path):
    plan = Plan.from_dict(plan_dict())
    with pytest.raises(PlanError, match=r"^predicted\.speedup: NaN"):
        Plan(plan.geometry, plan.block_size, plan.num_steps, plan.num_layers, plan.num_heads, plan.schedule,
             predicted={"speedup": math.nan})
    with pytest.raises(PlanError, match=r"^search\.validation\.rel_l2: Infinity"):
        Plan(plan.geometry, plan.block_size, plan.num_steps, plan.num_layers, plan.num_heads, plan.schedule,
             search={"validation": {"rel_l2": math.inf}})
    assert list(tmp_path.iterdir()) == []


def test_the_plan_writer_refuses_its_input_and_non_files(tmp_path):
    path = write_plan(Plan.from_dict(plan_dict()), tmp_path / "plan.json")
    before = path.read_bytes()
    with pytest.raises(OutputError, match=r"is also an input of this command; refusing to replace it$"):
        write_plan(Plan.from_dict(plan_dict()), path, inputs=[path])
    with pytest.raises(OutputError, match="is a directory, not a regular file"):
        write_plan(Plan.from_dict(plan_dict()), tmp_path)
    assert path.read_bytes() == before and sorted(os.listdir(tmp_path)) == ["plan.json"]


# --- fuzzing: any mutation of a valid plan loads as a plan that runs, or is one PlanError ------------

LEAVES = st.one_of(
    st.none(), st.booleans(), st.text(max_size=6),
    st.integers(min_value=-(2 ** 70), max_value=2 ** 70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0, 1, -1, 2, 3, 4, 5, 24, 25, 64, 128, 0.5, 1e18, 1e300, 2 ** 63, "dense", "diagonal",
                     "skip", "energy_decay", "attnsearch-plan"]),
)
VALUES = st.recursive(LEAVES, lambda inner: st.lists(inner, max_size=3)
                      | st.dictionaries(st.text(max_size=5), inner, max_size=3), max_leaves=6)


def paths_of(data) -> list[tuple]:
    """Every key path of a JSON value (iteratively), the root excluded."""
    out, stack = [], [((), data)]
    while stack:
        path, value = stack.pop()
        items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) \
            else ()
        for k, v in items:
            out.append((*path, k))
            stack.append(((*path, k), v))
    return out


@st.composite
def plan_mutations(draw):
    data = plan_dict()
    for _ in range(draw(st.integers(1, 4))):
        paths = paths_of(data)
        if not paths:
            break
        path = draw(st.sampled_from(paths))
        parent, key = at(data, path[:-1]), path[-1]
        op = draw(st.sampled_from(["drop", "replace", "wrap", "rename", "extreme", "nudge", "nudge"]))
        if op == "drop":
            del parent[key]
        elif op == "replace":
            parent[key] = draw(VALUES)
        elif op == "wrap":
            parent[key] = draw(st.sampled_from([[parent[key]], {"value": parent[key]}]))
        elif op == "rename" and isinstance(parent, dict):
            parent[draw(st.text(max_size=5))] = parent.pop(key)
        elif op == "nudge":  # a plausible number: near the edges of what the geometry allows
            parent[key] = draw(st.integers(-1, 30) | st.floats(-1, 30))
        else:
            parent[key] = draw(st.sampled_from([math.nan, math.inf, -math.inf, 1e18, -(2 ** 63), 2 ** 64,
                                                10 ** 30, -1, 0, 1e-300]))
    deep = draw(st.sampled_from([None, None, None, 60, MAX_DEPTH + 1, 100_000]))
    if deep is not None:
        path = draw(st.sampled_from(paths_of(data) or [("search",)]))
        at(data, path[:-1])[path[-1]] = "DEEP"
    return data, deep


def check_loaded(plan: Plan) -> None:
    """What a plan that loads guarantees: strict JSON, a stable round trip, runnable layers."""
    stored = plan.to_dict()
    assert Plan.from_dict(strict_loads(json.dumps(stored, allow_nan=False))) == plan
    limit = plan.geometry.frames * plan.geometry.height
    for lp in plan.layer_plans():
        for pattern, params in lp.head_specs:
            assert params.get("rows", 0) <= limit
        if lp.num_blocks <= 64:
            masks = lp.block_masks()
            assert masks.shape == (plan.num_heads, lp.num_blocks, lp.num_blocks)


@pytest.mark.slow
@settings(max_examples=300, deadline=None,  # about 3 s on one CPU core
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(plan_mutations(), st.booleans())
def test_fuzzed_plans_load_or_raise_one_plan_error(tmp_path_factory, mutation, from_file):
    data, deep = mutation
    if from_file:
        path = tmp_path_factory.mktemp("fuzz") / "plan.json"
        text = json.dumps(data)
        if deep is not None:
            text = text.replace('"DEEP"', "[" * deep + "]" * deep, 1)
        path.write_text(text)
        before = path.read_bytes()
        try:
            plan = load_plan(path)
        except PlanError as err:
            event("refused")
            assert str(err).startswith(f"{path}: ") and len(str(err).splitlines()) == 1, err
            assert path.read_bytes() == before and os.listdir(path.parent) == ["plan.json"]
            return
    else:
        if deep is not None:
            for path_ in paths_of(data):
                if at(data, path_) == "DEEP":
                    at(data, path_[:-1])[path_[-1]] = deep_list(deep)
                    break
        try:
            plan = validate_plan(data)
        except PlanError as err:
            event("refused")
            assert len(str(err).splitlines()) == 1, err
            return
    event("loaded")
    check_loaded(plan)


def test_user_text_in_a_message_stays_on_one_line(tmp_path):
    """Keys and values written by whoever made the file are escaped, and odd keys quoted."""
    refused(tmp_path, mutated((*GROUP0, "params", 0), {"rows": 1, "ro\nws": 2}),
            "diagonal: unknown parameter(s) ro\\nws")
    refused(tmp_path, mutated(("search", "a.b\u2028"), {"x": math.nan}), 'search["a.b\\u2028"].x: NaN')
    data = plan_dict()
    data["extra\n"] = 1
    refused(tmp_path, data, '["extra\\n"]: unknown field')


def test_costed_call_reads_the_search_settings_or_names_a_bad_one():
    """(head_dim, batch) the search priced the plan at: the recorded values, (128, 1) where none is
    recorded, and a one-line PlanError for anything but a positive integer (fuzzed: [None])."""
    import dataclasses

    from attnsearch.geometry import Geometry
    from attnsearch.plan import Plan, PlanError

    plan = Plan.dense(Geometry(2, 4, 4), 1, 1, 2, 64)
    assert plan.costed_call() == (128, 1)
    assert dataclasses.replace(plan, search={"settings": {"head_dim": 64, "batch": 2}}).costed_call() == (64, 2)
    for bad in ([None], 0, 1.5, True, "2"):
        with pytest.raises(PlanError, match="search.settings.batch must be a positive integer"):
            dataclasses.replace(plan, search={"settings": {"batch": bad}}).costed_call()
