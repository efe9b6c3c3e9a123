"""One-size-fits-all masks at a plan's compute, to show what the per-head search buys.

A baseline runs ONE mask for every step, layer and head, at the mean kept-block density of the
plan it is compared with (its family parameter bisected to the closest density the block grid
allows: ``attnsearch.bench.family_params``):

* ``energy_decay``: Radial Attention's mask (a spatial band that halves with each octave of
  frame distance; with or without the frame-0 sink, whichever lands closer);
* ``window``: a spatio-temporal window, STA-like: the diagonal band |v_i − v_j| ≤ w in video
  order, i.e. the query's neighbourhood in its own frame and, once w passes a frame, the same
  region of the neighbouring frames.

A plan that reuses residuals (docs/design.md, "Residual reuse") is compared with the mask under the
same reuse: exact at the plan's exact steps, the mask's density lowered by what those steps add,
so that both compute the same share of dense attention.
"""

from __future__ import annotations

from typing import Any

from ..plan import LayerPlan, Plan, ScheduleEntry, residual_entries
from .generator import EvaluateError

#: Baseline name → pattern family.
BASELINES: dict[str, str] = {"energy_decay": "energy_decay", "window": "diagonal"}


def parse_baselines(text: str | None) -> tuple[str, ...]:
    """``"energy_decay,window"`` → ("energy_decay", "window"); EvaluateError naming an unknown one."""
    names = tuple(dict.fromkeys(n.strip() for n in (text or "").split(",") if n.strip()))
    for n in names:
        if n not in BASELINES:
            raise EvaluateError(f"--baseline: unknown baseline {n!r} (known: {', '.join(BASELINES)})")
    return names


def baseline_plan(name: str, plan: Plan, target: float | None = None) -> tuple[Plan, dict[str, Any]]:
    """The baseline ``name`` shaped like ``plan`` (steps, layers, heads, geometry, block size) at
    density ``target`` (default: the plan's mean density); returns it and what it is."""
    from ..bench import family_params

    if name not in BASELINES:
        raise EvaluateError(f"--baseline: unknown baseline {name!r} (known: {', '.join(BASELINES)})")
    target = plan.mean_density if target is None else target
    pattern = BASELINES[name]
    exact = plan.residual_steps

    def schedule_of(layer: LayerPlan) -> tuple[ScheduleEntry, ...]:
        whole = (ScheduleEntry(0, plan.num_steps, (layer,) * plan.num_layers),)
        return residual_entries(whole, exact) if exact else whole

    # the exact steps' dense calls are part of the compute to match
    exact_share = sum(e.residual for e in schedule_of(LayerPlan.dense(plan.geometry, plan.num_heads, plan.block_size))) / plan.num_steps
    if target - exact_share <= 0:
        raise EvaluateError(f"--baseline: the plan's density {target:.3f} leaves no kept blocks for a mask beside "
                            f"its exact steps {list(exact)} ({exact_share:.3f} of the compute)")
    params, _ = family_params(pattern, plan.geometry, plan.block_size, target - exact_share)
    layer = LayerPlan.single(pattern, params, plan.geometry, plan.num_heads, plan.block_size)
    schedule = schedule_of(layer)
    info = {"baseline": name, "pattern": pattern, "params": dict(layer.head_specs[0][1]), "target_density": target,
            "density": layer.density + exact_share, **({"residual_steps": list(exact)} if exact else {})}
    return Plan(plan.geometry, plan.block_size, plan.num_steps, plan.num_layers, plan.num_heads, schedule,
                model=dict(plan.model), search={"baseline": info}), info


__all__ = ["BASELINES", "baseline_plan", "parse_baselines"]
