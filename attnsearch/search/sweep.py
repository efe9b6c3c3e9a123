"""A density sweep: one search, and for each density cap the lowest-error plan at or below it.

    points = density_sweep("profiles/m.parquet", [0.15, 0.2, 0.3], trials=200, folder=tmp)
    [(p.max_density, p.result.plan.mean_density) for p in points]

The largest cap runs the study's ``trials``; the others choose from the same stored study (trials 0),
so every plan of a sweep comes from one set of trials and the caps compare like with like. With
``skip_unmet``, a cap no trial's plan meets (a :class:`~attnsearch.search.choose.BudgetError`) is a
point without a plan whose ``unmet`` says why, instead of an error.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from .choose import BudgetError
from .space import SearchError


@dataclass(frozen=True)
class SweepPoint:
    max_density: float
    result: Any  # OptimizeResult; None where no trial's plan meets the cap
    unmet: str | None = None

    def record(self) -> dict[str, Any]:
        """What a report keeps of the choice. ``predicted_speedup`` is the search's cost model at the
        calls' batch it was given (``predicted_batch``); ``evaluate`` prices the batch it runs (2
        under classifier-free guidance), so the two can differ for one plan."""
        res = self.result
        if res is None:
            return {"max_density": self.max_density, "unmet": self.unmet}
        return {"max_density": self.max_density, "density": res.plan.mean_density, "trial": res.trial,
                "reason": res.reason, "predicted_speedup": res.figures["speedup"],
                "predicted_batch": res.plan.search.get("settings", {}).get("batch"),
                "profile_rel_err": res.figures["rel_err"], "validation": res.plan.search.get("validation"),
                "residual_steps": list(res.plan.residual_steps) if res.plan.has_residual else None}


def density_sweep(profile, densities: Sequence[float], *, trials: int, folder: str | Path, name: str = "sweep",
                  progress: Callable[[dict[str, Any]], None] | None = None, skip_unmet: bool = False,
                  **options: Any) -> list[SweepPoint]:
    """One study (SQLite ``<folder>/<name>.db``, plans ``<folder>/<name>_<cap>.json``) of ``trials``
    trials over ``profile``, and its plan at each cap of ``densities`` (ascending). ``options``:
    further arguments of :func:`attnsearch.search.optimize` (hardware, sensitivity, validate, …);
    ``progress`` reports the trials."""
    from .study import optimize

    caps = sorted(densities, reverse=True)
    if not caps:
        raise SearchError("density sweep: give at least one density cap")
    folder = Path(folder)
    out = []
    for i, cap in enumerate(caps):
        try:
            res = optimize(profile, max_density=cap, trials=trials if i == 0 else 0,
                           storage=f"sqlite:///{folder / name}.db", out=folder / f"{name}_{cap:.3f}.json",
                           progress=progress if i == 0 else None, **options)
        except BudgetError as err:
            if not skip_unmet:
                raise
            out.append(SweepPoint(cap, None, str(err)))
            continue
        out.append(SweepPoint(cap, res))
    return out[::-1]


def distinct_plans(points: Sequence[SweepPoint]) -> list:
    """The sweep's plans, each once (two caps may choose the same trial), in cap order."""
    plans: list = []
    for p in points:
        if p.result is not None and all(abs(p.result.plan.mean_density - q.mean_density) > 1e-9 for q in plans):
            plans.append(p.result.plan)
    return plans


__all__ = ["SweepPoint", "density_sweep", "distinct_plans"]
