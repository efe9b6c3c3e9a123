"""``benchmarks.mini_vdit_steps``: a mask run on a window of steps is dense everywhere else, and its
density is the mean over steps with a dense step counting 1."""

from __future__ import annotations

import pytest

from attnsearch import Geometry
from attnsearch.evaluate import baseline_plan
from attnsearch.plan import Plan
from benchmarks.mini_vdit_steps import windowed


@pytest.mark.parametrize("start, stop", [(0, 20), (4, 20), (0, 1), (0, 16), (19, 20)])
def test_a_window_runs_the_mask_there_and_dense_elsewhere(start, stop):
    template = Plan.dense(Geometry(16, 16, 16), 20, 6, 4, block_size=64)
    full, info = baseline_plan("energy_decay", template, 0.3)
    plan = windowed(full, start, stop)
    d = info["density"]
    assert plan.mean_density == pytest.approx(((stop - start) * d + 20 - (stop - start)) / 20)
    for step in range(20):
        lp = plan.layer_plan(step, 2)
        assert (lp.density == pytest.approx(d)) if start <= step < stop else lp.density == 1.0
