"""attnsearch demo at reduced size: every promised file exists and the page references only them."""

from __future__ import annotations

import re

import pytest
from typer.testing import CliRunner

from attnsearch.cli import app
from attnsearch.plan import load_plan
from attnsearch.profiling.profile_io import Profile

EXPECTED_PNGS = {"profile_maps.png", "profile_classes.png", "profile_recall_density.png", "profile_stability.png",
                 "plan_heads.png", "plan_latency.png", "plan_schedule.png", "study_pareto.png"}


@pytest.mark.slow
def test_demo_reduced(tmp_path):
    out = tmp_path / "demo"
    res = CliRunner().invoke(app, ["demo", "--out", str(out), "--steps", "2", "--queries", "32", "--trials", "3",
                                   "--validate", "1", "--max-error", "0.05"])
    assert res.exit_code == 0, res.output
    for line in ("classes found", "match the planted truth", "predicted", "measured error", "report"):
        assert line in res.output
    assert Profile.load(out / "toy-vdit.parquet").num_steps == 2
    plan = load_plan(out / "plan.json")
    assert plan.search["validation"]["rel_l2"] <= 0.05
    pngs = {p.name for p in (out / "report").glob("*.png")}
    assert pngs == EXPECTED_PNGS
    assert all((out / "report" / p).stat().st_size > 5000 for p in pngs)
    page = (out / "report" / "index.html").read_text()
    refs = re.findall(r"<img src='([^']+)'", page)
    assert set(refs) == EXPECTED_PNGS and all((out / "report" / r).is_file() for r in refs)


def test_report_rejects_unknown_files_with_the_accepted_kinds(tmp_path):
    (tmp_path / "x.json").write_text('{"hello": 1}')
    res = CliRunner().invoke(app, ["report", str(tmp_path / "x.json"), "--out", str(tmp_path / "r")])
    assert res.exit_code == 2
    assert "accepted: a profile" in res.output and "plan" in res.output and "bench" in res.output
