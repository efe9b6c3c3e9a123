"""``python -m benchmarks.wan_ulysses --dry-run`` on the CPU (run as ``-m`` runs it, in this process):
degree 1 in a one-process gloo group, dense and sparse, eager and compiled, with the per-rank balance
of every plan."""

from __future__ import annotations

import json
import runpy
import socket
import sys

import pytest


@pytest.mark.slow
def test_dry_run_at_degree_one(tmp_path, monkeypatch):
    pytest.importorskip("diffusers")
    import torch.distributed as dist

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    for key, value in dict(RANK="0", WORLD_SIZE="1", MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port)).items():
        monkeypatch.setenv(key, value)
    monkeypatch.setattr(sys, "argv", ["-m", "--dry-run", "--density", "0.3", "--out", str(tmp_path)])
    monkeypatch.delitem(sys.modules, "benchmarks.wan_ulysses", raising=False)  # run afresh, as __main__
    runpy.run_module("benchmarks.wan_ulysses", run_name="__main__", alter_sys=True)
    assert not dist.is_initialized()  # the group of one is torn down
    result = json.loads((tmp_path / "result.json").read_text())
    assert "python -m benchmarks.wan_ulysses --dry-run" in (tmp_path / "README.md").read_text()
    rows = result["rows"]
    assert {(r["attention"], r["mode"]) for r in rows} == {(a, m) for a in ("dense", "sparse")
                                                           for m in ("eager", "compile")}
    assert all(r["degree"] == 1 and r["ms"] > 0 and r["finite"] for r in rows)
    sparse = [r for r in rows if r["attention"] == "sparse"]
    assert all(r["rank_balance_max_over_mean"] == 1.0 and len(r["kept_blocks_per_rank"]) == 1 for r in sparse)
