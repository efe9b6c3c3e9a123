"""The inner problem: one candidate per head, minimising predicted latency + λ · error, exactly.

A *unit* is one layer over one step range; it holds H heads with C candidates each. Costs are the
cost model's additive form (:meth:`attnsearch.costmodel.CostModel.head_work_ms`), already summed
over the unit's steps; errors are Σ rel_err² over those steps. A unit's latency is not a plain sum
of its heads, because the runtime fuses a layer into one launch:

    option "sparse":  launch + Σ_h cost[h, c_h]           every head computed (dense heads allowed)
    option "mixed":   launch + fill + Σ_h cost[h, c_h]    some heads skip (zero fill), some computed
    option "skip":    fill + Σ_h cost[h, skip]            every head skip: no launch at all
    option "dense":   cuDNN dense for the whole layer     error 0

Given λ, each option is separable over heads, so its minimum is a per-head argmin; the unit's
minimum is the best option — exact for this objective (the options cover every assignment and
each option's value is exact on its own argmin; "mixed" over-counts assignments that belong to
"sparse" or "skip", which those options then win). The test suite checks this against brute force.

The budgeted form (least latency with Σ error ≤ budget) is solved through λ (:func:`solve_budget`):
the Lagrangian solution at λ is *exactly* optimal for the budget equal to its own error (Everett,
1963), and its error falls as λ grows, so bisection finds the cheapest such hull point within the
budget; the dual bound max_λ L(λ) − λ·budget certifies how far any plan could still be below it
(``gap``: at most one head's move, the classic multiple-choice-knapsack LP bound).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

OPTIONS = ("sparse", "mixed", "skip", "dense")


@dataclass
class Units:
    """A batch of units (arrays; U units × H heads × C candidates).

    cost, err: [U, H, C] float (inf cost = candidate unavailable). skip_col: index of the ``skip``
    candidate or -1. launch, fill: [U] fixed costs of the fused launch and of the zero fill.
    dense: [U] cuDNN cost of the whole unit (inf: not allowed). force_dense: [U] bool.
    """

    cost: np.ndarray
    err: np.ndarray
    skip_col: int
    launch: np.ndarray
    fill: np.ndarray
    dense: np.ndarray
    force_dense: np.ndarray

    @property
    def shape(self) -> tuple[int, int, int]:
        return self.cost.shape


@dataclass
class Solution:
    """Per-unit choice: ``option`` [U] index into OPTIONS; ``choice`` [U, H] candidate (−1 when the
    unit is dense). ``cost``/``err`` [U]: the unit's latency and error under the choice."""

    option: np.ndarray
    choice: np.ndarray
    cost: np.ndarray
    err: np.ndarray
    lam: float

    @property
    def total_cost(self) -> float:
        return float(self.cost.sum())

    @property
    def total_err(self) -> float:
        return float(self.err.sum())


def solve_lagrangian(units: Units, lam: float) -> Solution:
    """Exact minimiser of Σ_units latency + λ · Σ error (ties: the earlier option, the lower index)."""
    if not (lam >= 0 and math.isfinite(lam)):
        raise ValueError(f"lambda must be a finite number ≥ 0, got {lam!r}")
    cost, err = units.cost, units.err
    U, H, C = cost.shape
    v = cost + np.asarray(lam, dtype=cost.dtype) * err if lam else cost.copy()  # inf cost stays inf
    c_mixed = np.argmin(v, axis=2)
    best = _gather(v, c_mixed)
    s_mixed = best.sum(1, dtype=np.float64) + units.launch + units.fill
    # Option "sparse" (no skip head) differs only where a head's best is skip: re-take those heads.
    c_sparse, best_ns = c_mixed, best
    if units.skip_col >= 0:
        u_idx, h_idx = np.nonzero(c_mixed == units.skip_col)
        if len(u_idx):
            sub = v[u_idx, h_idx].copy()
            sub[:, units.skip_col] = np.inf
            c_sparse, best_ns = c_mixed.copy(), best.copy()
            c_sparse[u_idx, h_idx] = np.argmin(sub, axis=1)
            best_ns[u_idx, h_idx] = sub[np.arange(len(u_idx)), c_sparse[u_idx, h_idx]]
        s_skip = v[:, :, units.skip_col].sum(1, dtype=np.float64) + units.fill
    else:
        s_skip = np.full(U, np.inf)
    s_sparse = best_ns.sum(1, dtype=np.float64) + units.launch
    s_dense = np.where(np.isfinite(units.dense), units.dense, np.inf)
    scores = np.stack([s_sparse, s_mixed, s_skip, s_dense], 1)
    scores[units.force_dense, :3] = np.inf
    option = np.argmin(scores, axis=1)
    if not np.isfinite(scores[np.arange(U), option]).all():
        bad = int(np.flatnonzero(~np.isfinite(scores[np.arange(U), option]))[0])
        raise ValueError(f"unit {bad}: no feasible option (every candidate unavailable and dense not allowed)")
    choice = np.where((option == 0)[:, None], c_sparse, c_mixed)
    choice = np.where((option == 2)[:, None], units.skip_col, choice)
    choice = np.where((option == 3)[:, None], -1, choice)
    return _evaluate(units, option, choice, lam)


def _gather(a: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """a[u, h, idx[u, h]] (flat indexing: much faster than take_along_axis on large arrays)."""
    U, H, C = a.shape
    return a.reshape(-1)[np.arange(U * H) * C + idx.reshape(-1)].reshape(U, H)


def _evaluate(units: Units, option: np.ndarray, choice: np.ndarray, lam: float) -> Solution:
    """Exact latency and error of a choice under the unit objective (options recomputed from it)."""
    dense = option == 3
    safe = np.where(choice < 0, 0, choice)
    c = _gather(units.cost, safe).astype(np.float64)
    e = _gather(units.err, safe).astype(np.float64)
    is_skip = (choice == units.skip_col) & (units.skip_col >= 0)
    any_skip = is_skip.any(1)
    any_comp = (~is_skip).any(1)
    cost = c.sum(1) + np.where(any_comp, units.launch, 0.0) + np.where(any_skip, units.fill, 0.0)
    cost = np.where(dense, units.dense, cost)
    err = np.where(dense, 0.0, e.sum(1))
    # The option label follows the choice (e.g. a "mixed" argmin with no skip head is "sparse").
    opt = np.where(dense, 3, np.where(any_skip & any_comp, 1, np.where(any_skip, 2, 0)))
    return Solution(opt, np.where(dense[:, None], -1, choice), cost, err, lam)


def objective(units: Units, option: np.ndarray, choice: np.ndarray, lam: float) -> float:
    """Σ latency + λ Σ error of any assignment (for brute-force checks)."""
    s = _evaluate(units, option, choice, lam)
    return s.total_cost + lam * s.total_err


@dataclass
class BudgetResult:
    solution: Solution
    lower_bound: float   # no assignment within the budget is cheaper than this
    feasible: bool
    min_err: float       # the least error any assignment reaches (λ → ∞)

    @property
    def gap(self) -> float:
        return self.solution.total_cost - self.lower_bound


def solve_budget(units: Units, budget: float, *, iters: int = 30, rtol: float = 1e-2,
                 hint: float | None = None) -> BudgetResult:
    """Least latency with Σ error ≤ budget, through λ bisection (see the module docstring).

    ``feasible`` is False when even the least-error assignment exceeds the budget; the solution is
    then that least-error assignment and ``min_err`` says what is achievable."""
    zero = solve_lagrangian(units, 0.0)
    best, lower = None, -math.inf
    if zero.total_err <= budget:
        return BudgetResult(zero, zero.total_cost, True, _min_err(units))
    # A λ large enough that error dominates every latency difference.
    span = float(np.nanmax(np.where(np.isfinite(units.cost), units.cost, 0))) * units.cost.shape[1] + \
        float(np.nanmax(np.where(np.isfinite(units.dense), units.dense, 0))) + \
        float(units.launch.max() + units.fill.max())
    finite_err = units.err[np.isfinite(units.cost)]
    nz = finite_err[finite_err > 0]
    min_step = float(nz.min()) if nz.size else 1.0
    hi = max(1.0, 4 * span / max(min_step, 1e-12))
    top = solve_lagrangian(units, hi)
    if top.total_err > budget * (1 + 1e-12):
        return BudgetResult(top, math.inf, False, top.total_err)
    best, lo = top, 0.0
    lower = max(lower, _dual(zero, 0.0, budget), _dual(top, hi, budget))

    def probe(lam: float) -> bool:
        """Solve at λ; tighten the bracket, the dual bound and the best feasible solution."""
        nonlocal best, lower, lo, hi
        s = solve_lagrangian(units, lam)
        lower = max(lower, _dual(s, lam, budget))
        if s.total_err > budget:
            lo = max(lo, lam)
            return False
        hi = lam
        if s.total_cost < best.total_cost:
            best = s
        return True

    if hint is not None and 0 < hint < hi:  # a λ that met a similar budget before: bracket around it
        for cand in (hint * 30, hint / 30):
            if 0 < cand < hi and not probe(cand):
                break
    for _ in range(iters):
        probe(math.sqrt(lo * hi) if lo > 0 else hi / 1024)
        if lo > 0 and (hi / lo < 1 + 1e-9 or budget * (1 - rtol) <= best.total_err <= budget):
            break
    return BudgetResult(best, lower, True, top.total_err)


def _dual(s: Solution, lam: float, budget: float) -> float:
    return s.total_cost + lam * (s.total_err - budget)


def _min_err(units: Units) -> float:
    return solve_lagrangian(units, 1e12).total_err if np.isfinite(units.cost).any() else 0.0


__all__ = ["BudgetResult", "OPTIONS", "Solution", "Units", "objective", "solve_budget", "solve_lagrangian"]
