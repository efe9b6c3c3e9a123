"""``bench_plan`` on a plan with residual entries: what reuse adds is timed as apply runs it and
counted in the whole plan's time (docs/design.md, "Residual reuse")."""

from __future__ import annotations

import pytest
import torch

from attnsearch import Geometry
from attnsearch.bench import bench_plan
from attnsearch.costmodel import CostModel
from attnsearch.plan import LayerPlan, Plan, ScheduleEntry

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="timing: needs CUDA")]

GEOM = Geometry(frames=8, height=16, width=16)   # 2,048 tokens


def test_residual_reuse_is_timed_and_counted_in_the_whole_plan():
    mixed = LayerPlan.from_heads([("diagonal", {"rows": 2.0})] * 3 + [("dense", {})], GEOM, 128)
    every = LayerPlan.single("diagonal", {"rows": 4.0}, GEOM, 4, 128)
    plan = Plan(GEOM, 128, 6, 2, 4, (ScheduleEntry(0, 6, (mixed, every)),)).with_residual([0, 3])
    assert [(e.start, e.stop, e.residual) for e in plan.schedule] == [(0, 3, True), (3, 6, True)]
    result = bench_plan(plan, head_dim=64, reps=5, flex=False, cost=CostModel(None, head_dim=64))
    r = result["residual"]
    assert r["exact_steps"] == [0, 3]
    rows = {row["reuse_heads"]: row for row in r["rows"]}
    assert sorted(rows) == [3, 4]                       # the mixed layer's 3 sparse heads; all 4 of the other
    for row in rows.values():
        assert (row["exact_calls"], row["later_calls"]) == (2, 4)   # per layer: 2 entries, 2 later steps each
        assert row["exact_step_ms"] > row["later_step_ms"] > 0      # a dense call beside a pass, against a pass
        assert row["predicted_exact_step_ms"] > row["predicted_later_step_ms"] > 0
    assert r["total_ms"] == pytest.approx(sum(row["exact_calls"] * row["exact_step_ms"]
                                              + row["later_calls"] * row["later_step_ms"] for row in rows.values()))
    layers = sum(lp["sparse_ms"] * lp["calls"] for lp in result["layer_plans"])
    assert result["sparse_total_ms"] == pytest.approx(layers + r["total_ms"])
    assert result["speedup_vs_cudnn"] == pytest.approx(result["dense_total_ms"] / result["sparse_total_ms"])
