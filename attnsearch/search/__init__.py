"""Plan search: an Optuna study over knobs around an exact inner solver (one candidate per head).

    res = optimize("profiles/toy.parquet", max_error=0.05, out="plans/toy.json")
    res.plan, res.reason, res.pareto

Modules: ``space`` (profile → arrays), ``inner`` (exact Lagrangian / budgeted multiple-choice
knapsack), ``problem`` (knobs → units → assignment → plan and figures), ``validate`` (measured
model error), ``study`` (Optuna, Pareto front, the choice), ``workers`` (several worker processes
on one study: storage, claiming trials, spawning). Optuna is imported only when a search runs.
"""

from __future__ import annotations

from .space import SearchError

__all__ = ["BudgetError", "OptimizeResult", "SearchError", "optimize"]


def __getattr__(name: str):
    if name in ("BudgetError", "OptimizeResult", "optimize"):
        from . import study

        return getattr(study, name)
    raise AttributeError(f"module 'attnsearch.search' has no attribute {name!r}")
