"""The inner problem: one candidate per head, minimising predicted latency + λ · error, exactly.

A *unit* is one layer over one step range; it holds H heads with C candidates each. Costs are the
cost model's additive form (:meth:`attnsearch.costmodel.CostModel.head_work_ms`), already summed
over the unit's steps; errors are Σ rel_err² over those steps. A unit's latency is not a plain sum
of its heads, because the runtime runs a layer as a few launches, each with a fixed cost paid once
if any head needs it. Every candidate column belongs to one *class* of :data:`CLASSES`:

    "native"  computed heads in the call's dtype: one fused launch for all of them
    "fp8"     computed heads with FP8 kept blocks: their own launch and the quantization pass
    "skip"    heads that output zero: one zero fill

and the unit's latency is Σ_h cost[h, c_h] + Σ over the classes its heads use of ``fixed[class]``;
or the whole layer runs cuDNN dense (error 0). A column may also need the *reuse* item
(``Units.col_reuse``: a head that reuses a residual, docs/design.md "Residual reuse"), whose fixed
cost (``fixed[:, REUSE]``: the exact call every reusing head of the layer shares at the exact step)
is paid once if any head's column needs it. Given λ, fixing the set of classes a unit may use
makes the problem separable over heads (a per-head argmin among those classes' columns plus the
set's fixed costs), so the unit's minimum is the best of the 2^K − 1 sets and dense — exact for
this objective: the sets cover every assignment, and a set's value over-counts only assignments
that use fewer classes, which the smaller set then wins. The reuse item is one more member of the
sets (a column is open to a set holding its class, and reuse where it needs it), by the same
argument. The test suite checks both against brute force.

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

#: The fixed-cost classes of candidate columns, in tie-breaking order (bit k of an option).
CLASSES = ("native", "fp8", "skip")
#: The fixed-cost item a reusing column needs besides its class: its column of ``Units.fixed`` and
#: its bit of an option.
REUSE = len(CLASSES)
#: ``Solution.option`` of a unit run as a cuDNN dense layer (other options: the bitmask of the
#: classes its heads use).
DENSE = 0


@dataclass
class Units:
    """A batch of units (arrays; U units × H heads × C candidates).

    cost, err: [U, H, C] float (inf cost = candidate unavailable). col_class: int [C], each column's
    index into :data:`CLASSES`. fixed: [U, len(CLASSES)] the fixed cost a class adds to a unit whose
    heads use it (launches, the quantization pass, the zero fill), and with ``col_reuse`` one more
    column (:data:`REUSE`): the fixed cost of reuse. dense: [U] cuDNN cost of the whole unit (inf:
    not allowed). force_dense: [U] bool. col_reuse: bool [C] or None, the columns that also need the
    reuse item.
    """

    cost: np.ndarray
    err: np.ndarray
    col_class: np.ndarray
    fixed: np.ndarray
    dense: np.ndarray
    force_dense: np.ndarray
    col_reuse: np.ndarray | None = None

    def __post_init__(self) -> None:
        want = len(CLASSES) + (self.col_reuse is not None)
        if self.fixed.shape[1] != want:
            raise ValueError(f"fixed: {self.fixed.shape[1]} columns, want {want} (the classes"
                             + (" and reuse)" if self.col_reuse is not None else ")"))

    @property
    def needs_reuse(self) -> np.ndarray:
        """bool [C]: the columns that need the reuse item (none without ``col_reuse``)."""
        return np.zeros(self.cost.shape[2], dtype=bool) if self.col_reuse is None else np.asarray(self.col_reuse)

    @classmethod
    def native(cls, cost, err, skip_col: int, launch, fill, dense, force_dense) -> Units:
        """Units whose columns are all native except ``skip_col`` (−1: none)."""
        col_class = np.zeros(cost.shape[2], dtype=np.int64)
        if skip_col >= 0:
            col_class[skip_col] = CLASSES.index("skip")
        fixed = np.zeros((cost.shape[0], len(CLASSES)))
        fixed[:, CLASSES.index("native")] = launch
        fixed[:, CLASSES.index("skip")] = fill
        return cls(cost, err, col_class, fixed, np.asarray(dense, dtype=np.float64), np.asarray(force_dense))

    @property
    def shape(self) -> tuple[int, int, int]:
        return self.cost.shape


@dataclass
class Solution:
    """Per-unit choice: ``option`` [U] (:data:`DENSE`, or the bitmask of the classes its heads use);
    ``choice`` [U, H] candidate (−1 when the unit is dense). ``cost``/``err`` [U]: the unit's latency
    and error under the choice."""

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
    """Exact minimiser of Σ_units latency + λ · Σ error (ties: the lower class set, then the lower
    column; dense last)."""
    if not (lam >= 0 and math.isfinite(lam)):
        raise ValueError(f"lambda must be a finite number ≥ 0, got {lam!r}")
    cost, err = units.cost, units.err
    U, H, C = cost.shape
    v = cost + np.asarray(lam, dtype=cost.dtype) * err if lam else cost  # inf cost stays inf
    # Each head's best column overall; a class set then re-takes only the heads whose best lies
    # outside it (the overall argmin is also the lowest-index minimum within any set holding it).
    a_all = np.argmin(v, axis=2)
    b_all = _gather(v, a_all)
    needs = units.needs_reuse
    present = [k for k in range(len(CLASSES)) if (units.col_class == k).any()] + ([REUSE] if needs.any() else [])
    masks, scores, picks = [], [], []
    for subset in range(1, 1 << len(present)):
        items = [present[i] for i in range(len(present)) if subset >> i & 1]
        member = np.zeros(len(CLASSES) + 1, dtype=bool)
        member[items] = True
        open_col = member[units.col_class] & (member[REUSE] | ~needs)
        cols = np.flatnonzero(open_col)
        if not len(cols):                         # reuse alone: no column is open to it
            continue
        if len(cols) == 1:                        # one column (the skip set): every head takes it
            pick = np.full((U, H), cols[0])
            best = v[:, :, cols[0]]
        else:
            pick, best = a_all, b_all
            u_idx, h_idx = np.nonzero(~open_col[a_all])
            if len(u_idx):
                sub = v[u_idx, h_idx][:, cols]                                    # [heads to re-take, cols]
                a = np.argmin(sub, axis=1)
                pick, best = a_all.copy(), b_all.copy()
                pick[u_idx, h_idx] = cols[a]
                best[u_idx, h_idx] = sub[np.arange(len(u_idx)), a]
        scores.append(best.sum(1, dtype=np.float64) + units.fixed[:, items].sum(1))
        picks.append(pick)
        masks.append(subset)
    s = np.stack(scores + [np.where(np.isfinite(units.dense), units.dense, np.inf)], 1)
    s[units.force_dense, :-1] = np.inf
    option = np.argmin(s, axis=1)
    if not np.isfinite(s[np.arange(U), option]).all():
        bad = int(np.flatnonzero(~np.isfinite(s[np.arange(U), option]))[0])
        raise ValueError(f"unit {bad}: no feasible option (every candidate unavailable and dense not allowed)")
    choice = np.full((U, H), -1, dtype=np.int64)
    for j in range(len(masks)):
        sel = option == j
        choice[sel] = picks[j][sel]
    return _evaluate(units, choice, lam)


def _gather(a: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """a[u, h, idx[u, h]] (flat indexing: much faster than take_along_axis on large arrays)."""
    U, H, C = a.shape
    return a.reshape(-1)[np.arange(U * H) * C + idx.reshape(-1)].reshape(U, H)


def _evaluate(units: Units, choice: np.ndarray, lam: float) -> Solution:
    """Exact latency and error of a choice (−1: the unit is dense) under the unit objective; the
    option follows from the choice (the classes its heads use)."""
    dense = (choice < 0).all(1)
    safe = np.where(choice < 0, 0, choice)
    c = _gather(units.cost, safe).astype(np.float64)
    e = _gather(units.err, safe).astype(np.float64)
    K = units.fixed.shape[1]
    used = np.zeros((len(safe), K), dtype=bool)                   # [U, K]: classes (and reuse) its heads use
    used[np.arange(len(safe))[:, None], units.col_class[safe]] = True
    if K > len(CLASSES):
        used[:, REUSE] = units.needs_reuse[safe].any(1)
    cost = np.where(dense, units.dense, c.sum(1) + (used * units.fixed).sum(1))
    err = np.where(dense, 0.0, e.sum(1))
    option = np.where(dense, DENSE, (used * (1 << np.arange(K))).sum(1))
    return Solution(option, np.where(dense[:, None], -1, choice), cost, err, lam)


def objective(units: Units, choice: np.ndarray, lam: float) -> float:
    """Σ latency + λ Σ error of any assignment (a unit's choice all −1: dense; for brute-force checks)."""
    s = _evaluate(units, choice, lam)
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
        float(units.fixed.sum(1).max())
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


__all__ = ["CLASSES", "DENSE", "REUSE", "BudgetResult", "Solution", "Units", "objective", "solve_budget", "solve_lagrangian"]
