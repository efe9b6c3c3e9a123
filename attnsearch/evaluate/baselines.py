"""One-size-fits-all masks at a plan's compute, to show what the per-head search buys.

A baseline runs ONE mask for every step, layer and head, at the mean kept-block density of the
plan it is compared with (its family parameter bisected to the closest density the block grid
allows: ``attnsearch.bench.family_params``):

* ``energy_decay``: Radial Attention's mask (a spatial band that halves with each octave of
  frame distance; with or without the frame-0 sink, whichever lands closer);
* ``window``: a spatio-temporal window, STA-like: the diagonal band |v_i − v_j| ≤ w in video
  order, i.e. the query's neighbourhood in its own frame and, once w passes a frame, the same
  region of the neighbouring frames.
"""

from __future__ import annotations

from typing import Any

from ..plan import LayerPlan, Plan, ScheduleEntry
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
    params, _ = family_params(pattern, plan.geometry, plan.block_size, target)
    layer = LayerPlan.single(pattern, params, plan.geometry, plan.num_heads, plan.block_size)
    info = {"baseline": name, "pattern": pattern, "params": dict(layer.head_specs[0][1]), "target_density": target,
            "density": layer.density}
    out = Plan(plan.geometry, plan.block_size, plan.num_steps, plan.num_layers, plan.num_heads,
               (ScheduleEntry(0, plan.num_steps, (layer,) * plan.num_layers),), model=dict(plan.model),
               search={"baseline": info})
    return out, info


__all__ = ["BASELINES", "baseline_plan", "parse_baselines"]
