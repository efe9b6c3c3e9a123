"""Residual reuse in the search: plans split at the exact steps, costed and counted with them."""

from __future__ import annotations

import pytest

from attnsearch import load_plan
from attnsearch.costmodel import CostModel
from attnsearch.costmodel.table import DEFAULT_TABLE
from attnsearch.search import SearchError, optimize

import synthetic


@pytest.fixture(scope="module")
def profile_path(tmp_path_factory):
    """4 steps × 2 layers × 4 heads at N = 8,192 (B = 64): sparse layers beat dense ones there."""
    return synthetic.large_profile(tmp_path_factory.mktemp("residual"), steps=4, seed=2, fingerprint="r2")[0]


def test_plans_reuse_residuals_from_the_exact_steps_and_are_costed_with_them(profile_path, tmp_path):
    res = optimize(profile_path, hardware=DEFAULT_TABLE, head_dim=128, trials=6, max_density=0.6,
                   residual_steps=[0, 2], out=tmp_path / "r.json")
    plan = load_plan(res.path)
    assert plan.residual_steps and set(plan.residual_steps) <= {0, 2}
    for e in plan.schedule:
        if e.layers is not None:  # every sparse range starts at an exact step or runs from one
            assert e.residual or e.stop - e.start == 1 or e.start not in (0, 2)
    assert res.plan.search["settings"]["residual_steps"] == [0, 2]
    cm = CostModel(DEFAULT_TABLE, head_dim=128)
    assert cm.plan_ms(plan) == pytest.approx(plan.predicted["attention_ms"], rel=0.01)
    assert cm.residual_ms(plan) > 0
    assert plan.mean_density <= 0.6  # the cap holds with the exact steps' dense calls counted
    plain = optimize(profile_path, hardware=DEFAULT_TABLE, head_dim=128, trials=6, max_density=0.6,
                     out=tmp_path / "p.json")
    assert "residual_steps" not in plain.plan.search["settings"] and not plain.plan.has_residual
    assert plain.plan.search["study"] != res.plan.search["study"]  # another objective, another study


@pytest.mark.parametrize("steps, message", [([4], r"step 4 is outside the plan's steps \[0, 4\)"),
                                            ([1, 1], "listed twice"), ([], "at least one")])
def test_bad_exact_steps_are_named(profile_path, tmp_path, steps, message):
    with pytest.raises(SearchError, match=f"residual_steps: .*{message}"):
        optimize(profile_path, hardware=DEFAULT_TABLE, head_dim=128, trials=1, residual_steps=steps,
                 out=tmp_path / "x.json")
    assert not (tmp_path / "x.json").exists()
