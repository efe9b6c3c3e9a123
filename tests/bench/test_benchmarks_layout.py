"""The benchmark scripts: each runs as ``python -m benchmarks.NAME --out DIR``, imports only the
package (never another script, never by editing the import path) and writes through ``bench.output``."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
SCRIPTS = sorted(p.stem for p in BENCHMARKS.glob("*.py") if p.stem != "__init__")


def test_the_surviving_benchmarks():
    assert SCRIPTS == ["costmodel_accuracy", "dense_layers", "fp8_layers", "hopper_probe", "host_dispatch", "mini_vdit_blocks", "mini_vdit_fidelity",
                       "mini_vdit_fp8", "mini_vdit_residual", "mini_vdit_reuse_forms", "mini_vdit_sampler_steps", "mini_vdit_sensitivity", "mini_vdit_steps", "mini_vdit_weighted", "profile_cost", "retarget_fidelity",
                       "runtime_sweep", "search_speed", "wan_compile", "wan_e2e", "wan_ulysses"]


@pytest.mark.parametrize("name", SCRIPTS)
def test_script_imports_only_the_package_and_writes_its_outputs(name):
    tree = ast.parse((BENCHMARKS / f"{name}.py").read_text())
    imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    imported |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    assert not any(m.split(".")[0] == "benchmarks" or m in SCRIPTS for m in imported), imported
    assert not any(isinstance(n, ast.Attribute) and n.attr == "path" and isinstance(n.value, ast.Name)
                   and n.value.id == "sys" for n in ast.walk(tree))  # no import-path edits
    # Timing benchmarks write through bench.output; the fidelity benchmark through evaluate's pages
    # and bench.output's environment.
    assert "attnsearch.bench.output" in imported and ("attnsearch.evaluate" in imported or name != "mini_vdit_fidelity")
    module = importlib.import_module(f"benchmarks.{name}")
    assert callable(module.main)
    assert '"--out"' in (BENCHMARKS / f"{name}.py").read_text()
