"""What a plan is predicted to save: its attention time against cuDNN dense (the compute it keeps is
``Plan.mean_density``)."""

from __future__ import annotations

from typing import Any

from ..plan import Plan


def predicted_speedup(plan: Plan, *, head_dim: int, batch: int = 1, hardware: Any = None) -> dict[str, Any]:
    """Predicted attention time of ``plan`` against every call on cuDNN dense (``CostModel``).

    ``hardware``: a table name or path; None takes this machine's GPU's table, else the shipped
    H100 table (``hardware.note`` says which). Calls are costed as the plan was searched
    (``plan.hardware["execution"]``; none recorded: the table's default). When no table covers the
    calls (e.g. an uncalibrated head_dim, eager costs on a table without host costs), ``speedup``
    is None and ``reason`` says why.
    """
    from ..costmodel import CostModel, HardwareError

    try:
        cm = CostModel(hardware, head_dim=head_dim, batch=batch, execution=plan.hardware.get("execution"))
        sparse_ms, dense_ms = cm.plan_ms(plan), cm.dense_plan_ms(plan)
    except HardwareError as err:
        return {"speedup": None, "reason": f"no hardware table applies: {err}", "head_dim": head_dim}
    d = cm.describe()
    return {"speedup": dense_ms / sparse_ms, "attention_ms": sparse_ms, "dense_attention_ms": dense_ms,
            "hardware": {k: d[k] for k in ("device", "calibration", "note", "execution")}, "head_dim": head_dim, "batch": batch}


__all__ = ["predicted_speedup"]
