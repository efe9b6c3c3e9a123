"""Validation modes: teacher-forced steps and whole trajectories, against a brute-force reference.

The reference runs the sampler with every self-attention call replaced by fp32 SDPA under the
token mask that the plan's block masks expand to (the plan's own runtime is not involved), counts
steps and layers itself, and computes the error figures of the final frames directly.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from attnsearch import Plan
from attnsearch.metrics import psnr
from attnsearch.models import ModelSpec
from attnsearch.plan import LayerPlan, ScheduleEntry
from attnsearch.search import SearchError
from attnsearch.search.validate import Validator
from tiny_models import tiny_mini_vdit

SIZE = (4, 32, 32)   # 4 × 8 × 8 = 256 tokens, 4 blocks
STEPS = 3
BLOCK = 64


@pytest.fixture(scope="module")
def spec() -> ModelSpec:
    return tiny_mini_vdit(SIZE, STEPS)


def _plan(spec: ModelSpec) -> Plan:
    """Step 0 dense, then every head keeps only its own query block's keys (block-diagonal)."""
    g, heads = spec.geometry, spec.model.config.heads
    diag = LayerPlan.single("diagonal", {"rows": 0}, g, heads, BLOCK)
    layers = tuple(diag for _ in range(spec.model.config.depth))
    return Plan(g, BLOCK, STEPS, spec.model.config.depth, heads,
                (ScheduleEntry(0, 1, None), ScheduleEntry(1, STEPS, layers)))


def _reference_frames(spec: ModelSpec, plan: Plan, n: int) -> torch.Tensor:
    """The sampler with masked fp32 SDPA standing in for every self-attention call."""
    counter = {"call": 0}
    layers = plan.num_layers
    real_sdpa = F.scaled_dot_product_attention

    def masked(q, k, v, *args, **kwargs):
        if k.shape[-2] != q.shape[-2]:          # cross-attention: untouched
            return real_sdpa(q, k, v, *args, **kwargs)
        step, layer = divmod(counter["call"], layers)
        counter["call"] += 1
        blocks = plan.layer_plan(step, layer).block_masks()                       # [H, nb, nb]
        n_tok = q.shape[-2]
        keep = blocks.repeat_interleave(BLOCK, 1).repeat_interleave(BLOCK, 2)[:, :n_tok, :n_tok]
        scores = (q.double() @ k.double().transpose(-1, -2)) / math.sqrt(q.shape[-1])
        scores = scores.masked_fill(~keep.unsqueeze(0), float("-inf"))
        return (scores.softmax(-1) @ v.double()).to(q.dtype)

    F.scaled_dot_product_attention = masked
    try:
        return spec.trajectories(n)
    finally:
        F.scaled_dot_product_attention = real_sdpa


def test_trajectory_mode_measures_the_final_frames_of_whole_trajectories(spec):
    plan = _plan(spec)
    v = Validator(spec, 2, backend="torch", mode="trajectory")
    got = v.measure(plan)
    dense = spec.trajectories(2)
    ref = _reference_frames(spec, plan, 2)
    want = float((ref - dense).double().norm() / dense.double().norm())
    assert got["rel_l2"] > 1e-3                      # the plan really changes the videos
    assert got["rel_l2"] == pytest.approx(want, rel=1e-3)
    assert got["psnr_db"] == pytest.approx(psnr(ref, dense, 1.0), abs=0.05)


def test_a_dense_plan_reproduces_the_dense_trajectories(spec):
    dense = Plan.dense(spec.geometry, STEPS, spec.model.config.depth, spec.model.config.heads, BLOCK)
    got = Validator(spec, 1, backend="torch", mode="trajectory").measure(dense)
    assert got["rel_l2"] < 1e-5 and got["psnr_db"] > 80


def test_the_model_runs_only_for_what_is_measured(spec):
    """A validator runs the dense model at its first measurement, not before; a plan of the same
    content as one measured before (even a new object) gets the same figures without running the
    model; another plan runs it again."""
    forwards = []
    hook = spec.model.register_forward_hook(lambda *_: forwards.append(1))
    try:
        v = Validator(spec, 2, backend="torch")
        assert not forwards
        first = v.measure(_plan(spec))
        assert len(forwards) == 4                      # dense reference and the plan: 2 steps each
        assert v.measure(_plan(spec)) == first and len(forwards) == 4
        dense = Plan.dense(spec.geometry, STEPS, spec.model.config.depth, spec.model.config.heads, BLOCK)
        assert v.measure(dense)["rel_l2"] < 1e-5 and len(forwards) == 6
    finally:
        hook.remove()


def test_bad_requests_name_the_problem(spec):
    with pytest.raises(SearchError, match="3 trajectories asked, the model has 2"):
        Validator(spec, 3, mode="trajectory")
    with pytest.raises(SearchError, match="validate mode: must be one of steps, trajectory"):
        Validator(spec, 1, mode="frames")
    plain = ModelSpec(name="plain", model=spec.model, geometry=spec.geometry, inputs=spec.inputs, fingerprint="x")
    with pytest.raises(SearchError, match="has no sampler"):
        Validator(plain, 1, mode="trajectory")
    with pytest.raises(ValueError, match="trajectories and num_trajectories"):
        ModelSpec(name="bad", model=spec.model, geometry=spec.geometry, inputs=spec.inputs, fingerprint="x",
                  num_trajectories=2)


@pytest.mark.slow
def test_optimize_with_trajectory_validation_records_what_it_measured(spec, tmp_path):
    """The chosen plan's stored figures are its whole-trajectory error, re-measured here."""
    from attnsearch.profiling import ProfileSettings, profile_model
    from attnsearch.search import optimize

    prof = profile_model(spec, settings=ProfileSettings(block_size=BLOCK, queries=32))
    prof.save(tmp_path / "p.parquet")
    res = optimize(tmp_path / "p.parquet", hardware="nvidia-h100-80gb-hbm3", model=spec, validate=2,
                   validate_mode="trajectory", max_density=0.8, trials=6, out=tmp_path / "plan.json", backend="torch")
    val = res.plan.search["validation"]
    assert val["mode"] == "trajectory" and val["inputs"] == 2
    assert "trajectories" in res.plan.search["objectives"]["error_metric"]
    again = Validator(spec, 2, backend="torch", mode="trajectory").measure(res.plan)
    assert val["rel_l2"] == pytest.approx(again["rel_l2"], rel=1e-6)
    assert res.plan.mean_density <= 0.8
    with pytest.raises(SearchError, match="validate_mode must be one of steps, trajectory"):
        optimize(tmp_path / "p.parquet", model=spec, validate=1, validate_mode="video", trials=0,
                 out=tmp_path / "x.json")
