"""A plan's predicted attention speedup in an evaluation: from the named hardware table, or None
with the reason when no table covers the calls."""

from __future__ import annotations

import pytest

from attnsearch import Geometry
from attnsearch.evaluate import predicted_speedup
from attnsearch.plan import LayerPlan, Plan, ScheduleEntry

GEOM = Geometry(16, 16, 16)


def band(rows: float) -> Plan:
    lp = LayerPlan.single("diagonal", {"rows": rows}, GEOM, 4, 128)
    return Plan(GEOM, 128, 4, 6, 4, (ScheduleEntry(0, 1, None), ScheduleEntry(1, 4, (lp,) * 6)))


def test_speedup_names_its_table_and_grows_as_density_falls():
    narrow = predicted_speedup(band(4.0), head_dim=64, batch=2, hardware="nvidia-h100-80gb-hbm3")
    wide = predicted_speedup(band(64.0), head_dim=64, batch=2, hardware="nvidia-h100-80gb-hbm3")
    assert "H100" in narrow["hardware"]["device"] and narrow["hardware"]["calibration"]
    assert narrow["speedup"] == pytest.approx(narrow["dense_attention_ms"] / narrow["attention_ms"])
    assert narrow["speedup"] > wide["speedup"] > 0 and narrow["batch"] == 2 and narrow["head_dim"] == 64


def test_no_table_for_the_calls_gives_a_reason_instead_of_a_number():
    got = predicted_speedup(band(4.0), head_dim=16, hardware="nvidia-h100-80gb-hbm3")
    assert got["speedup"] is None and "no hardware table applies" in got["reason"] and "head_dim 16" in got["reason"]
