"""Fuzzing the commands with mutated inputs: random changes to profiles (metadata, table, maps),
plans, hardware tables and option values, run through classify, optimize, validate, report and
merge. For every run: exit 0 or 2, never a traceback, exactly one error line on failure, no new or
changed file on failure, and no success from a profile with non-finite statistics."""

from __future__ import annotations

import base64
import copy
import json
import math
from functools import lru_cache
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, Phase, assume, event, given, settings
from hypothesis import strategies as st

from cli_inputs import cli, tree

def fuzz(examples: int, *, shrink: bool = True):
    phases = [Phase.explicit, Phase.generate] + ([Phase.shrink] if shrink else [])
    return settings(max_examples=examples, deadline=None, database=None, phases=phases,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much,
                                           HealthCheck.function_scoped_fixture])

LEAVES = st.one_of(
    st.none(), st.booleans(), st.text(max_size=6),
    st.integers(min_value=-(2 ** 70), max_value=2 ** 70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0, 1, -1, 64, 128, 0.5, 1e18, 1e300, "dense", "[/]", "x[postgres]"]),
)
VALUES = st.recursive(LEAVES, lambda inner: st.lists(inner, max_size=3)
                      | st.dictionaries(st.text(max_size=5), inner, max_size=3), max_leaves=6)
CELLS = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(-(2 ** 40), 2 ** 40),
                  st.sampled_from([math.nan, math.inf, -math.inf, -1, 2.0, 1e300, -0.0, 1 + 1e-3]))
STATS = ("density", "recall", "rel_err")


@pytest.fixture(scope="module")
def base(tmp_path_factory, random_profile) -> Path:
    """A valid profile and a plan searched from it."""
    d = tmp_path_factory.mktemp("base")
    random_profile(d / "good.parquet")
    code, out = cli("optimize", d / "good.parquet", "--out", d / "plan.json", "--trials", "3")
    assert code == 0, out
    return d


def paths_of(data) -> list[tuple]:
    """Every key path of a JSON value, the root excluded."""
    out, stack = [], [((), data)]
    while stack:
        path, value = stack.pop()
        items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
        for k, v in items:
            out.append((*path, k))
            stack.append(((*path, k), v))
    return out


def mutate_json(draw, data, rounds: int = 3):
    """``data`` (a copy) with 1..rounds random drops, replacements and extreme numbers."""
    data = copy.deepcopy(data)
    for _ in range(draw(st.integers(1, rounds))):
        paths = paths_of(data)
        if not paths:
            break
        path = draw(st.sampled_from(paths))
        parent = data
        for k in path[:-1]:
            parent = parent[k]
        key = path[-1]
        op = draw(st.sampled_from(["drop", "replace", "extreme"]))
        if op == "drop":
            del parent[key]
        elif op == "replace":
            parent[key] = draw(VALUES)
        else:
            parent[key] = draw(st.sampled_from([math.nan, math.inf, -math.inf, 1e18, -1, 0, 2 ** 64, []]))
    return data


def run_checked(folder: Path, *args) -> tuple[int, str]:
    """Run a command in ``folder``; assert the contract for every command."""
    before = tree(folder)
    code, out = cli(*args)  # a Python exception propagates: a traceback fails the test
    assert code in (0, 2), (code, out)
    if code == 2:
        errors = [line for line in out.splitlines() if line.startswith("error: ")]
        assert len(errors) == 1, out
        after = tree(folder)
        if "trials stay in" in errors[0]:  # a search that ran and met no budget keeps its study, and says so
            after = {k: v for k, v in after.items() if ".optuna.db" not in k}
        assert after == before, f"a failed command changed files: {out}"
    event(f"{args[0]}: exit {code}")
    return code, out


# --- profiles ---------------------------------------------------------------------------------------------


@st.composite
def profile_mutations(draw):
    kind = draw(st.sampled_from(["meta", "meta", "raw", "blob", "cell", "cell", "cell", "dup", "drop", "shift"]))
    if kind == "meta":
        return kind, lambda meta: mutate_json(draw, meta)
    if kind == "raw":
        return kind, draw(st.sampled_from([b"[]", b"{", b"\xff", b"null", b'"x"', b"1e999"]))
    if kind == "blob":
        return kind, draw(st.binary(max_size=40) | st.just(base64.b64encode(b"\x78\x9c garbage")))
    if kind == "cell":
        column = draw(st.sampled_from(["step", "layer", "head", "pattern", "candidate", "params", *STATS, *STATS]))
        texts = st.text(max_size=4) | st.sampled_from(["[/]", "[bold]", "{", "{}", '{"rows": 1e300}'])
        value = draw(texts) if column in ("pattern", "candidate", "params") or draw(st.booleans()) else draw(CELLS)
        return kind, (column, draw(st.integers(0, 10_000)), value)
    if kind in ("dup", "drop"):
        return kind, draw(st.integers(0, 10_000))
    return kind, (draw(st.sampled_from(["step", "layer", "head"])), draw(st.integers(-3, 1000)))


def write_mutated(src: Path, dst: Path, mutation) -> bool:
    """``src`` changed by ``mutation`` as ``dst``; returns whether its statistics hold a non-finite number."""
    kind, arg = mutation
    table = pq.read_table(src)
    md = dict(table.schema.metadata)
    df = table.to_pandas()
    if kind == "meta":
        md[b"attnsearch"] = json.dumps(arg(json.loads(md[b"attnsearch"]))).encode()
    elif kind == "raw":
        md[b"attnsearch"] = arg
    elif kind == "blob":
        md[b"attnsearch.maps"] = arg
    elif kind == "cell":
        column, row, value = arg
        df[column] = df[column].astype(object)
        df.loc[row % len(df), column] = value
        try:  # a column holds one type, as in any Parquet file
            df[column] = df[column] if column in ("pattern", "candidate", "params") else pd.to_numeric(df[column])
        except (ValueError, TypeError):
            df[column] = df[column].astype(str)
    elif kind == "dup":
        df = pd.concat([df, df.iloc[[arg % len(df)]]], ignore_index=True)
    elif kind == "drop":
        df = df.drop(index=arg % len(df))
    else:
        column, shift = arg
        df[column] = df[column] + shift
    try:
        out = pa.Table.from_pandas(df, preserve_index=False)
    except (pa.ArrowException, ValueError, TypeError):
        assume(False)
    pq.write_table(out.replace_schema_metadata(md), dst)
    nonfinite = False
    for column in STATS:
        values = pd.to_numeric(df[column], errors="coerce")
        nonfinite |= bool((~values.map(lambda x: math.isfinite(x))).any()) if values.notna().all() else False
    return nonfinite


@pytest.mark.slow
@fuzz(40)
@given(mutation=profile_mutations(),
       command=st.sampled_from(["classify", "classify", "classify", "merge", "merge", "optimize", "report"]))
def test_fuzzed_profiles(base, tmp_path_factory, mutation, command):
    folder = tmp_path_factory.mktemp("prof")
    bad = folder / "mutated[1].parquet"
    nonfinite = write_mutated(base / "good.parquet", bad, mutation)
    args = {"classify": ["classify", bad, "--csv", folder / "labels.csv"],
            "optimize": ["optimize", bad, "--out", folder / "plan.json", "--trials", "1"],
            "report": ["report", bad, "--out", folder / "report"],
            "merge": ["merge", bad, "--out", folder / "merged.parquet"]}[command]
    code, out = run_checked(folder, *args)
    if nonfinite:
        assert code == 2, f"non-finite statistics accepted by {command}: {out}"


# --- plans ------------------------------------------------------------------------------------------------


@fuzz(40)
@given(data=st.data(), command=st.sampled_from(["validate", "validate", "validate", "validate", "report"]))
def test_fuzzed_plans(base, tmp_path_factory, data, command):
    folder = tmp_path_factory.mktemp("plan")
    plan = mutate_json(data.draw, json.loads((base / "plan.json").read_text()))
    path = folder / "plan.json"
    path.write_text(json.dumps(plan))
    args = ["validate", path] if command == "validate" else ["report", path, "--out", folder / "r"]
    code, out = run_checked(folder, *args)
    if code == 0 and command == "validate" and "predicted:" in out:
        speedup = out.split("predicted:")[1].split("×")[0].strip()
        assert speedup == "nan" or math.isfinite(float(speedup)), out


# --- hardware tables --------------------------------------------------------------------------------------


@lru_cache(maxsize=1)
def shipped_table() -> str:
    return (Path(__file__).resolve().parents[2] / "kernels" / "nvidia-h100-80gb-hbm3.json").read_text()


def test_a_hardware_table_with_a_non_object_field_is_one_line(tmp_path, random_profile):
    table = {k: v for k, v in json.loads(shipped_table()).items() if k != "points"}
    table["software"] = math.nan
    (tmp_path / "hw.json").write_text(json.dumps(table))
    random_profile(tmp_path / "good.parquet")
    code, out = cli("optimize", tmp_path / "good.parquet", "--hardware", tmp_path / "hw.json",
                    "--out", tmp_path / "plan.json", "--trials", "1")
    errors = [line for line in out.splitlines() if line.startswith("error: ")]
    assert code == 2 and len(errors) == 1 and "hw.json" in errors[0], out
    assert not (tmp_path / "plan.json").exists()


@fuzz(8)
@given(data=st.data())
def test_fuzzed_hardware_tables(base, tmp_path_factory, data):
    folder = tmp_path_factory.mktemp("hw")
    small = {k: v for k, v in json.loads(shipped_table()).items() if k != "points"}  # the fit, not its measurements
    table = mutate_json(data.draw, small, rounds=2)
    path = folder / "hw.json"
    path.write_text(json.dumps(table))
    code, out = run_checked(folder, "optimize", base / "good.parquet", "--hardware", path,
                            "--out", folder / "plan.json", "--trials", "1")
    if code == 0:
        plan = json.loads((folder / "plan.json").read_text())
        assert math.isfinite(plan["predicted"]["speedup"]), plan["predicted"]


# --- option values ----------------------------------------------------------------------------------------

NUMBERS = st.sampled_from(["nan", "inf", "-inf", "-1", "0", "0.5", "1", "1.5", "1e300", "-0", "abc", "", "2"])


@fuzz(30)
@given(options=st.lists(st.tuples(st.sampled_from(["--tau", "--density-cap"]), NUMBERS), max_size=2))
def test_fuzzed_classify_options(base, tmp_path_factory, options):
    folder = tmp_path_factory.mktemp("opt")
    args = [x for pair in options for x in pair]
    run_checked(folder, "classify", base / "good.parquet", "--json", folder / "l.json", *args)


@fuzz(12)
@given(options=st.lists(st.tuples(st.sampled_from(["--max-error", "--target-speedup", "--max-density", "--trials",
                                                   "--seed", "--workers", "--head-dim", "--validate"]), NUMBERS),
                        max_size=2))
def test_fuzzed_optimize_options(base, tmp_path_factory, options):
    folder = tmp_path_factory.mktemp("opt")
    args = [x for pair in options for x in pair]
    if "--trials" not in args:
        args += ["--trials", "1"]
    code, out = run_checked(folder, "optimize", base / "good.parquet", "--out", folder / "p.json", *args)
    if code == 0:
        plan = json.loads((folder / "p.json").read_text())
        assert math.isfinite(plan["predicted"]["speedup"])
