"""Strict JSON data: every way a file or a value fails is one error line naming the file or key path."""

from __future__ import annotations

import gc
import json
import math

import pytest

from attnsearch.jsondata import MAX_DEPTH, JSONDataError, check_data, dumps, nonfinite_to_null, read_json


def deep_list(depth: int) -> list:
    """A list nested ``depth`` deep, built without recursion.

    The cyclic garbage collector is paused while it is built: every new list counts towards a
    collection, and the full collections that 100 000 of them trigger walk the growing chain and
    every other tracked object of the process: tens of milliseconds for one such list, not a few.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        root = cur = []
        for _ in range(depth - 1):
            nxt: list = []
            cur.append(nxt)
            cur = nxt
    finally:
        if was_enabled:
            gc.enable()
    return root


def test_check_data_names_the_first_offending_key_path():
    ok = {"a": [1, 2.5, None, True, "s", {"b": -(2 ** 63)}], "c": 2 ** 63 - 1}
    check_data(ok)
    cases = [({"a": [0, {"b": math.nan}]}, "a[1].b: NaN"),
             ([1, math.inf], "[1]: Infinity"),
             ({"x": {"y": 2 ** 63}}, "x.y: integer of 64 bits"),
             ({"k": {1: 2}}, "k: key 1 is not a string"),
             ({"s": {1, 2}}, "s: a set is not JSON data"),
             ({"first": math.nan, "second": math.inf}, "first: NaN")]
    for value, where in cases:
        with pytest.raises(JSONDataError) as err:
            check_data(value)
        assert str(err.value).startswith(where), err.value
    with pytest.raises(JSONDataError) as err:
        check_data(math.nan)
    assert str(err.value).startswith("(top level): NaN")


def test_nesting_is_bounded_without_exhausting_the_stack():
    check_data(deep_list(MAX_DEPTH))
    for depth in (MAX_DEPTH + 1, 100_000):
        with pytest.raises(JSONDataError, match=f"nested deeper than {MAX_DEPTH} levels"):
            check_data({"x": deep_list(depth)})
        with pytest.raises(JSONDataError, match="nested deeper"):
            nonfinite_to_null({"x": deep_list(depth)})


def test_the_path_of_too_deep_nesting_is_shortened():
    with pytest.raises(JSONDataError) as err:
        check_data({"a": deep_list(100_000)})
    assert str(err.value) == "a" + "[0]" * 11 + f"…: nested deeper than {MAX_DEPTH} levels"


def test_nonfinite_to_null_maps_only_the_documented_keys():
    data = {"psnr_db": math.inf, "rows": [{"psnr_db": -math.inf, "speedup": math.nan}], "psnr": math.nan}
    out = nonfinite_to_null(data, keys={"psnr_db"})
    assert out["psnr_db"] is None and out["rows"][0]["psnr_db"] is None
    assert math.isnan(out["rows"][0]["speedup"]) and math.isnan(out["psnr"])  # left for check_data to refuse
    assert math.isinf(data["psnr_db"])  # the input is not modified
    assert nonfinite_to_null(data) == {"psnr_db": None, "rows": [{"psnr_db": None, "speedup": None}],
                                       "psnr": None}
    assert nonfinite_to_null(math.inf) is None and nonfinite_to_null(1.5) == 1.5
    assert nonfinite_to_null((1, math.nan)) == [1, None]


def test_dumps_is_strict_and_round_trips():
    data = {"a": [1, 2.5, "ü"], "b": None}
    assert json.loads(dumps(data, indent=1)) == data
    with pytest.raises(JSONDataError, match=r"^a\[1\]: Infinity"):
        dumps({"a": [1, math.inf]})


@pytest.mark.parametrize("content, says", [
    (b'{"a": \xff}', "not UTF-8 text (byte 0xff at offset 6)"),
    (b'{"a": 1,}', "not valid JSON (line 1, column 9"),
    (b"", "not valid JSON (line 1, column 1"),
    (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
    (b"1" * 5000, "Exceeds the limit (4300 digits)"),
])
def test_read_json_failures_are_one_line_naming_the_file(tmp_path, content, says):
    path = tmp_path / "in.json"
    path.write_bytes(content)
    with pytest.raises(JSONDataError) as err:
        read_json(path, "plan file")
    msg = str(err.value)
    assert msg.startswith(f"{path}: ") and says in msg and len(msg.splitlines()) == 1, msg


def test_read_json_names_a_missing_file_and_a_folder(tmp_path):
    with pytest.raises(JSONDataError, match=r"cannot read plan file \(No such file or directory\)"):
        read_json(tmp_path / "nope.json", "plan file")
    with pytest.raises(JSONDataError, match="is a directory, not a plan file"):
        read_json(tmp_path, "plan file")
    (tmp_path / "ok.json").write_text('{"psnr_db": Infinity}')
    assert read_json(tmp_path / "ok.json") == {"psnr_db": math.inf}  # parsed; the format decides
