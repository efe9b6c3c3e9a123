"""``attnsearch info``: versions, device, cost-model table and the backend of every kind of call,
printed and as JSON; a bad option is one line, exit 2, and writes nothing."""

from __future__ import annotations

import json

import torch

from cli_inputs import cli, one_error


def test_info_states_what_runs_here(tmp_path):
    code, out = cli("info", "--json", tmp_path / "info.json")
    assert code == 0, out
    data = json.loads((tmp_path / "info.json").read_text())
    assert data["versions"]["torch"] == torch.__version__
    assert data["device"]["type"] == ("cuda" if torch.cuda.is_available() else "cpu")
    assert len(data["calls"]) == 8 and all(c["backend"] for c in data["calls"])
    assert f"torch {torch.__version__}" in out
    assert out.count("│ native") + out.count("│ fp8") == 8  # one table row per kind of call
    assert "cost model" in out and (data["hardware"].get("note") or data["hardware"].get("error"))


def test_a_bad_dtype_is_one_line_and_writes_nothing(tmp_path):
    code, out = cli("info", "--dtype", "int8", "--json", tmp_path / "info.json")
    assert "--dtype" in one_error(code, out)
    assert not (tmp_path / "info.json").exists()
