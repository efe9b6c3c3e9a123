"""evaluate_command: every argument checked before any work (one line naming the option), and the
whole output folder (strict JSON, frames, GIFs, figures, index.html) with a PSNR gate."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from rich.console import Console

from attnsearch import Geometry
from attnsearch.evaluate import EvaluateError, evaluate_command
from attnsearch.evaluate.figures import to_uint8
from attnsearch.plan import Plan, write_plan
from test_evaluate_quality import FRAME0_BLOCKS, STEPS, stripe_plan
from video_standin import FRAMES, GEOMETRY, HEADS, LAYERS, StandInGenerator

#: Reaching this model would fail loudly: errors below must come from the argument checks first.
UNREACHED = "diffusers:/nonexistent/pipeline"


@pytest.fixture
def plan_file(tmp_path) -> Path:
    return write_plan(stripe_plan(FRAME0_BLOCKS), tmp_path / "right.json")


@pytest.mark.parametrize("kwargs, message", [
    ({"seeds": 0}, r"--seeds: must be an integer ≥ 1, got 0"),
    ({"steps": 0}, r"--steps: must be an integer ≥ 1, got 0"),
    ({"steps": STEPS + 1}, rf"--steps: {STEPS + 1}, but PLAN .*right.json covers {STEPS} steps"),
    ({"baseline": "window,radial"}, r"--baseline: unknown baseline 'radial'"),
    ({"backend": "cuda"}, r"--backend: must be one of auto, hopper, triton, torch, got 'cuda'"),
    ({"residual_precision": "int8"}, r"--residual-precision: must be one of native, fp8, got 'int8'"),
    ({"min_psnr": float("nan")}, r"--min-psnr: must be a finite number"),
    ({"figures": -1}, r"--figures: must be an integer ≥ 0"),
    ({"hardware": "no-such-gpu"}, r"--hardware: no hardware table named 'no-such-gpu'"),
])
def test_bad_arguments_fail_before_any_work_with_one_line(plan_file, kwargs, message):
    with pytest.raises(EvaluateError, match=message) as err:
        evaluate_command([plan_file], UNREACHED, **kwargs)
    assert "\n" not in str(err.value)


def test_bad_plans_models_and_folders_are_named(plan_file, tmp_path):
    with pytest.raises(EvaluateError, match=r"PLAN .*none.json: cannot read plan file"):
        evaluate_command([tmp_path / "none.json"], UNREACHED)
    other = write_plan(Plan.dense(GEOMETRY, STEPS, LAYERS, HEADS + 2, 64), tmp_path / "other.json")
    with pytest.raises(EvaluateError, match=r"PLAN .*other.json: num_heads 4 differs from .*right.json's 2"):
        evaluate_command([plan_file, other], UNREACHED)
    (tmp_path / "file").write_text("x")
    with pytest.raises(EvaluateError, match=r"--out: .*file exists and is not a folder"):
        evaluate_command([plan_file], UNREACHED, out=tmp_path / "file")
    with pytest.raises(EvaluateError, match=r"--model: cannot generate videos with 'sora' \(known: mini-vdit, "
                                            r"diffusers:DIR\)"):
        evaluate_command([plan_file], "sora")
    with pytest.raises(EvaluateError, match=r"-o fps: mini-vdit takes no such option \(it takes frames, height"):
        evaluate_command([plan_file], "mini-vdit", options={"fps": 8})
    with pytest.raises(EvaluateError, match=r"-o frames/height/width: the stand-in attends over 4×16×16"):
        evaluate_command([write_plan(Plan.dense(Geometry(2, 16, 16), STEPS, LAYERS, HEADS, 64),
                                     tmp_path / "small.json")], StandInGenerator())


@pytest.mark.slow
def test_output_folder_end_to_end(plan_file, tmp_path):
    broken = write_plan(stripe_plan([b + 8 for b in FRAME0_BLOCKS], layer=1), tmp_path / "shifted.json")
    text = io.StringIO()
    code = evaluate_command([plan_file, broken], StandInGenerator(), seeds=1, out=tmp_path / "out",
                            baseline="energy_decay,window", figures=1, min_psnr=30,
                            console=Console(file=text, width=200))
    out = tmp_path / "out"
    log = text.getvalue()
    assert code == 1 and "below threshold: shifted: mean PSNR" in log and "below threshold: right" not in log

    data = json.loads((out / "evaluation.json").read_text(),
                      parse_constant=lambda c: pytest.fail(f"non-strict JSON constant {c}"))
    labels = [r["label"] for r in data["runs"]]
    assert labels == ["right", "shifted", "energy_decay @ right", "window @ right", "energy_decay @ shifted",
                      "window @ shifted"]
    assert all(len(r["videos"]) == 1 and len(r["videos"][0]["psnr_per_frame_db"]) == FRAMES for r in data["runs"])
    assert data["runs"][2]["baseline"]["target_density"] == pytest.approx(data["runs"][0]["density"])
    right, shifted = data["runs"][0], data["runs"][1]
    assert right["beats_baselines"] is True
    assert shifted["versus_baselines"]["window"]["psnr_db"] < right["versus_baselines"]["window"]["psnr_db"] - 20
    assert right["versus_baselines"]["window"]["psnr_db"] == pytest.approx(
        right["overall"]["psnr_db"] - data["runs"][3]["overall"]["psnr_db"])
    assert "right: PSNR vs baselines at its density: energy_decay +" in log

    page = (out / "index.html").read_text()
    links = re.findall(r"(?:src|href)='([^']+)'", page)
    assert {"evaluation.json", "quality_vs_density.png", "video_10000/frames.png", "video_10000/difference.png",
            "video_10000/psnr_per_frame.png", "video_10000/1_shifted.gif"} <= set(links)
    assert all((out / link).is_file() for link in links)
    assert not list(out.rglob(".*.tmp")) and not list(out.rglob(".*.png")) and not list(out.rglob(".*.gif"))

    # The GIF's frames are the dense and the run's frames side by side, upscaled without blending.
    gen = StandInGenerator()
    dense = to_uint8(gen.generate(10_000, STEPS).frames)
    gif = Image.open(out / "video_10000" / "0_right.gif")
    assert gif.n_frames == FRAMES
    gif.seek(2)
    page2 = np.asarray(gif.convert("RGB"))
    scale = 128 // 16
    panel = page2[12:12 + 16 * scale:scale, 0:16 * scale:scale]
    assert np.abs(panel.astype(int) - dense[2].astype(int)).max() <= 48     # GIF palette quantisation


def test_fp8_runs_each_plan_again_with_fp8_kept_blocks(plan_file, tmp_path):
    """--fp8: beside each plan, the same masks with every computed head in FP8 (here on the torch
    backend's emulation), on the same seeds; its difference from the native run is reported, and
    FP8's rounding really reaches the video: the plan keeps this stand-in's attention (latents
    within 1e-4 of dense), its FP8 run is a few percent off (e4m3's 3 mantissa bits), no more."""
    text = io.StringIO()
    code = evaluate_command([plan_file], StandInGenerator(), seeds=1, out=tmp_path / "out", figures=0, fp8=True,
                            console=Console(file=text, width=200))
    assert code == 0
    data = json.loads((tmp_path / "out" / "evaluation.json").read_text())
    native, fp8 = data["runs"]
    assert (native["label"], fp8["label"], fp8["kind"], fp8["of"]) == ("right", "right in FP8", "fp8", 0)
    assert fp8["density"] == native["density"]
    d = fp8["versus_native"]["psnr_db"]
    assert d == pytest.approx(fp8["overall"]["psnr_db"] - native["overall"]["psnr_db"])
    assert native["overall"]["rel_l2_latents"] < 1e-4 < 1e-3 < fp8["overall"]["rel_l2_latents"] < 0.1 and d < 0
    assert f"right in FP8: {d:+.2f} dB PSNR" in text.getvalue()


@pytest.mark.parametrize("precision", ["native", "fp8"])
def test_a_plan_reusing_residuals_is_evaluated_with_its_reuse(tmp_path, precision):
    """A plan whose head 0 keeps the wrong blocks, with and without residual reuse from step 0: the
    reuse (exact step 0, what the mask misses carried to the later two steps) brings the video closer
    to dense (by 1.4 dB: the stand-in's inputs change much between its 3 steps); the run reports its exact steps and the most its residuals held, which is the plan's
    ``residual_bytes`` for the stand-in's calls (batch 1, float32 or e4m3)."""
    from attnsearch.plan import Plan, ScheduleEntry

    shifted = stripe_plan([b + 8 for b in FRAME0_BLOCKS])
    reuse = shifted.with_residual([0])
    # the same entries with every inexact head opting out of reuse: the masks alone, as without reuse
    opted = Plan(reuse.geometry, reuse.block_size, reuse.num_steps, reuse.num_layers, reuse.num_heads,
                 tuple(ScheduleEntry(e.start, e.stop, None if e.layers is None else
                                     tuple(lp.with_reuse([False] * lp.num_heads) for lp in e.layers), e.residual)
                       for e in reuse.schedule))
    paths = [write_plan(shifted, tmp_path / "shifted.json"), write_plan(reuse, tmp_path / "reuse.json"),
             write_plan(opted, tmp_path / "opted.json")]
    text = io.StringIO()
    code = evaluate_command(paths, StandInGenerator(), seeds=1, out=tmp_path / "out", figures=0,
                            residual_precision=precision, console=Console(file=text, width=200))
    assert code == 0
    data = json.loads((tmp_path / "out" / "evaluation.json").read_text())
    plain, reused, alone = data["runs"]
    assert alone["overall"]["psnr_db"] == plain["overall"]["psnr_db"] and alone["density"] == plain["density"]
    assert alone["residual_peak_bytes"] == 0 and opted.reuse_counts()[0] == 0
    assert f"opted: reuses residuals from exact steps 0 (0 of {opted.reuse_counts()[1]} inexact head-layers reuse)" \
        in text.getvalue()
    assert data["residual_precision"] == precision and plain["residual_peak_bytes"] == 0
    assert reused["residual_peak_bytes"] == reuse.residual_bytes(head_dim=16, batch=1, element_size=4,
                                                                 precision=precision) > 0
    assert reused["overall"]["psnr_db"] > plain["overall"]["psnr_db"] + 1
    assert reused["density"] == pytest.approx(plain["density"] + 1 / (STEPS * HEADS))  # head 0's exact call at step 0
    peak = f"{reused['residual_peak_bytes'] / 2**20:,.1f}"
    assert f"reuse: reuses residuals from exact steps 0, kept in {precision} precision, at most {peak} MiB" in text.getvalue()
    page = (tmp_path / "out" / "index.html").read_text()
    assert f"residual reuse: exact steps, peak MiB ({precision})" in page and f"<td>0; {peak}</td>" in page
