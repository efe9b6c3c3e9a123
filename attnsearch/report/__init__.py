"""``attnsearch report``: a static HTML page with PNG figures for profiles, plans, studies, bench
results, sensitivity records and hardware tables. Each input file's kind is recognised from its content, not its name."""

from __future__ import annotations

from pathlib import Path

ACCEPTED = ("a profile (.parquet from `attnsearch profile`), a plan (attnsearch-plan JSON), a study (the .db "
            "beside a plan, or an optimize result JSON), a bench result (JSON from `attnsearch bench`), a "
            "sensitivity record (JSON from `attnsearch sensitivity`) or a hardware table (JSON from "
            "`attnsearch calibrate`)")


class ReportError(ValueError):
    """An input the report cannot draw; the message says which kinds it accepts."""


def detect_kind(path: Path) -> str:
    """'profile' | 'plan' | 'study' | 'bench' | 'sensitivity' | 'hardware', from the file's content."""
    path = Path(path)
    if path.is_dir():
        raise ReportError(f"{path}: is a directory, not a file")
    if not path.is_file():
        raise ReportError(f"{path}: does not exist")
    with path.open("rb") as fh:
        head = fh.read(16)
    if head.startswith(b"PAR1"):
        return "profile"
    if head.startswith(b"SQLite format 3"):
        return "study"
    from ..jsondata import JSONDataError, read_json

    try:
        data = read_json(path)
    except JSONDataError as err:
        raise ReportError(f"{err}; accepted: {ACCEPTED}") from None
    if isinstance(data, dict):
        if data.get("format") == "attnsearch-plan":
            return "plan"
        if data.get("format") == "attnsearch-sensitivity":
            return "sensitivity"
        if data.get("format") == "attnsearch-kernels":
            return "hardware"
        if data.get("format") == "attnsearch-study" or "pareto" in data:
            return "study"
        from .bench_figures import bench_rows

        if data.get("format") == "attnsearch-bench" or bench_rows(data):
            return "bench"
    raise ReportError(f"{path}: JSON of unknown kind; accepted: {ACCEPTED}")


def write_report(paths: list[Path], out: Path, *, tau: float = 0.95, density_cap: float = 0.75,
                 title: str | None = None) -> Path:
    """Draw every input into ``out`` and write ``out/index.html``; returns its path.

    Every input is read and checked before anything is written; ``out`` must be a folder or absent
    (and is not one of the inputs). A report that fails leaves no folder it created behind."""
    import shutil

    from ..atomic_io import OutputError, check_outputs
    from .html import render

    out = Path(out)
    if out.exists() and not out.is_dir():
        raise OutputError(f"{out}: exists and is not a folder; the report is a folder (index.html + PNGs)")
    check_outputs([out / "index.html"], paths)
    loaded = [_load(Path(path)) for path in paths]
    created = None if out.exists() else out
    while created is not None and not created.parent.exists():
        created = created.parent  # the outermost folder this call makes
    try:
        out.mkdir(parents=True, exist_ok=True)
        sections = []
        for kind, path, data in loaded:
            sections.extend(_draw(kind, path, data, out, tau=tau, density_cap=density_cap))
        return render(title or "attnsearch report", sections, out)
    except BaseException:
        if created is not None:
            shutil.rmtree(created, ignore_errors=True)
        raise


def _load(path: Path):
    """(kind, path, the input read and checked) of one report input."""
    kind = detect_kind(path)
    if kind == "profile":
        from ..profiling.profile_io import Profile

        return kind, path, Profile.load(path)
    if kind == "plan":
        from ..plan import load_plan

        return kind, path, load_plan(path)
    if kind == "study":
        return kind, path, path
    if kind == "sensitivity":
        from ..search.sensitivity import Sensitivity

        return kind, path, Sensitivity.load(path)
    if kind == "hardware":
        from ..costmodel.table import load_hardware

        return kind, path, load_hardware(str(Path(path).resolve()))  # a path, never a GPU name
    from ..jsondata import check_data, read_json

    data = read_json(path, "bench result")
    check_data(data)
    return kind, path, data


def _draw(kind: str, path: Path, data, out: Path, *, tau: float, density_cap: float) -> list:
    if kind == "profile":
        from .profile_figures import profile_figures

        return [profile_figures(data, out, tau=tau, density_cap=density_cap)]
    if kind == "plan":
        from .plan_figures import plan_figures

        sections = [plan_figures(data, out)]
        if data.search.get("pareto"):
            from .study_figures import study_figures

            sections.append(study_figures(data.to_dict(), out, source_name=str(path)))
        return sections
    if kind == "study":
        from .study_figures import study_figures

        return [study_figures(data, out)]
    if kind == "sensitivity":
        from .sensitivity_figures import sensitivity_figures

        return [sensitivity_figures(data, out)]
    if kind == "hardware":
        from .hardware_figures import hardware_figures

        return [hardware_figures(data, out)]
    from .bench_figures import bench_figures

    return [bench_figures(data, out)]
