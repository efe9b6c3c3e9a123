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
    reusing, inexact = plan.reuse_counts()
    assert reusing == inexact > 0  # by default every inexact head reuses
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
    pb = Problem(space, CostModel(DEFAULT_TABLE, head_dim=128), residual_steps=(1,), residual_heads="searched")
    sparse = ~np.isnan(space.rel_err)
    C = space.shape[-1]  # the reusing columns (their twins, masks alone: the next C)
    np.testing.assert_allclose(pb.err2[0, ..., :C][sparse[0]], (space.rel_err[0][sparse[0]] ** 2), rtol=1e-5)
    assert (pb.err2[1, ..., :C] == 0).all()
    np.testing.assert_allclose(pb.err2[2:, ..., :C][sparse[2:]], space.reuse_err[2:][sparse[2:]] ** 2, rtol=1e-5,
                               atol=1e-12)
    with pytest.raises(SearchError, match="the profile measured reuse at exact steps 1, not 0, 2"):
        Problem(space, CostModel(DEFAULT_TABLE, head_dim=128), residual_steps=(0, 2))
    res = optimize(path, hardware=DEFAULT_TABLE, head_dim=128, trials=4, max_density=0.9, residual_steps=[1],
                   out=tmp_path / "r.json")
    assert res.plan.search["settings"]["reuse_errors"] == "profiled"


def _reuse_problem(tmp_path, weights=None):
    import numpy as np  # noqa: F401

    from attnsearch.profiling.profile_io import Profile
    from attnsearch.search.problem import Problem
    from attnsearch.search.space import build_space

    path, _ = synthetic.large_profile(tmp_path, steps=4, residual_steps=(1,), fingerprint="r4")
    space = build_space(Profile.load(path))
    cm = CostModel(DEFAULT_TABLE, head_dim=128)
    return space, cm, Problem(space, cm, residual_steps=(1,), weights=weights, residual_heads="searched")


def test_every_inexact_candidate_has_a_twin_that_runs_its_mask_alone(tmp_path):
    """Where a span reuses ([1, 4) here), each inexact column's twin errs by the mask's own error at
    every step, the exact step included, and costs the mask alone; the reusing column errs 0 at the
    exact step and its drift after, and pays, with the unit's fixed reuse cost, what the exact call
    and the passes cost the cost model for one reusing head and for all of them. Before the first
    exact step, and for the exact native dense column, there is no twin."""
    import numpy as np

    from attnsearch.search.inner import REUSE
    from attnsearch.search.problem import Knobs

    space, cm, pb = _reuse_problem(tmp_path)
    S, L, H, C = space.shape
    assert pb.cost.shape == (S, L, H, 2 * C)
    exact_col = [c for c, (f, p) in enumerate(zip(space.families, space.precisions)) if f == "dense" and p == "native"]
    assert np.isinf(pb.cost[0, ..., C:]).all() and np.isinf(pb.cost[1:, ..., [C + c for c in exact_col]]).all()
    usable = np.isfinite(pb.cost[1:, ..., :C])
    usable[..., exact_col] = False
    np.testing.assert_array_equal(pb.cost[1:, ..., C:][usable], pb.cost[1:, ..., :C][usable])
    sparse = ~np.isnan(space.rel_err[1:])
    np.testing.assert_allclose(pb.err2[1:, ..., C:][sparse], space.rel_err[1:][sparse] ** 2, rtol=1e-5)
    assert (pb.err2[1, ..., :C] == 0).all()
    # The exact call and the passes over k reusing heads, affine in k: exact at k = 1 and k = H.
    n = space.geometry.num_tokens
    exact_k = lambda k: cm.dense_layer_ms(n, k, 64)  # noqa: E731
    reuse_k = lambda k: exact_k(k) + 3 * cm.residual_pass_ms(k, n)  # noqa: E731  (span [1, 4): 3 steps)
    per_head = (exact_k(H) - exact_k(1)) / (H - 1) + 3 * (cm.residual_pass_ms(2, n) - cm.residual_pass_ms(1, n))
    (rs, cost, _, _) = pb.aggregate(0, 1)
    assert [(r.start, r.stop) for r in rs] == [(0, 1), (1, 4)]
    inexact = [c for c in range(C) if c not in exact_col and np.isfinite(cost[1, 0, 0, c])
               and space.families[c] != "vertical_stripe"]
    np.testing.assert_allclose(cost[1, ..., inexact] - cost[1, ..., [C + c for c in inexact]], per_head, rtol=1e-4)
    rs, units = pb.units(Knobs(lam=1.0, block_size=64))
    fixed = units.fixed[:, REUSE].reshape(len(rs), L)
    assert (fixed[0] == 0).all()  # before the first exact step nothing reuses
    np.testing.assert_allclose(fixed[1] + 1 * per_head, reuse_k(1), rtol=1e-4)
    np.testing.assert_allclose(fixed[1] + H * per_head, reuse_k(H), rtol=1e-4)
    dense = exact_col[0]  # the exact column pays nothing for reuse
    np.testing.assert_allclose(cost[1, ..., dense], pb.cost[1:, ..., dense].sum(0), rtol=1e-5)


def test_heads_whose_error_weighs_nothing_opt_out_of_reuse_and_the_figures_cost_the_plan(tmp_path):
    """Planted weights: heads 0 and 1 of every layer weigh nothing, heads 2 and 3 twice the mean. The
    weightless heads' error saves nothing, so reuse is cost alone for them and they opt out; the
    others reuse. The assignment's latency is the cost model's of the plan it becomes."""
    import numpy as np

    from attnsearch.search.problem import Knobs

    w = np.ones((4, 2, 4))
    w[..., :2], w[..., 2:] = 0.0, 2.0
    space, cm, pb = _reuse_problem(tmp_path, weights=w)
    for lam in (1.0, 3.0):  # (a lower λ skips every head; a higher one runs every layer dense)
        a = pb.solve(Knobs(lam=lam, block_size=64))
        plan = pb.plan(a)
        layers = [lp for e in plan.schedule if e.residual for lp in e.layers]
        assert layers and all(lp.reuse_heads == (2, 3) for lp in layers)
        assert all(not lp.head_reuse[0] and not lp.head_reuse[1] for lp in layers)
        assert a.cost_ms == pytest.approx(cm.plan_ms(plan), rel=1e-6)


def test_residual_heads_searched_through_optimize_and_refused_without_reuse(tmp_path):
    """``residual_heads="searched"`` reaches the plans (heads may opt out; the settings and the study
    say so: another objective, another study); without residual steps it is refused, and so is a
    word that is not a choice."""
    path, _ = synthetic.large_profile(tmp_path, steps=4, residual_steps=(1,), fingerprint="r5")
    every = optimize(path, hardware=DEFAULT_TABLE, head_dim=128, trials=4, max_density=0.9, residual_steps=[1],
                     out=tmp_path / "a.json")
    chosen = optimize(path, hardware=DEFAULT_TABLE, head_dim=128, trials=4, max_density=0.9, residual_steps=[1],
                      residual_heads="searched", out=tmp_path / "s.json")
    assert "residual_heads" not in every.plan.search["settings"]
    assert chosen.plan.search["settings"]["residual_heads"] == "searched"
    assert chosen.plan.search["study"] != every.plan.search["study"]
    cm = CostModel(DEFAULT_TABLE, head_dim=128)
    assert cm.plan_ms(chosen.plan) == pytest.approx(chosen.plan.predicted["attention_ms"], rel=0.01)
    with pytest.raises(SearchError, match="residual_heads 'searched': give residual_steps"):
        optimize(path, hardware=DEFAULT_TABLE, head_dim=128, trials=1, residual_heads="searched",
                 out=tmp_path / "x.json")
    with pytest.raises(SearchError, match="residual_heads must be one of all, searched, got 'some'"):
        optimize(path, hardware=DEFAULT_TABLE, head_dim=128, trials=1, residual_steps=[1], residual_heads="some",
                 out=tmp_path / "x.json")
    assert not (tmp_path / "x.json").exists()
