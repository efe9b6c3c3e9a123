"""``attnsearch report``: a static HTML page with PNG figures for profiles, plans, studies and
bench results. Each input file's kind is recognised from its content, not its name."""

from __future__ import annotations

import json
from pathlib import Path

ACCEPTED = "a profile (.parquet from `attnsearch profile`), a plan (attnsearch-plan JSON), " \
           "a study (the .db beside a plan, or an optimize result JSON) or a bench result (JSON from `attnsearch bench`)"


class ReportError(ValueError):
    """An input the report cannot draw; the message says which kinds it accepts."""


def detect_kind(path: Path) -> str:
    """'profile' | 'plan' | 'study' | 'bench', from the file's content."""
    path = Path(path)
    if not path.is_file():
        raise ReportError(f"{path}: no such file")
    with path.open("rb") as fh:
        head = fh.read(16)
    if head.startswith(b"PAR1"):
        return "profile"
    if head.startswith(b"SQLite format 3"):
        return "study"
    try:
        data = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise ReportError(f"{path}: not a file attnsearch can report on; accepted: {ACCEPTED}") from None
    if isinstance(data, dict):
        if data.get("format") == "attnsearch-plan":
            return "plan"
        if data.get("format") == "attnsearch-study" or "pareto" in data:
            return "study"
        from .bench_figures import bench_rows

        if data.get("format") == "attnsearch-bench" or bench_rows(data):
            return "bench"
    raise ReportError(f"{path}: JSON of unknown kind; accepted: {ACCEPTED}")


def write_report(paths: list[Path], out: Path, *, tau: float = 0.95, density_cap: float = 0.75,
                 title: str | None = None) -> Path:
    """Draw every input into ``out`` and write ``out/index.html``; returns its path."""
    from .html import render

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    sections = []
    for path in paths:
        kind = detect_kind(Path(path))
        if kind == "profile":
            from ..profiling.profile_io import Profile
            from .profile_figures import profile_figures

            sections.append(profile_figures(Profile.load(path), out, tau=tau, density_cap=density_cap))
        elif kind == "plan":
            from ..plan import load_plan
            from .plan_figures import plan_figures

            plan = load_plan(path)
            sections.append(plan_figures(plan, out))
            if plan.search.get("pareto"):
                from .study_figures import study_figures

                sections.append(study_figures(plan.to_dict(), out))
        elif kind == "study":
            from .study_figures import study_figures

            sections.append(study_figures(Path(path), out))
        else:
            from .bench_figures import bench_figures

            sections.append(bench_figures(json.loads(Path(path).read_text()), out))
    return render(title or "attnsearch report", sections, out)
