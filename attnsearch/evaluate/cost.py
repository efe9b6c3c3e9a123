"""What a plan costs: its attention compute (mean kept-block density) and predicted speedup."""

from __future__ import annotations

from typing import Any

from ..plan import Plan


def plan_density(plan: Plan) -> float:
    """Kept blocks / all blocks, averaged over every (step, layer, head) of ``plan``; dense steps
    count 1. The fraction of dense attention FLOPs the plan computes."""
    total = 0.0
    for e in plan.schedule:
        layers = 1.0 * plan.num_layers if e.layers is None else sum(lp.density for lp in e.layers)
        total += (e.stop - e.start) * layers
    return total / (plan.num_steps * plan.num_layers)


def predicted_speedup(plan: Plan, *, head_dim: int, batch: int = 1, hardware: Any = None) -> dict[str, Any]:
    """Predicted attention time of ``plan`` against every call on cuDNN dense (``CostModel``).

    ``hardware``: a table name or path; None takes this machine's GPU's table, else the shipped
    H100 table (``hardware.note`` says which). When no table covers the calls (e.g. an
    uncalibrated head_dim), ``speedup`` is None and ``reason`` says why.
    """
    from ..costmodel import CostModel, HardwareError

    try:
        cm = CostModel(hardware, head_dim=head_dim, batch=batch)
        sparse_ms, dense_ms = cm.plan_ms(plan), cm.dense_plan_ms(plan)
    except HardwareError as err:
        return {"speedup": None, "reason": f"no hardware table applies: {err}", "head_dim": head_dim}
    d = cm.describe()
    return {"speedup": dense_ms / sparse_ms, "attention_ms": sparse_ms, "dense_attention_ms": dense_ms,
            "hardware": {k: d[k] for k in ("device", "calibration", "note")}, "head_dim": head_dim, "batch": batch}


__all__ = ["plan_density", "predicted_speedup"]
