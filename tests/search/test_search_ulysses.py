"""Search for a Ulysses degree: plans are costed by their slowest rank, each rank running its H/K
heads of the plan (the runtime's own slices, costed independently by the cost model)."""

from __future__ import annotations

import json

import pytest

from attnsearch.costmodel import CostModel
from attnsearch.runtime.parallel import head_range, slice_layer_plan
from attnsearch.search import SearchError
from attnsearch.search.problem import Knobs, Problem
from attnsearch.search.space import build_space

import synthetic


@pytest.fixture(scope="module")
def small_profile(tmp_path_factory):
    return synthetic.small_profile(tmp_path_factory.mktemp("prof"))


@pytest.mark.parametrize("knobs", [Knobs(lam=0.05, warmup=1, ranges=2, block_size=64),
                                   Knobs(lam=0.5, ranges=1, block_size=64)])
def test_ulysses_cost_is_the_slowest_ranks_full_model_latency(small_profile, knobs):
    _, prof = small_profile
    cm = CostModel("nvidia-h100-80gb-hbm3", head_dim=128)
    pb = Problem(build_space(prof), cm, ulysses=2)
    a = pb.solve(knobs)
    plan = pb.plan(a)
    N, H = plan.geometry.num_tokens, plan.num_heads
    expected = 0.0
    for step in range(plan.num_steps):
        for layer in range(plan.num_layers):
            lp = plan.layer_plan(step, layer)
            expected += max(cm.layer_ms(slice_layer_plan(lp, head_range(H, 2, r))) for r in range(2))
    assert a.cost_ms == pytest.approx(expected, rel=1e-6)
    fig = pb.figures(a)
    assert fig["dense_attention_ms"] == pytest.approx(plan.num_steps * plan.num_layers * float(cm.dense_ms(N, H // 2)))
    assert fig["speedup"] == pytest.approx(fig["dense_attention_ms"] / expected)


def test_ulysses_degree_must_divide_the_heads(small_profile):
    _, prof = small_profile
    with pytest.raises(SearchError, match="ulysses: the degree must be a positive divisor of the profile's 4 heads, got 3"):
        Problem(build_space(prof), CostModel("nvidia-h100-80gb-hbm3", head_dim=128), ulysses=3)


def test_optimize_cli_takes_ulysses(small_profile, tmp_path):
    from typer.testing import CliRunner

    from attnsearch.cli import app

    path, _ = small_profile
    out = tmp_path / "plan.json"
    res = CliRunner().invoke(app, ["optimize", str(path), "--trials", "3", "--ulysses", "2", "--head-dim", "128", "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert json.loads(out.read_text())["search"]["settings"]["ulysses"] == 2
    bad = CliRunner().invoke(app, ["optimize", str(path), "--trials", "1", "--ulysses", "3", "--head-dim", "128", "--out",
                                   str(tmp_path / "p3.json")])
    assert bad.exit_code == 2 and "ulysses: the degree must be a positive divisor" in bad.output
    zero = CliRunner().invoke(app, ["optimize", str(path), "--ulysses", "0", "--out", str(tmp_path / "p0.json")])
    assert zero.exit_code == 2 and "--ulysses" in zero.output
