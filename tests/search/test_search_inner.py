"""The inner solver against brute force: every assignment of every small random instance, with
native, FP8 and skip columns."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from attnsearch.search.inner import CLASSES, DENSE, REUSE, Units, objective, solve_budget, solve_lagrangian


def random_units(rng, U, H, C, *, skip=True, unavailable=0.15, fp8=False):
    """Random units; ``fp8``: every column but skip also has an FP8 twin (cheaper, more error) with
    its own launch + quantization overhead."""
    cost = rng.uniform(0.1, 2.0, (U, H, C))
    err = rng.uniform(0.0, 1.0, (U, H, C)) ** 2
    skip_col = C - 1 if skip else -1
    if skip:
        cost[:, :, skip_col] = rng.uniform(0.0, 0.05, (U, H))  # a zero fill: nearly free
        err[:, :, skip_col] = 1.0
    cost[:, :, 0], err[:, :, 0] = rng.uniform(1.5, 2.5, (U, H)), 0.0   # "dense" heads in the kernel
    holes = rng.random((U, H, C)) < unavailable
    holes[:, :, 0] = False
    cost[holes] = np.inf
    dense = rng.uniform(0.5, 1.5 * H, U)
    force = rng.random(U) < 0.15
    dense[(rng.random(U) < 0.2) & ~force] = np.inf
    units = Units.native(cost, err, skip_col, rng.uniform(0.0, 1.0, U), rng.uniform(0.0, 0.5, U), dense, force)
    if not fp8:
        return units
    computed = [c for c in range(C) if c != skip_col]
    twin_cost = cost[:, :, computed] * rng.uniform(0.4, 0.9, (U, H, len(computed)))
    twin_err = err[:, :, computed] + rng.uniform(0.0, 0.3, (U, H, len(computed)))
    fixed = units.fixed.copy()
    fixed[:, CLASSES.index("fp8")] = rng.uniform(0.0, 1.5, U)
    return Units(np.concatenate([cost, twin_cost], 2), np.concatenate([err, twin_err], 2),
                 np.concatenate([units.col_class, np.full(len(computed), CLASSES.index("fp8"))]), fixed, dense, force)


def all_assignments(units):
    """Every choice of every unit: per unit the cuDNN-dense layer (all −1) or any head product."""
    U, H, C = units.shape
    per_unit = []
    for u in range(U):
        opts = []
        if np.isfinite(units.dense[u]):
            opts.append((-1,) * H)
        if not units.force_dense[u]:
            for combo in itertools.product(range(C), repeat=H):
                if all(np.isfinite(units.cost[u, h, c]) for h, c in enumerate(combo)):
                    opts.append(combo)
        per_unit.append(opts)
    return per_unit


def unit_cost(units, u, combo):
    """Latency and error of one unit's assignment, straight from the runtime's rules: each class
    the heads use (one launch of the native heads, one launch + quantization of the FP8 heads, one
    zero fill of the skip heads) adds its fixed cost once."""
    if combo[0] == -1:
        return units.dense[u], 0.0
    latency = sum(units.cost[u, h, c] for h, c in enumerate(combo))
    latency += sum(units.fixed[u, k] for k in {int(units.col_class[c]) for c in combo})
    if units.col_reuse is not None and any(units.col_reuse[c] for c in combo):
        latency += units.fixed[u, REUSE]          # the exact call the reusing heads share
    return latency, sum(units.err[u, h, c] for h, c in enumerate(combo))


def brute_unit_values(units, lam):
    """Per unit, (latency + λ·error, latency, error) of every assignment."""
    out = []
    for u, opts in enumerate(all_assignments(units)):
        vals = []
        for combo in opts:
            c, e = unit_cost(units, u, combo)
            vals.append((c + lam * e, c, e))
        out.append(vals)
    return out


@pytest.mark.parametrize("seed", range(40))
def test_lagrangian_is_exact(seed):
    rng = np.random.default_rng(seed)
    fp8 = seed % 2 == 1
    units = random_units(rng, U=rng.integers(1, 4), H=rng.integers(1, 4 if not fp8 else 3),
                         C=rng.integers(2, 5 if not fp8 else 4), skip=bool(rng.random() < 0.8), fp8=fp8)
    for lam in (0.0, 0.3, 1.0, 3.0, 30.0):
        best = sum(min(v for v, _, _ in vals) for vals in brute_unit_values(units, lam))
        sol = solve_lagrangian(units, lam)
        assert objective(units, sol.choice, lam) == pytest.approx(best, rel=1e-12, abs=1e-12)
        assert sol.total_cost + lam * sol.total_err == pytest.approx(best, rel=1e-12, abs=1e-12)
        used = [{CLASSES[k] for k in range(len(CLASSES)) if opt >> k & 1} for opt in sol.option]
        for u, classes in enumerate(used):
            got = {CLASSES[units.col_class[c]] for c in sol.choice[u]} if sol.option[u] != DENSE else set()
            assert classes == got


def test_launch_and_fill_counted_once_per_unit():
    # Two heads, candidates [dense-in-kernel, sparse, skip]; launch 1, fill 0.5.
    cost = np.array([[[4.0, 1.0, 0.1], [4.0, 1.0, 0.1]]])
    err = np.array([[[0.0, 0.2, 1.0], [0.0, 0.2, 1.0]]])
    units = Units.native(cost, err, 2, np.array([1.0]), np.array([0.5]), np.array([100.0]), np.array([False]))
    s = solve_lagrangian(units, 0.0)           # cheapest: all skip, no launch: 0.5 + 0.2
    assert s.choice.tolist() == [[2, 2]] and s.total_cost == pytest.approx(0.7)
    s = solve_lagrangian(units, 1.5)           # sparse heads: 1 + 2·1 = 3, error 0.4 → 3.6 < all skip 0.7 + 3
    assert s.choice.tolist() == [[1, 1]] and s.total_cost == pytest.approx(3.0)
    s = solve_lagrangian(units, 1e6)           # error dominates: cuDNN dense beats dense heads in kernel? 100 > 9
    assert s.choice.tolist() == [[0, 0]] and s.total_err == 0.0 and s.total_cost == pytest.approx(9.0)


@pytest.mark.parametrize("seed", range(25))
def test_budget_solution_is_feasible_and_bounded(seed):
    rng = np.random.default_rng(100 + seed)
    fp8 = seed % 2 == 1
    units = random_units(rng, U=rng.integers(1, 4), H=rng.integers(1, 4 if not fp8 else 3),
                         C=rng.integers(2, 5 if not fp8 else 4), fp8=fp8)
    brute = brute_unit_values(units, 0.0)
    # Every combination of per-unit assignments: (cost, err) of whole plans.
    plans = [(sum(c for _, c, _ in p), sum(e for _, _, e in p)) for p in itertools.product(*brute)]
    errs = sorted({e for _, e in plans})
    for budget in (errs[0], errs[len(errs) // 3], errs[len(errs) // 2], errs[-1], errs[0] * 0.5 - 1e-9):
        res = solve_budget(units, budget)
        within = [c for c, e in plans if e <= budget + 1e-12]
        if not within:
            assert not res.feasible and res.min_err == pytest.approx(errs[0], rel=1e-9, abs=1e-12)
            continue
        opt = min(within)
        assert res.feasible and res.solution.total_err <= budget + 1e-9
        assert res.lower_bound <= opt + 1e-9 <= res.solution.total_cost + 2e-9
        # Everett: the returned Lagrangian point is exactly optimal for its own error.
        own = min(c for c, e in plans if e <= res.solution.total_err + 1e-12)
        assert res.solution.total_cost == pytest.approx(own, rel=1e-9, abs=1e-12)


def test_infeasible_unit_is_named():
    cost = np.full((1, 1, 2), np.inf)
    units = Units.native(cost, np.zeros((1, 1, 2)), -1, np.zeros(1), np.zeros(1), np.array([np.inf]), np.array([False]))
    with pytest.raises(ValueError, match="unit 0: no feasible option"):
        solve_lagrangian(units, 1.0)


def test_fp8_fixed_cost_is_paid_once_and_only_when_a_head_runs_fp8():
    # Columns [sparse native, skip, sparse fp8]; native launch 1, fill 0.5, FP8 launch + quantization 2;
    # λ = 10. Per head FP8 saves 0.6 of latency and adds 0.2 of λ·error: 0.4. Two heads save 0.8, less
    # than the 2 − 1 the FP8 launch costs over the native one; four save 1.6, more.
    def units(H):
        cost = np.tile([[1.0, 0.1, 0.4]], (1, H, 1))
        err = np.tile([[0.2, 1.0, 0.22]], (1, H, 1))
        fixed = np.array([[1.0, 2.0, 0.5]])
        return Units(cost, err, np.array([0, 2, 1]), fixed, np.array([1e9]), np.array([False]))

    s = solve_lagrangian(units(2), 10.0)
    assert s.choice.tolist() == [[0, 0]] and s.total_cost == pytest.approx(3.0) and s.option.tolist() == [1]
    s = solve_lagrangian(units(4), 10.0)
    assert s.choice.tolist() == [[2] * 4] and s.total_cost == pytest.approx(3.6) and s.option.tolist() == [2]


def with_reuse(rng, units):
    """``units`` with every column but the first (dense in the kernel: exact) given a twin that
    reuses a residual: a little more cost per head, less error, and a fixed cost per unit (the exact
    call) paid once if any head reuses."""
    U, H, C = units.shape
    cols = list(range(1, C))
    cost = units.cost[:, :, cols] + rng.uniform(0.0, 0.4, (U, H, len(cols)))
    err = units.err[:, :, cols] * rng.uniform(0.0, 0.6, (U, H, len(cols)))
    fixed = np.concatenate([units.fixed, rng.uniform(0.0, 2.0, (U, 1))], 1)
    return Units(np.concatenate([units.cost, cost], 2), np.concatenate([units.err, err], 2),
                 np.concatenate([units.col_class, units.col_class[cols]]), fixed, units.dense, units.force_dense,
                 col_reuse=np.arange(C + len(cols)) >= C)


@pytest.mark.parametrize("seed", range(30))
def test_lagrangian_is_exact_with_the_reuse_item(seed):
    rng = np.random.default_rng(500 + seed)
    fp8 = seed % 3 == 1
    units = with_reuse(rng, random_units(rng, U=rng.integers(1, 4), H=rng.integers(1, 3), C=rng.integers(2, 4),
                                         skip=bool(rng.random() < 0.7), fp8=fp8))
    for lam in (0.0, 0.3, 1.0, 3.0, 30.0):
        best = sum(min(v for v, _, _ in vals) for vals in brute_unit_values(units, lam))
        sol = solve_lagrangian(units, lam)
        assert sol.total_cost + lam * sol.total_err == pytest.approx(best, rel=1e-12, abs=1e-12)
        for u in range(units.shape[0]):
            if sol.option[u] != DENSE:  # the option's reuse bit says whether a head reuses
                assert bool(sol.option[u] >> REUSE & 1) == bool(units.col_reuse[sol.choice[u]].any())


def test_the_reuse_fixed_cost_is_paid_once_per_unit():
    # Columns [sparse, sparse reusing]; native launch 0; reuse's exact call 3, its per-head pass 0.1; λ = 10.
    # Per head reuse saves 10 · (0.3 − 0.05) − 0.1 = 2.4: one head does not pay for the call, two do.
    def units(H):
        cost = np.tile([[1.0, 1.1]], (1, H, 1))
        err = np.tile([[0.3, 0.05]], (1, H, 1))
        return Units(cost, err, np.array([0, 0]), np.array([[0.0, 0.0, 0.0, 3.0]]), np.array([1e9]),
                     np.array([False]), col_reuse=np.array([False, True]))

    s = solve_lagrangian(units(1), 10.0)
    assert s.choice.tolist() == [[0]] and s.total_cost == pytest.approx(1.0)
    s = solve_lagrangian(units(2), 10.0)
    assert s.choice.tolist() == [[1, 1]] and s.total_cost == pytest.approx(2.2 + 3.0)
    assert s.option.tolist() == [1 | 1 << REUSE]
    with pytest.raises(ValueError, match="fixed: 3 columns, want 4"):
        Units(np.ones((1, 1, 2)), np.ones((1, 1, 2)), np.array([0, 0]), np.zeros((1, 3)), np.ones(1),
              np.array([False]), col_reuse=np.array([False, True]))
