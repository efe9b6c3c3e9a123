"""What the CLI tests run on: a small valid profile, a snapshot of a folder, and a CLI runner
that reports exit code and output."""

from __future__ import annotations

from pathlib import Path

import torch
from typer.testing import CliRunner

from attnsearch import Geometry, profile_tensors
from attnsearch.cli import app
from attnsearch.profiling.profile_io import Profile

GEOM = Geometry(2, 4, 8)
runner = CliRunner()


def good_profile(path: Path, steps: int = 2, layers: int = 2, heads: int = 2) -> Path:
    """A real profile of random attention (N = 64, B = 64) written to ``path``."""
    gen = torch.Generator().manual_seed(2)
    parts = []
    for step in range(steps):
        for layer in range(layers):
            q, k, v = (torch.randn(1, heads, GEOM.num_tokens, 64, generator=gen) for _ in range(3))
            parts.append(profile_tensors(q, k, v, GEOM, layer=layer, step=step, block_size=64, queries=16))
    prof = Profile.concat(parts)
    prof.model = {"name": "random", "fingerprint": "f0"}
    prof.save(path)
    return path


def tree(root: Path) -> dict[str, bytes | None]:
    """Every path under ``root`` with its content (None for folders)."""
    return {str(p.relative_to(root)): None if p.is_dir() else p.read_bytes() for p in sorted(root.rglob("*"))}


def cli(*args) -> tuple[int, str]:
    res = runner.invoke(app, [str(a) for a in args])
    if res.exception is not None and not isinstance(res.exception, SystemExit):
        raise res.exception  # a traceback is a failure of the test, shown as such
    return res.exit_code, res.output


def one_error(code: int, output: str, *, alone: bool = True) -> str:
    """The single error line of a failed command: exit 2, one ``error:`` line, no traceback, and
    (``alone``: refused before any work) nothing else printed."""
    lines = [line for line in output.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("error: ")]
    assert code == 2 and len(errors) == 1 and "Traceback" not in output, (code, output)
    if alone:
        assert len(lines) == 1, output
    return errors[0]
