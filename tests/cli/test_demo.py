"""attnsearch demo at reduced size, on toy-vdit and on mini-vdit: every promised file exists and the
page references only them; on mini-vdit the plan stays within its density and its videos are
measured against dense and both global-mask baselines."""

from __future__ import annotations

import json
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
    res = CliRunner().invoke(app, ["demo", "--model", "toy-vdit", "--out", str(out), "--steps", "2", "--queries", "32",
                                   "--trials", "3", "--validate", "1", "--max-error", "0.05"])
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


@pytest.mark.slow
def test_demo_on_mini_vdit_evaluates_generated_videos(tmp_path):
    out = tmp_path / "demo"
    res = CliRunner().invoke(app, ["demo", "--out", str(out), "--steps", "2", "--queries", "32", "--trials", "3",
                                   "--max-density", "0.4"])
    assert res.exit_code == 0, res.output
    for line in ("classes found", "sensitivity", "predicted", "videos", "frames", "report"):
        assert line in res.output
    assert "planted" not in res.output and "measured error" not in res.output   # weighted, not validated
    plan = load_plan(out / "plan.json")
    assert plan.mean_density <= 0.4 and plan.num_steps == 2
    from attnsearch.search.sensitivity import Sensitivity

    sens = Sensitivity.load(out / "sensitivity.json")
    assert sens.shape == (2, 6, 4) and sens.sites == "layers"
    assert plan.search["error_weights"]["digest"] == sens.digest()
    assert (out / "report" / "sensitivity_gains.png").is_file()
    ev = json.loads((out / "evaluate" / "evaluation.json").read_text())
    kinds = sorted((r["kind"], r.get("baseline") and r["baseline"]["baseline"]) for r in ev["runs"])
    assert kinds == [("baseline", "energy_decay"), ("baseline", "window"), ("plan", None)]
    assert all(len(r["videos"]) == 2 and min(ev["seeds"]) >= 10_000 for r in ev["runs"])
    plan_run = next(r for r in ev["runs"] if r["kind"] == "plan")
    assert plan_run["density"] == pytest.approx(plan.mean_density)
    assert (out / "evaluate" / "index.html").is_file() and (out / "report" / "index.html").is_file()


def test_report_rejects_unknown_files_with_the_accepted_kinds(tmp_path):
    (tmp_path / "x.json").write_text('{"hello": 1}')
    res = CliRunner().invoke(app, ["report", str(tmp_path / "x.json"), "--out", str(tmp_path / "r")])
    assert res.exit_code == 2
    assert "accepted: a profile" in res.output and "plan" in res.output and "bench" in res.output
