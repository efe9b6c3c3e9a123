"""``python -m benchmarks.wan_e2e --tiny`` on the CPU (run as ``-m`` runs it, in this process): one
block of the tiny Wan, one plan run native and with its kept blocks in FP8; every self-attention
call of both forwards runs the plan, FP8 moves the output a little further from dense than native
does, and the times of the block subset are also stated scaled to the whole model."""

from __future__ import annotations

import json
import runpy
import sys

import pytest


@pytest.mark.slow
def test_dry_run_of_a_block_subset_in_both_precisions(tmp_path, monkeypatch):
    pytest.importorskip("diffusers")
    monkeypatch.setattr(sys, "argv", ["-m", "--tiny", "--layers", "1", "--precision", "native", "fp8",
                                      "--density", "0.3", "--warmup", "1", "--reps", "1", "--out", str(tmp_path)])
    monkeypatch.delitem(sys.modules, "benchmarks.wan_e2e", raising=False)  # run afresh, as __main__
    runpy.run_module("benchmarks.wan_e2e", run_name="__main__", alter_sys=True)  # a failed run exits
    result = json.loads((tmp_path / "result.json").read_text())
    assert (tmp_path / "figure.png").stat().st_size > 0
    assert result["layers"] == {"run": 1, "model": 2, "time_scale": 2.0}
    assert result["dense_forward_scaled_ms"] == pytest.approx(2 * result["dense_forward_median_ms"])
    native, fp8 = result["runs"]
    assert (native["precision"], fp8["precision"]) == ("native", "fp8")
    assert native["density"] == fp8["density"] and 0 < native["density"] < 1
    for run in (native, fp8):
        assert run["apply_stats_one_forward"] == {"calls": 1, "sparse": 1, "dense": 0, "fallbacks": {}, "residual_peak_bytes": 0}
        assert run["outputs_finite"] and run["sparse_forward_scaled_ms"] == pytest.approx(
            2 * run["sparse_forward_ms"]["median"])
    # The plan drops blocks (native differs from dense); FP8 rounding adds a little on top of that.
    assert native["output_rel_l2_sparse_vs_dense"] > 1e-3
    assert native["output_rel_l2_sparse_vs_dense"] < fp8["output_rel_l2_sparse_vs_dense"] \
        < 1.5 * native["output_rel_l2_sparse_vs_dense"]
    table = (tmp_path / "README.md").read_text()
    assert "tiny Wan transformer (1 of 2 blocks)" in table and "| fp8 |" in table
