"""Figures of a search study: every trial in (predicted latency, error), the Pareto front, and the
trial the plan was built from."""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib.pyplot as plt

from ..jsondata import read_json
from .style import FAMILY_COLORS, save_figure


def _points_from_storage(path: Path) -> tuple[list, list, dict | None, str]:
    import optuna  # a study file only exists where optimize ran, so optuna is installed

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    url = f"sqlite:///{path}"
    summaries = optuna.get_all_study_summaries(url)
    if not summaries:
        raise ValueError(f"{path}: the SQLite file holds no Optuna study")
    study = optuna.load_study(study_name=summaries[-1].study_name, storage=url)
    done = [t for t in study.trials if t.values is not None and len(t.values) == 2]
    pareto = {t.number for t in study.best_trials}
    trials = [{"number": t.number, "latency_ms": t.values[0], "error": t.values[1]} for t in done]
    front = [p for p in trials if p["number"] in pareto]
    chosen_no = study.user_attrs.get("chosen_trial")
    chosen = next((p for p in trials if p["number"] == chosen_no), None)
    return trials, front, chosen, study.study_name


def _points_from_json(data, source: str = "plan") -> tuple[list, list, dict | None, str]:
    """An optimize result: a plan's ``search`` section (Pareto rows with trial, attention_ms, error).
    A row without finite numbers there is a ReportError naming ``search.pareto[i]``."""
    from . import ReportError

    search = data.get("search", data) if isinstance(data, dict) else data
    pareto = search.get("pareto", []) if isinstance(search, dict) else None
    if not isinstance(pareto, list):
        raise ReportError(f"{source}: search.pareto must be a list of trials")

    def number(row: dict, i: int, *keys: str) -> float:
        value = next((row[k] for k in keys if k in row), None)
        if not (isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)):
            raise ReportError(f"{source}: search.pareto[{i}].{keys[0]} must be a finite number, got {value!r}")
        return value

    front = []
    for i, row in enumerate(pareto):
        if not isinstance(row, dict):
            raise ReportError(f"{source}: search.pareto[{i}] must be an object")
        front.append({"number": number(row, i, "trial", "number"),
                      "latency_ms": number(row, i, "attention_ms", "latency_ms"), "error": number(row, i, "error")})
    chosen = next((p for p in front if p["number"] == search.get("trial")), None)
    return front, front, chosen, str(search.get("study", "study"))


def study_figures(source: Path | dict, out: Path, *, source_name: str = "plan") -> dict:
    """``source``: an Optuna SQLite file, an optimize-result JSON file, or a plan dict (its search,
    ``source_name`` naming it in errors)."""
    if isinstance(source, dict):
        trials, front, chosen, name = _points_from_json(source, source_name)
    elif source.read_bytes()[:15] == b"SQLite format 3":
        trials, front, chosen, name = _points_from_storage(source)
    else:
        trials, front, chosen, name = _points_from_json(read_json(source, "study result"), str(source))
    fig, ax = plt.subplots(figsize=(6, 4.2))
    ax.scatter([t["latency_ms"] for t in trials], [t["error"] for t in trials], s=10, color="#bbbbbb",
               label=f"{len(trials)} trials")
    front = sorted(front, key=lambda t: t["latency_ms"])
    ax.plot([t["latency_ms"] for t in front], [t["error"] for t in front], "o-", ms=4,
            color=FAMILY_COLORS["diagonal"], label=f"Pareto front ({len(front)})")
    if chosen:
        ax.scatter([chosen["latency_ms"]], [chosen["error"]], s=120, marker="*", color="#d62728", zorder=4,
                   label=f"chosen (trial {chosen.get('number', '?')})")
    ax.set_xlabel("predicted attention latency (ms, whole plan)")
    ax.set_ylabel("error objective")
    ax.set_title(f"study {name}", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    target = out / "study_pareto.png"
    save_figure(fig, target)
    summary = f"{len(trials)} trials, {len(front)} on the Pareto front"
    if chosen:
        summary += f"; chosen trial {chosen.get('number', '?')}: {chosen['latency_ms']:.2f} ms, error {chosen['error']:.3g}"
    return {"title": "Search study", "summary": summary, "figures": [("Pareto front", target)]}
