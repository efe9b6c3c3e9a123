"""``benchmarks.mini_vdit_sampler_steps``: the plans it compares run exact at the named steps of the
named sampler, and a global mask beside them keeps the total density, exact steps counted."""

from __future__ import annotations

import pytest

from attnsearch.evaluate import EvaluateError
from attnsearch.evaluate.baselines import baseline_plan
from attnsearch.geometry import Geometry
from benchmarks.mini_vdit_sampler_steps import carrier, parse_exact

GEOMETRY = Geometry(frames=8, height=16, width=16)   # 2,048 tokens, 32 blocks of 64


def test_parse_exact_reads_steps_and_set():
    assert parse_exact("50:0,1,3,6") == (50, (0, 1, 3, 6))
    with pytest.raises(ValueError):
        parse_exact("50:0,a")


@pytest.mark.parametrize("steps, exact", [(20, (0, 2, 5, 10)), (50, (0, 1, 3, 6, 10, 16, 24, 34)),
                                          (50, (0, 1, 2, 3, 5, 7, 10, 14, 19, 25, 32, 40, 49))])
def test_a_mask_beside_the_exact_steps_keeps_the_total_density(steps, exact):
    base = carrier(GEOMETRY, steps, 3, 2, 64, exact, {"name": "m"})
    # an exact step reuses only where its span holds two steps or more: the next exact step (or the end) ≥ 2 away
    spans = [s for s, nxt in zip(exact, (*exact[1:], steps)) if nxt - s >= 2]
    assert base.num_steps == steps and list(base.residual_steps) == spans
    plan, info = baseline_plan("window", base, 0.3)
    assert list(plan.residual_steps) == spans and info["residual_steps"] == spans
    mask_density = plan.schedule[-1].layers[0].density
    # every step computes the mask; each reusing exact step adds a dense call beside it
    assert info["density"] == pytest.approx(mask_density + len(spans) / steps)
    assert abs(info["density"] - 0.3) < 0.05


def test_exact_steps_that_exceed_the_density_are_refused():
    base = carrier(GEOMETRY, 50, 3, 2, 64, tuple(range(0, 48, 3)), {"name": "m"})   # 16 exact: 0.32
    with pytest.raises(EvaluateError, match="leaves no kept blocks"):
        baseline_plan("energy_decay", base, 0.3)
