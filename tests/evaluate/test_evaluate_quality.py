"""evaluate on a stand-in video model whose attention structure is known: a dense plan reproduces
the dense videos exactly (PSNR = inf, written as null and flagged), a plan keeping the blocks the
model attends to is nearly exact, and the same plan with one head's kept blocks shifted is caught."""

from __future__ import annotations

import json
import math

import pytest
import torch

from attnsearch.evaluate import HELD_OUT_SEED_START, EvaluateError, evaluate, video_quality
from attnsearch.evaluate.evaluation import strict_json
from attnsearch.metrics import psnr
from attnsearch.plan import LayerPlan, Plan, ScheduleEntry
from video_standin import FRAMES, GEOMETRY, HEADS, LAYERS, SIZE, StandInGenerator

BLOCK = 64
STEPS = 3
FRAME0_BLOCKS = list(range(SIZE * SIZE // BLOCK))          # key blocks of frame 0: head 0 attends there


def stripe_plan(key_blocks: list[int], layer: int | None = None) -> Plan:
    """Head 0 keeps ``key_blocks`` (in every layer, or only in ``layer``), head 1 dense."""
    right = LayerPlan.from_heads([("vertical_stripe", {"key_blocks": FRAME0_BLOCKS, "rows": 0}), ("dense", {})],
                                 GEOMETRY, BLOCK)
    other = LayerPlan.from_heads([("vertical_stripe", {"key_blocks": key_blocks, "rows": 0}), ("dense", {})],
                                 GEOMETRY, BLOCK)
    layers = tuple(other if layer is None or i == layer else right for i in range(LAYERS))
    return Plan(GEOMETRY, BLOCK, STEPS, LAYERS, HEADS, (ScheduleEntry(0, STEPS, layers),))


def strict_loads(text: str):
    def refuse(name):
        raise ValueError(f"non-strict JSON constant {name}")

    return json.loads(text, parse_constant=refuse)


@pytest.fixture(scope="module")
def result():
    shift = len(FRAME0_BLOCKS) * (FRAMES // 2)                # the same blocks, two frames later
    plans = [Plan.dense(GEOMETRY, STEPS, LAYERS, HEADS, BLOCK), stripe_plan(FRAME0_BLOCKS),
             stripe_plan([b + shift for b in FRAME0_BLOCKS], layer=1)]
    return evaluate(plans, StandInGenerator(), seeds=2, steps=STEPS, labels=["dense", "right", "shifted"])


def test_dense_plan_reproduces_dense_videos_and_infinite_psnr_is_null_and_flagged(result, tmp_path):
    dense = result.runs[0]
    assert all(torch.equal(v.frames, d.frames) and torch.equal(v.latents, d.latents)
               for v, d in zip(dense.videos, result.dense))
    assert dense.overall["psnr_db"] == math.inf and dense.overall["identical_videos"] == 2
    assert dense.calls == {"calls": 2 * STEPS * LAYERS, "sparse": 0, "dense": 2 * STEPS * LAYERS}
    data = strict_loads(result.write_json(tmp_path / "e.json").read_text())
    run = data["runs"][0]
    assert run["overall"]["psnr_db"] is None and run["videos"][0]["psnr_db"] is None
    assert run["videos"][0]["identical"] is True and run["videos"][0]["psnr_per_frame_db"] == [None] * FRAMES
    assert {"runs[0].overall.psnr_db", "runs[0].videos[1].psnr_per_frame_db[3]"} <= set(data["infinite"])
    assert not any(p.startswith("runs[1]") for p in data["infinite"])      # finite values stay numbers
    assert data["seeds"] == [HELD_OUT_SEED_START, HELD_OUT_SEED_START + 1] and data["seeds_held_out"] is True


def test_shifted_head_is_caught_by_a_threshold(result):
    _, right, shifted = result.runs
    assert right.density == pytest.approx(shifted.density)                 # same compute, other blocks
    assert right.overall["psnr_db"] > 50 and right.overall["ssim"] > 0.999
    assert shifted.overall["psnr_db"] < right.overall["psnr_db"] - 20
    assert shifted.overall["rel_l2_latents"] > 20 * right.overall["rel_l2_latents"]
    assert result.failures(min_psnr=30) == [f"shifted: mean PSNR {shifted.overall['psnr_db']:.2f} dB < 30 dB"]
    assert result.failures(min_psnr=30, min_ssim=0.9999)[-1].startswith("shifted: mean SSIM")


def test_metrics_match_an_independent_computation(result):
    run, dense = result.runs[2], result.dense[0]
    x, ref = run.videos[0].frames.double(), dense.frames.double()
    m = run.metrics[0]
    mse = ((x - ref) ** 2).mean().item()
    assert m["psnr_db"] == pytest.approx(10 * math.log10(1 / mse), rel=1e-9)
    per_frame = [10 * math.log10(1 / ((x[:, :, f] - ref[:, :, f]) ** 2).mean().item()) for f in range(FRAMES)]
    assert m["psnr_per_frame_db"] == pytest.approx(per_frame, rel=1e-9)
    lat, lref = run.videos[0].latents.double(), dense.latents.double()
    assert m["rel_l2_latents"] == pytest.approx(((lat - lref).norm() / lref.norm()).item(), rel=1e-9)
    assert 0 < m["ssim"] < 1 and m["identical"] is False
    assert psnr(run.videos[0].frames, dense.frames, data_range=1.0) == m["psnr_db"]


def test_plan_that_does_not_fit_the_model_is_refused_before_sparse_runs():
    gen = StandInGenerator()
    too_many = Plan.dense(GEOMETRY, STEPS, LAYERS + 1, HEADS, BLOCK)
    with pytest.raises(EvaluateError, match=r"plan: has 3 layers, the model makes 2 self-attention calls per step"):
        evaluate(too_many, gen, seeds=1)
    with pytest.raises(EvaluateError, match=r"plan: has 4 heads, the model's attention 2"):
        evaluate(Plan.dense(GEOMETRY, STEPS, LAYERS, 4, BLOCK), gen, seeds=1)
    with pytest.raises(EvaluateError, match=r"--steps: 2 sampler steps, but plan 0 covers 3"):
        evaluate(Plan.dense(GEOMETRY, STEPS, LAYERS, HEADS, BLOCK), gen, seeds=1, steps=2)
    with pytest.raises(EvaluateError, match=r"--seeds: must be ≥ 1, got 0"):
        evaluate(Plan.dense(GEOMETRY, STEPS, LAYERS, HEADS, BLOCK), gen, seeds=0)


def test_strict_json_replaces_infinities_and_refuses_nan():
    infinite: list[str] = []
    assert strict_json({"a": [1.0, math.inf], "b": {"c": -math.inf}}, "", infinite) == \
        {"a": [1.0, None], "b": {"c": None}}
    assert infinite == ["a[1]", "-b.c"]
    with pytest.raises(ValueError, match="x.y: NaN"):
        strict_json({"y": math.nan}, "x", [])


def test_video_quality_refuses_mismatched_videos(result):
    a, b = result.dense[0], result.dense[1]
    b = type(b)(latents=b.latents, frames=b.frames[:, :, :2])
    with pytest.raises(ValueError, match="frames: .* differ from the dense video's"):
        video_quality(b, a)


def test_plans_of_different_searches_are_drawn_as_different_curves(tmp_path, monkeypatch):
    """The quality-vs-density figure joins plans into one curve only where they come from one search
    (``search.study``): a line through plans of two searches would read as one trade-off."""
    from attnsearch.evaluate import figures, page

    def plan(key_blocks, study):
        p = stripe_plan(key_blocks)
        return Plan(p.geometry, p.block_size, p.num_steps, p.num_layers, p.num_heads, p.schedule,
                    search={"study": study})

    drawn = []
    monkeypatch.setattr(figures, "quality_vs_density", lambda series, path: drawn.append(series) or path)
    one = [plan(FRAME0_BLOCKS, "a"), plan(FRAME0_BLOCKS[:2], "a")]
    page.write_outputs(evaluate(one, StandInGenerator(), seeds=1, steps=STEPS), tmp_path / "one", figure_videos=0)
    two = [plan(FRAME0_BLOCKS, "a"), plan(FRAME0_BLOCKS[:2], "b"), plan(FRAME0_BLOCKS[:1], "b")]
    page.write_outputs(evaluate(two, StandInGenerator(), seeds=1, steps=STEPS), tmp_path / "two", figure_videos=0)
    assert [sorted(s) for s in drawn] == [["plans"], ["plans of a", "plans of b"]]
    assert [len(drawn[1]["plans of a"]), len(drawn[1]["plans of b"])] == [1, 2]
