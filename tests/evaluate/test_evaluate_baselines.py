"""Global-mask baselines: one mask for every step, layer and head, at the plan's mean density."""

from __future__ import annotations

import numpy as np
import pytest

from attnsearch import Geometry, block_mask
from attnsearch.evaluate import BASELINES, EvaluateError, baseline_plan, parse_baselines
from attnsearch.plan import LayerPlan, Plan, ScheduleEntry

GEOM = Geometry(16, 16, 16)          # mini-vdit's clip: 16 frames × 16 × 16 tokens = 4,096
BLOCK = 64


def searched_like() -> Plan:
    """A plan with a dense warm-up step and heads of several families (densities differ)."""
    heads = [("diagonal", {"rows": 2.0}), ("energy_decay", {"decay": 0.25}), ("dense", {}),
             ("multi_diagonal", {"rows": 1.0, "frames": 2})]
    lp = LayerPlan.from_heads(heads, GEOM, BLOCK)
    return Plan(GEOM, BLOCK, 5, 3, 4, (ScheduleEntry(0, 1, None), ScheduleEntry(1, 5, (lp,) * 3)))


def reference_density(plan: Plan) -> float:
    """Mean over every (step, layer, head) of the head's kept-block fraction, from the masks."""
    values = []
    for step in range(plan.num_steps):
        for layer in range(plan.num_layers):
            values += plan.layer_plan(step, layer).block_masks().flatten(1).float().mean(1).tolist()
    return float(np.mean(values))


def test_mean_density_counts_dense_steps_and_every_head():
    plan = searched_like()
    assert plan.mean_density == pytest.approx(reference_density(plan), abs=1e-12)
    assert (Plan.dense(GEOM, 3, 2, 4, BLOCK)).mean_density == 1.0


@pytest.mark.parametrize("target", [0.15, 0.2, 0.3])
@pytest.mark.parametrize("name", list(BASELINES))
def test_baseline_hits_the_target_density_with_one_mask_everywhere(name, target):
    plan = searched_like()
    base, info = baseline_plan(name, plan, target)
    assert (base.num_steps, base.num_layers, base.num_heads, base.geometry, base.block_size) == \
        (plan.num_steps, plan.num_layers, plan.num_heads, plan.geometry, plan.block_size)
    masks = {base.layer_plan(s, layer).block_masks()[h].numpy().tobytes()
             for s in range(base.num_steps) for layer in range(base.num_layers) for h in range(base.num_heads)}
    assert len(masks) == 1                                                    # one global mask
    assert base.mean_density == pytest.approx(info["density"]) == pytest.approx(reference_density(base))
    assert abs(info["density"] - target) < 0.03
    # Nothing of the family lands closer: scan its parameter finely (an independent search).
    pattern = BASELINES[name]
    if pattern == "diagonal":
        grid = [{"rows": r} for r in np.arange(0, GEOM.frames * GEOM.height + 0.01, 0.25)]
    else:
        grid = [{"decay": d, "sink": s} for d in np.linspace(1e-3, 1.0, 150) for s in (False, True)]
    best = min(abs(block_mask(pattern, p, GEOM, BLOCK).float().mean().item() - target) for p in grid)
    assert abs(info["density"] - target) <= best + 1e-9


def test_default_target_is_the_plans_mean_density():
    plan = searched_like()
    _, info = baseline_plan("window", plan)
    assert info["target_density"] == pytest.approx(plan.mean_density)


def test_parse_baselines():
    assert parse_baselines("energy_decay, window,energy_decay") == ("energy_decay", "window")
    assert parse_baselines(None) == () and parse_baselines("") == ()
    with pytest.raises(EvaluateError, match=r"--baseline: unknown baseline 'sta' \(known: energy_decay, window\)"):
        parse_baselines("window,sta")
