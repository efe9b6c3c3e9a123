"""``python -m benchmarks.wan_ulysses --dry-run`` on the CPU: degree 1 in a one-process gloo group,
dense and sparse, eager and compiled, with the per-rank balance of every plan."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_dry_run_at_degree_one(tmp_path):
    pytest.importorskip("diffusers")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    subprocess.run([sys.executable, "-m", "benchmarks.wan_ulysses", "--dry-run", "--density", "0.3", "--out",
                    str(tmp_path)], cwd=ROOT, check=True, capture_output=True, text=True,
                   env={**env, "MASTER_PORT": str(port)})
    result = json.loads((tmp_path / "result.json").read_text())
    assert "python -m benchmarks.wan_ulysses --dry-run" in (tmp_path / "README.md").read_text()
    rows = result["rows"]
    assert {(r["attention"], r["mode"]) for r in rows} == {(a, m) for a in ("dense", "sparse")
                                                           for m in ("eager", "compile")}
    assert all(r["degree"] == 1 and r["ms"] > 0 and r["finite"] for r in rows)
    sparse = [r for r in rows if r["attention"] == "sparse"]
    assert all(r["rank_balance_max_over_mean"] == 1.0 and len(r["kept_blocks_per_rank"]) == 1 for r in sparse)
