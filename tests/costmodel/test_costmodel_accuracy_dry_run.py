"""``python -m benchmarks.costmodel_accuracy --dry-run`` on the CPU (run as ``-m`` runs it, in this
process): the held-out layers cover what the search emits (skip heads, 3-key-block stripes, both Wan
shapes) and each gets a prediction."""

from __future__ import annotations

import json
import runpy
import sys


def test_dry_run_predicts_every_held_out_layer(tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["-m", "--dry-run", "--count", "2", "--out", str(tmp_path)])
    monkeypatch.delitem(sys.modules, "benchmarks.costmodel_accuracy", raising=False)  # run afresh, as __main__
    runpy.run_module("benchmarks.costmodel_accuracy", run_name="__main__", alter_sys=True)
    result = json.loads((tmp_path / "result.json").read_text())
    assert (tmp_path / "figure.png").stat().st_size > 0
    assert "python -m benchmarks.costmodel_accuracy --dry-run" in (tmp_path / "README.md").read_text()
    layers = [r for r in result["layers"] if r["kind"] == "sparse"]
    assert {r["label"].split(" #")[0] for r in layers} == {"held-out 12×32760", "held-out 40×75600"}
    assert any(r["skip_heads"] for r in layers) and any(not r["skip_heads"] for r in layers)
    assert any("vertical_stripe" in r["families"] for r in layers)
    assert all(r["predicted_ms"] > 0 and r["measured_ms"] is None for r in result["layers"])
    assert result["summary"]["measured"] == 0


def test_held_out_stripes_keep_three_key_blocks():
    from benchmarks.costmodel_accuracy import heldout_specs

    stripes = [params for s in heldout_specs(2) if s["kind"] == "sparse"
               for pattern, params in s["layer"] if pattern == "vertical_stripe"]
    assert stripes and all(len(p["key_blocks"]) == 3 for p in stripes)
