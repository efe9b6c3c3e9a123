"""density_sweep: one study serves every cap; a cap no plan meets is an error or, asked, a point without a plan."""

from __future__ import annotations

import pytest

from attnsearch.costmodel.table import DEFAULT_TABLE
from attnsearch.search.choose import BudgetError
from attnsearch.search.sweep import density_sweep, distinct_plans

import synthetic


def test_every_cap_chooses_from_one_study_and_unmet_caps_are_named_when_asked(tmp_path):
    path, _ = synthetic.small_profile(tmp_path)
    points = density_sweep(path, [1.0, 1e-6], trials=6, folder=tmp_path, hardware=DEFAULT_TABLE, head_dim=64,
                           skip_unmet=True)
    assert [p.max_density for p in points] == [1e-6, 1.0]
    assert points[0].result is None and "no trial's plan keeps at most 1e-06" in points[0].unmet
    assert points[0].record() == {"max_density": 1e-6, "unmet": points[0].unmet}
    for p in points[1:]:
        assert p.result.plan.mean_density <= p.max_density
        assert p.record()["predicted_batch"] == 1  # the search's default: the batch its speedup prices
        assert p.result.plan.search["settings"]["trials_total"] == 6  # the largest cap ran the trials
    assert distinct_plans(points) == [points[1].result.plan]
    batch2 = density_sweep(path, [1.0], trials=2, folder=tmp_path, name="b2", hardware=DEFAULT_TABLE, head_dim=64,
                           batch=2)
    assert batch2[0].record()["predicted_batch"] == 2
    with pytest.raises(BudgetError, match="1e-06"):
        density_sweep(path, [1e-6], trials=0, folder=tmp_path, hardware=DEFAULT_TABLE, head_dim=64)
