"""What every benchmark writes into its ``--out`` folder: ``result.json`` (the numbers, with the
environment they were measured in), ``figure.png`` and a ``README.md`` fragment naming the command,
git commit, card and torch / triton versions. All through ``atomic_io``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable

from ..atomic_io import replacing, write_text_atomic
from .timing import card_name


def _source_commit() -> str:
    """``GIT_COMMIT`` if set (a tree copied without its .git), else this checkout's HEAD, else "unknown"."""
    commit = os.environ.get("GIT_COMMIT")
    if commit:
        return commit
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


#: The commit this process runs, read when a benchmark imports this module (when it starts): a
#: commit made while a long run goes on is not the one its result names.
SOURCE_COMMIT = _source_commit()


def environment() -> dict[str, Any]:
    """Command line, git commit (:data:`SOURCE_COMMIT`), card and library versions of this process."""
    import torch

    try:
        import triton

        triton_version = triton.__version__
    except ImportError:
        triton_version = None
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    program = f"python -m {spec.name}" if spec is not None else f"python {sys.argv[0]}"
    return {"command": " ".join([program] + sys.argv[1:]),
            "commit": SOURCE_COMMIT, "card": card_name(), "torch": torch.__version__, "triton": triton_version}


def write_outputs(out: str | Path, name: str, result: dict[str, Any], draw: Callable[[Any], None],
                  summary: str = "") -> Path:
    """Write ``result`` (plus ``environment()``) as result.json, ``draw(figure)`` as figure.png and a
    README.md fragment (``name``, the environment, ``summary``) into the folder ``out``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    env = environment()
    write_text_atomic(out / "result.json", json.dumps({"environment": env, **result}, indent=1, allow_nan=False) + "\n")
    fig = plt.figure(figsize=(7, 4.5))
    draw(fig)
    with replacing(out / "figure.png", suffix=".png") as tmp:
        fig.savefig(tmp, format="png", dpi=120, bbox_inches="tight")
    plt.close(fig)
    readme = (f"## {name}\n\n    {env['command']}\n\ncommit {env['commit']}, {env['card']}, torch {env['torch']}, "
              f"triton {env['triton']}.\n\n{summary}".rstrip() + "\n")
    write_text_atomic(out / "README.md", readme)
    return out


def add_run_options(parser: Any) -> None:
    """``--device`` (default cuda when present, else cpu) and ``--figure-from RESULT`` (see
    :func:`redrawn`) on a benchmark's argparse ``parser``."""
    import torch

    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--figure-from", type=Path, default=None, metavar="RESULT",
                        help="only draw a result.json's figure")


def redrawn(args: Any, figure: Callable[[dict, Path], None]) -> bool:
    """Make ``args.out``; with ``--figure-from`` given, draw ``figure(result, out / "figure.png")``
    from that result.json and return True (the benchmark has nothing else to do), else False."""
    Path(args.out).mkdir(parents=True, exist_ok=True)
    if args.figure_from is None:
        return False
    figure(json.loads(Path(args.figure_from).read_text()), Path(args.out) / "figure.png")
    return True


__all__ = ["add_run_options", "environment", "redrawn", "write_outputs"]
