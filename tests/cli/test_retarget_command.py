"""``attnsearch retarget``: the plan at another geometry with its re-predicted figures; bad input and
geometries the plan cannot serve are one line, exit 2, nothing written."""

from __future__ import annotations

import json

import pytest
import torch

from attnsearch import Geometry
from attnsearch.costmodel import CostModel
from attnsearch.plan import LayerPlan, Plan, ScheduleEntry, load_plan, write_plan
from cli_inputs import cli, one_error, tree

SOURCE = Geometry(frames=4, height=8, width=8, text_tokens=10)


@pytest.fixture
def folder(tmp_path):
    lp = LayerPlan.from_heads([("diagonal", {"rows": 1.0}), ("multi_diagonal", {"rows": 0.5, "frames": 1}),
                               ("vertical_stripe", {"key_blocks": [0, 3], "rows": 0.5}), ("dense", {})], SOURCE, 64)
    schedule = (ScheduleEntry(0, 1, None), ScheduleEntry(1, 4, (lp, lp)))
    meta = {"model": {"name": "m"}, "search": {"settings": {"head_dim": 64, "batch": 1}}}
    write_plan(Plan(SOURCE, 64, 4, 2, 4, schedule, **meta), tmp_path / "plan.json")
    write_plan(Plan(SOURCE, 64, 4, 2, 4, schedule, portable=False, **meta), tmp_path / "fixed.json")
    return tmp_path


def test_help_names_every_option():
    code, out = cli("retarget", "--help")
    assert code == 0
    for option in ("--frames", "--height", "--width", "--text-tokens", "--out", "--hardware", "--head-dim"):
        assert option in out


def test_writes_the_plan_at_the_target_with_its_predicted_figures(folder):
    out = folder / "plans" / "big.json"
    code, text = cli("retarget", folder / "plan.json", "--frames", 8, "--height", 12, "--width", 12,
                     "--text-tokens", 30, "--out", out)
    assert code == 0, text
    target = Geometry(8, 12, 12, 30)
    plan = load_plan(out)
    assert plan.geometry == target and plan.source_geometry == SOURCE and plan.portable
    want = load_plan(folder / "plan.json").for_geometry(target)
    assert all(torch.equal(a.block_masks(), b.block_masks()) for a, b in zip(plan.layer_plans(), want.layer_plans()))
    cm = CostModel(plan.hardware["calibration"], head_dim=64)
    p = plan.predicted
    assert p["dense_attention_ms"] == pytest.approx(cm.dense_plan_ms(plan))
    assert p["attention_ms"] == pytest.approx(cm.plan_ms(plan))
    assert p["speedup"] == pytest.approx(p["dense_attention_ms"] / p["attention_ms"])
    assert f"{p['speedup']:.2f}×" in text and "→" in text
    code, text = cli("validate", out)
    text = " ".join(text.split())  # the console wraps lines
    assert code == 0 and "searched at 4×8×8" in text and "instantiated at 8×12×12" in text


@pytest.mark.parametrize("args,words", [
    (("--frames", 0, "--height", 8, "--width", 8), "--frames must be ≥ 1, got 0"),
    (("--frames", 4, "--height", 8, "--width", 8, "--text-tokens", -1), "--text-tokens must be ≥ 0"),
    (("--frames", 1, "--height", 300, "--width", 1), "geometry.width: the plan was searched on a video"),
    (("--frames", "x", "--height", 8, "--width", 8), "Invalid value for '--frames'"),
])
def test_bad_geometries_are_one_line_and_write_nothing(folder, args, words):
    before = tree(folder)
    line = one_error(*cli("retarget", folder / "plan.json", *args, "--out", folder / "new.json"))
    assert words in line
    assert tree(folder) == before


def test_a_non_portable_plan_is_refused_naming_the_field(folder):
    (folder / "new.json").write_text("kept")
    before = tree(folder)
    line = one_error(*cli("retarget", folder / "fixed.json", "--frames", 8, "--height", 8, "--width", 8,
                          "--out", folder / "new.json"))
    assert line.startswith("error: portable: the plan is marked non-portable")
    assert tree(folder) == before  # the existing output untouched, no temporary file left


def test_never_writes_over_its_input_or_a_folder(folder):
    before = tree(folder)
    assert "is also an input" in one_error(*cli("retarget", folder / "plan.json", "--frames", 8, "--height", 8,
                                                "--width", 8, "--out", folder / "plan.json"))
    (folder / "dir").mkdir()
    before = tree(folder)
    assert "dir" in one_error(*cli("retarget", folder / "plan.json", "--frames", 8, "--height", 8, "--width", 8,
                                   "--out", folder / "dir"))
    assert tree(folder) == before
    (folder / "broken.json").write_text("{")
    assert "broken.json" in one_error(*cli("retarget", folder / "broken.json", "--frames", 8, "--height", 8,
                                           "--width", 8, "--out", folder / "x.json"))
    assert not (folder / "x.json").exists()


def test_optimize_non_portable_marks_the_plan(tmp_path, random_profile):
    prof = random_profile(tmp_path / "p.parquet")
    for flag, name in (((), "portable.json"), (("--non-portable",), "fixed.json")):
        code, text = cli("optimize", prof, "--trials", 2, "--out", tmp_path / name, *flag)
        assert code == 0, text
    assert load_plan(tmp_path / "portable.json").portable
    data = json.loads((tmp_path / "fixed.json").read_text())
    assert data["portable"] is False
    line = one_error(*cli("retarget", tmp_path / "fixed.json", "--frames", 4, "--height", 6, "--width", 12,
                          "--out", tmp_path / "big.json"))
    assert "portable: the plan is marked non-portable" in line
    code, text = cli("retarget", tmp_path / "portable.json", "--frames", 4, "--height", 6, "--width", 12,
                     "--out", tmp_path / "big.json")
    assert code == 0, text
    assert load_plan(tmp_path / "big.json").geometry == Geometry(4, 6, 12)


def test_a_coarse_source_frame_gets_a_note_when_the_frame_size_changes(folder):
    """The searched frame (8 × 8 = 64 tokens) is one block of 64: retargeting to another frame size
    says its bands were kept block by block; more frames of the same size say nothing."""
    code, text = cli("retarget", folder / "plan.json", "--frames", 8, "--height", 12, "--width", 12,
                     "--out", folder / "wide.json")
    text = " ".join(text.split())
    assert code == 0 and "note: a frame where the plan was searched is 64 tokens, 1× the block size (64)" in text
    code, text = cli("retarget", folder / "plan.json", "--frames", 8, "--height", 8, "--width", 8,
                     "--out", folder / "long.json")
    assert code == 0 and "note: a frame where" not in " ".join(text.split())


def test_a_plan_predicted_slower_than_dense_at_the_target_says_so(tmp_path):
    """Bands that cover the whole target keep every block on the sparse kernel: the cost model predicts
    that slower than dense attention, and the command says so beside the figure."""
    lp = LayerPlan.from_heads([("diagonal", {"rows": 8.0})] * 4, SOURCE, 64)
    write_plan(Plan(SOURCE, 64, 1, 1, 4, (ScheduleEntry(0, 1, (lp,)),),
                    search={"settings": {"head_dim": 64, "batch": 1}}), tmp_path / "wide.json")
    code, text = cli("retarget", tmp_path / "wide.json", "--frames", 4, "--height", 8, "--width", 16,
                     "--out", tmp_path / "out.json")
    text = " ".join(text.split())
    speedup = load_plan(tmp_path / "out.json").predicted["speedup"]
    assert code == 0 and speedup < 1, text
    assert f"predicted slower than dense attention ({speedup:.2f}×)" in text
