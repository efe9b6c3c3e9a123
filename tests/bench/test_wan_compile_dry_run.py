"""``python -m benchmarks.wan_compile --dry-run`` on the CPU (run as ``-m`` runs it, in this process):
the tiny Wan runs eager and compiled, dense and sparse in both precisions; the compiled forward gives
the eager forward's output, the plan changes it, and FP8 kept blocks change it again."""

from __future__ import annotations

import json
import runpy
import sys

import pytest


@pytest.mark.slow
def test_dry_run_compiles_dense_and_sparse_and_matches_eager(tmp_path, monkeypatch):
    pytest.importorskip("diffusers")
    monkeypatch.setattr(sys, "argv", ["-m", "--dry-run", "--reps", "1", "--precision", "native", "fp8", "--out", str(tmp_path)])
    monkeypatch.delitem(sys.modules, "benchmarks.wan_compile", raising=False)  # run afresh, as __main__
    runpy.run_module("benchmarks.wan_compile", run_name="__main__", alter_sys=True)  # a failed run exits
    result = json.loads((tmp_path / "result.json").read_text())
    assert (tmp_path / "figure.png").stat().st_size > 0
    assert "python -m benchmarks.wan_compile --dry-run" in (tmp_path / "README.md").read_text()
    assert result["modes"] == ["eager", "compile"]
    dense, sparse, fp8 = result["rows"]
    assert dense["attention"] == "dense" and sparse["attention"] == "sparse" and 0 < sparse["density"] < 1
    assert (sparse["precision"], fp8["precision"], fp8["density"]) == ("native", "fp8", sparse["density"])
    for row in (dense, sparse, fp8):
        for mode in ("eager", "compile"):
            entry = row["modes"][mode]
            assert entry["ms"] > 0 and entry["finite"]
        # FP8: an input the compiler's fusions move by an ulp can round to the neighbouring e4m3 value.
        assert row["modes"]["compile"]["rel_l2_vs_eager"] < (1e-3 if row is fp8 else 1e-5)
    assert sparse["modes"]["eager"]["rel_l2_vs_dense"] > 1e-3
    assert fp8["modes"]["eager"]["rel_l2_vs_dense"] != sparse["modes"]["eager"]["rel_l2_vs_dense"]
    assert f"speedup_{fp8['density']:.3f}_fp8_over_dense_compile" in result["checks"]
    assert set(result["checks"]) >= {"sparse_compile_over_eager", "compiled_ratio_at_least_eager_ratio"}
