"""attnsearch report: every promised figure exists, the HTML references only real files, and the
page renders in headless Chromium with no missing image."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import torch

from attnsearch import Geometry, profile_tensors
from attnsearch.report import ReportError, detect_kind, write_report


@pytest.fixture(scope="module")
def profile_file(tmp_path_factory):
    geom = Geometry(3, 8, 8, 5, "prefix")
    torch.manual_seed(0)
    parts = []
    from attnsearch.profiling.profile_io import Profile

    for step in range(2):
        for layer in range(2):
            q, k, v = (torch.randn(1, 3, geom.num_tokens, 16) for _ in range(3))
            parts.append(profile_tensors(q, k, v, geom, step=step, layer=layer, block_size=64, queries=32))
    path = tmp_path_factory.mktemp("prof") / "p.parquet"
    Profile.concat(parts).save(path)
    return path


def bench_file(tmp_path: Path) -> Path:
    rows = [{"density": d, "sparse_ms": 10 * d + 0.3, "cudnn_ms": 11.0, "flex_ms": 12 * d + 0.4,
             "predicted_ms": 10 * d + 0.25} for d in (0.1, 0.25, 0.5)]
    path = tmp_path / "bench.json"
    path.write_text(json.dumps({"card": "Test GPU", "rows": rows}))
    return path


def referenced_files(page: Path) -> list[str]:
    return re.findall(r"<img src='([^']+)'", page.read_text())


def test_profile_and_bench_report(tmp_path, profile_file):
    out = tmp_path / "report"
    page = write_report([profile_file, bench_file(tmp_path)], out)
    pngs = sorted(p.name for p in out.glob("*.png"))
    assert pngs == sorted(["profile_maps.png", "profile_classes.png", "profile_recall_density.png",
                           "profile_stability.png", "bench_predicted.png", "bench_speedup.png"])
    assert all((out / p).stat().st_size > 5000 for p in pngs)
    refs = referenced_files(page)
    assert sorted(refs) == pngs  # every figure shown, nothing referenced that is not there
    assert all((out / r).is_file() for r in refs)


def test_kinds_are_detected_from_content(tmp_path, profile_file):
    assert detect_kind(profile_file) == "profile"
    assert detect_kind(bench_file(tmp_path)) == "bench"
    (tmp_path / "plan.json").write_text(json.dumps({"format": "attnsearch-plan", "version": 1}))
    assert detect_kind(tmp_path / "plan.json") == "plan"
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(ReportError, match="accepted: a profile"):
        detect_kind(tmp_path / "notes.txt")
    (tmp_path / "other.json").write_text(json.dumps({"x": 1}))
    with pytest.raises(ReportError, match="unknown kind"):
        detect_kind(tmp_path / "other.json")


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.slow  # three browser starts: 5-7 s on 2 CPU cores
@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (apt-get install chromium)")
def test_report_renders_in_headless_chromium(tmp_path, profile_file):
    out = tmp_path / "report"
    page = write_report([profile_file, bench_file(tmp_path)], out)
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={tmp_path / 'chrome'}", "--allow-file-access-from-files",
             "--virtual-time-budget=5000"]
    dom = subprocess.run([CHROMIUM, *flags, "--dump-dom", page.as_uri()], capture_output=True, text=True,
                         timeout=120).stdout
    assert 'data-broken-images="0"' in dom, dom[-2000:]
    shot = tmp_path / "page.png"
    subprocess.run([CHROMIUM, *flags, f"--screenshot={shot}", "--window-size=1200,2400", page.as_uri()],
                   capture_output=True, timeout=120)
    assert shot.is_file() and shot.stat().st_size > 10_000
    # Break one image: the page must say so (the check can fail).
    (out / "profile_maps.png").unlink()
    dom = subprocess.run([CHROMIUM, *flags, "--dump-dom", page.as_uri()], capture_output=True, text=True,
                         timeout=120).stdout
    assert 'data-broken-images="1"' in dom


def test_time_ms_rejects_an_unknown_mode():
    from attnsearch.bench import time_ms

    with pytest.raises(ValueError, match="mode: must be one of"):
        time_ms(lambda x: None, [()], mode="wallclock")


def test_density_figures_name_the_timing_mode_only_when_rows_share_one():
    from attnsearch.report.bench_figures import timing_note

    assert timing_note([{"timing": "sustained"}, {"timing": "sustained"}]) == " (sustained timing)"
    assert timing_note([{"timing": "queued"}, {"timing": "sustained"}]) == ""  # a mixed file names none
    assert timing_note([{"timing": "queued"}, {}]) == ""  # rows from before the field existed


def test_a_plan_report_shows_where_it_was_searched_and_where_it_runs(tmp_path):
    from attnsearch.plan import LayerPlan, Plan, ScheduleEntry
    from attnsearch.report.plan_figures import plan_figures

    source, target = Geometry(3, 8, 8, 5), Geometry(6, 12, 12, 5)
    lp = LayerPlan.from_heads([("diagonal", {"rows": 1.0}), ("vertical_stripe", {"key_blocks": [1]})], source, 64)
    plan = Plan(source, 64, 2, 1, 2, (ScheduleEntry(0, 2, (lp,)),))
    moved = plan_figures(plan.for_geometry(target), tmp_path)["summary"]
    assert f"geometry {target} (retargeted; searched at {source})" in moved
    assert f"geometry {source}," in plan_figures(plan, tmp_path)["summary"]


def test_a_plan_report_says_which_heads_run_fp8(tmp_path, monkeypatch):
    """The summary gives the FP8 share of the computed heads (none: not mentioned); the head map
    draws FP8 heads hatched (one hatched patch per FP8 head of the panel)."""
    import matplotlib.pyplot as plt

    from attnsearch.plan import LayerPlan, Plan, ScheduleEntry
    from attnsearch.report import plan_figures as pf

    geom = Geometry(3, 8, 8, 5)
    heads = [("diagonal", {"rows": 1.0}), ("vertical_stripe", {"key_blocks": [1]}), ("skip", {}), ("dense", {})]
    lp = LayerPlan.from_heads(heads, geom, 64, precisions=["fp8", "native", "native", "fp8"])
    plan = Plan(geom, 64, 2, 1, 4, (ScheduleEntry(0, 2, (lp,)),))
    assert "FP8 kept blocks on 67% of the computed heads" in pf.plan_figures(plan, tmp_path)["summary"]
    native = Plan(geom, 64, 2, 1, 4, (ScheduleEntry(0, 2, (LayerPlan.from_heads(heads, geom, 64),)),))
    assert "FP8" not in pf.plan_figures(native, tmp_path)["summary"]
    hatched = []
    real = plt.Axes.add_patch
    monkeypatch.setattr(plt.Axes, "add_patch", lambda ax, patch: (hatched.append(patch.get_hatch()), real(ax, patch))[1])
    pf.head_map(plan, tmp_path / "heads.png")
    assert hatched.count("///") == 2


def test_a_plan_report_marks_the_exact_steps_of_residual_reuse(tmp_path, monkeypatch):
    """The summary names the exact steps, the density with their exact calls and the residuals'
    memory; the schedule figure outlines each exact step (one red span per step; none without reuse)."""
    import matplotlib.pyplot as plt

    from attnsearch.plan import LayerPlan, Plan, ScheduleEntry
    from attnsearch.report import plan_figures as pf

    geom = Geometry(3, 8, 8, 5)
    lp = LayerPlan.from_heads([("diagonal", {"rows": 1.0}), ("dense", {})], geom, 64)
    plain = Plan(geom, 64, 6, 1, 2, (ScheduleEntry(0, 6, (lp,)),))
    reuse = plain.with_residual([0, 3])
    summary = pf.plan_figures(reuse, tmp_path)["summary"]
    assert (f"residual reuse: exact steps 0, 3 (mean density {reuse.mean_density:.3f} with their exact calls; "
            f"residuals {reuse.residual_bytes() / 2**20:,.1f} MiB in bf16 at head_dim 128, batch 1; "
            "2 of 2 inexact head-layers of its entries reuse)") in summary
    assert "residual" not in pf.plan_figures(plain, tmp_path)["summary"]
    spans = []
    real = plt.Axes.axhspan
    monkeypatch.setattr(plt.Axes, "axhspan", lambda ax, lo, hi, **kw: (spans.append((lo, hi, kw["edgecolor"])),
                                                                       real(ax, lo, hi, **kw))[1])
    pf.schedule(reuse, tmp_path / "schedule.png")
    pf.schedule(plain, tmp_path / "plain.png")
    assert spans == [(-0.5, 0.5, "red"), (2.5, 3.5, "red")]


def test_a_sensitivity_record_gets_its_gains_figure(tmp_path):
    import numpy as np

    from attnsearch.search.sensitivity import Sensitivity

    sens = Sensitivity(np.array([4.0, 1.0, 2.0]), np.array([[1.0, 8.0], [2.0, 0.5]]), np.array([4.0, 1.0, 2.0]),
                       np.array([[1.0, 8.0], [2.0, 0.5]]), (("diagonal(rows=0)",) * 2,) * 2,
                       {"name": "m", "fingerprint": "f"}, 64, 0.3, 2)
    sens.save(tmp_path / "s.json")
    assert detect_kind(tmp_path / "s.json") == "sensitivity"
    out = tmp_path / "report"
    page = write_report([tmp_path / "s.json"], out)
    assert referenced_files(page) == ["sensitivity_gains.png"] and (out / "sensitivity_gains.png").stat().st_size > 5000
    assert "step gains 4× apart, head gains 16× apart" in page.read_text()


def test_a_hardware_table_gets_its_fit_and_host_figures(tmp_path):
    """The shipped H100 table (host costs measured): both figures and the summary say so; the same
    table without host costs: the fit figure alone and a summary naming what is missing."""
    from synthetic import table_without_host

    from attnsearch.costmodel.table import DEFAULT_TABLE, load_hardware

    shipped = Path(load_hardware(DEFAULT_TABLE).source)
    assert detect_kind(shipped) == "hardware"
    page = write_report([shipped], tmp_path / "a")
    assert referenced_files(page) == ["hardware_fit.png", "hardware_host.png"]
    text = page.read_text()
    assert "NVIDIA H100 80GB HBM3 (132 SMs)" in text and "host dispatch costs measured" in text
    page = write_report([Path(table_without_host(tmp_path))], tmp_path / "b")
    assert referenced_files(page) == ["hardware_fit.png"] and "no host dispatch costs" in page.read_text()
