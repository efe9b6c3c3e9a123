"""The experts record (attnsearch.experts), step ranges at a hand-over step, per-prompt profiles
(classification across prompts, file round trip) and the profile command's prompt-file errors."""

from __future__ import annotations

import numpy as np
import pytest
from typer.testing import CliRunner

from attnsearch.cli import app
from attnsearch.experts import Expert, ExpertError, boundaries, expert_at, parse_experts
from attnsearch.profiling.classify import classify
from attnsearch.profiling.profile_io import ProfileError, prompt_columns, read_profile
from attnsearch.search.space import step_ranges


def test_expert_records_are_checked_field_by_field():
    good = [{"name": "transformer", "steps": [0, 3]}, {"name": "transformer_2", "steps": [3, 5], "fingerprint": "ab"}]
    assert parse_experts(good) == (Expert("transformer", 0, 3), Expert("transformer_2", 3, 5, "ab"))
    for bad, field in ((good[:1] + [{"name": "transformer_2", "steps": [4, 5]}], r"model.experts\[1\].steps: starts at 4"),
                       ([{"name": "transformer", "steps": [0, 0]}], r"\[0\].steps: \[0, 0\) is empty"),
                       ([{"name": "t", "steps": [0, 1]}, {"name": "t", "steps": [1, 2]}], r"\[1\].name: 't' is named twice"),
                       ([{"name": "t", "steps": [0, 1], "boundary": 1}], r"unknown key\(s\) boundary"),
                       ([], "non-empty list")):
        with pytest.raises(ExpertError, match=field):
            parse_experts(bad)


def test_step_ranges_split_at_the_expert_boundary():
    assert step_ranges(10, 0, 1) == [range(0, 10)]
    assert step_ranges(10, 0, 1, (6,)) == [range(0, 6), range(6, 10)]
    assert step_ranges(10, 2, 2, (6,)) == [range(2, 6), range(6, 10)]          # already an edge
    assert step_ranges(10, 2, 2, (5,)) == [range(2, 5), range(5, 6), range(6, 10)]
    assert step_ranges(10, 7, 1, (6,)) == [range(7, 10)]                       # inside the warm-up


def test_expert_lookup_and_boundaries():
    experts = parse_experts([{"name": "transformer", "steps": [0, 3]}, {"name": "transformer_2", "steps": [3, 5]}])
    assert [expert_at(experts, s).name for s in range(5)] == ["transformer"] * 3 + ["transformer_2"] * 2
    assert expert_at(experts, 5) is None and boundaries(experts) == (3,)


def _with_prompts(prof, recall_by_prompt):
    """``prof`` with per-prompt columns: prompt i's recall = the table's recall scaled by its factor
    (rel_err kept), the overall recall their mean."""
    table = prof.table.copy()
    for i, factor in enumerate(recall_by_prompt):
        table[f"prompt{i}.recall"] = (table["recall"] * factor).clip(0, 1)
        table[f"prompt{i}.rel_err"] = table["rel_err"]
    table["recall"] = table[[f"prompt{i}.recall" for i in range(len(recall_by_prompt))]].mean(axis=1)
    prof.table, prof.prompts = table, tuple(f"p{i}" for i in range(len(recall_by_prompt)))
    return prof


def test_class_stability_across_prompts(tmp_path, random_profile):
    from attnsearch.profiling.profile_io import Profile

    base = Profile.load(random_profile(tmp_path / "p.parquet"))
    same = classify(_with_prompts(Profile.load(tmp_path / "p.parquet"), [1.0, 1.0, 1.0]), over_steps=True)
    assert (same["prompt_stability"] == 1.0).all()
    assert classify(base, over_steps=True)["prompt_stability"].isna().all()   # no prompts: not measured
    # One prompt whose recall collapses: a head that is sparse overall is dense for that prompt.
    prof = _with_prompts(Profile.load(tmp_path / "p.parquet"), [1.0, 1.0, 0.0])
    labels = classify(prof, over_steps=True)
    own = [classify(prof.prompt_table(i), over_steps=True) for i in range(3)]
    expect = np.mean([(o["pattern"].to_numpy() == labels["pattern"].to_numpy()) for o in own], axis=0)
    assert np.allclose(labels["prompt_stability"].to_numpy(), expect)
    assert (own[2]["pattern"] == "dense").all()
    # Round trip through the file; a file whose prompts lack their columns is refused by name.
    prof.save(tmp_path / "q.parquet")
    back = read_profile(tmp_path / "q.parquet")
    assert back.prompts == prof.prompts and list(back.table.columns)[-6:] == prompt_columns(3)
    prof.prompts = prof.prompts + ("p3",)
    with pytest.raises(ProfileError, match=r"lacks column\(s\) prompt3.recall, prompt3.rel_err"):
        prof.save(tmp_path / "r.parquet")


@pytest.mark.parametrize("content, message", [
    (None, "does not exist"),
    (b"\n  \n", "holds no prompt"),
    (b"a cat\n\xff\xfe", "not UTF-8 text"),
])
def test_prompt_file_errors_are_one_line_exit_2(tmp_path, content, message):
    path = tmp_path / "prompts.txt"
    if content is not None:
        path.write_bytes(content)
    result = CliRunner().invoke(app, ["profile", "--model", "toy-vdit", "--prompts", str(path)])
    assert result.exit_code == 2, result.output
    assert message in result.output and str(path.name) in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_prompts_need_a_model_that_takes_them(tmp_path):
    path = tmp_path / "prompts.txt"
    path.write_text("a cat\na dog\n")
    result = CliRunner().invoke(app, ["profile", "--model", "toy-vdit", "--prompts", str(path), "--guidance", "5"])
    assert result.exit_code == 2 and "does not accept option(s) guidance_scale, prompts" in result.output
