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


def test_a_profile_of_reuse_gives_the_search_its_errors_under_reuse(tmp_path):
    """Exact steps count 0, the steps after them the profiled drift (rel_err_reuse), the steps before
    the first exact step the masks' own error; a search at other exact steps is refused."""
    import numpy as np

    from attnsearch.profiling.profile_io import Profile
    from attnsearch.search.problem import Problem
    from attnsearch.search.space import build_space

    path, prof = synthetic.large_profile(tmp_path, steps=4, residual_steps=(1,), fingerprint="r3")
    space = build_space(Profile.load(path))
    assert space.reuse_steps == (1,)
    assert np.nanmax(space.reuse_err[2:]) < np.nanmax(space.rel_err[2:])  # slow drift: reuse errs less
    pb = Problem(space, CostModel(DEFAULT_TABLE, head_dim=128), residual_steps=(1,))
    sparse = ~np.isnan(space.rel_err)
    np.testing.assert_allclose(pb.err2[0][sparse[0]], (space.rel_err[0][sparse[0]] ** 2), rtol=1e-5)
    assert (pb.err2[1] == 0).all()
    np.testing.assert_allclose(pb.err2[2:][sparse[2:]], space.reuse_err[2:][sparse[2:]] ** 2, rtol=1e-5, atol=1e-12)
    with pytest.raises(SearchError, match="the profile measured reuse at exact steps 1, not 0, 2"):
        Problem(space, CostModel(DEFAULT_TABLE, head_dim=128), residual_steps=(0, 2))
    res = optimize(path, hardware=DEFAULT_TABLE, head_dim=128, trials=4, max_density=0.9, residual_steps=[1],
                   out=tmp_path / "r.json")
    assert res.plan.search["settings"]["reuse_errors"] == "profiled"
