"""Figures of a search study: every trial in (predicted latency, error), the Pareto front, and the
trial the plan was built from."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib.pyplot as plt

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


def _points_from_json(data: dict) -> tuple[list, list, dict | None, str]:
    """An optimize result: a plan's ``search`` section (Pareto rows with trial, attention_ms, error)."""
    def point(row: dict) -> dict:
        return {"number": row.get("trial", row.get("number")), "latency_ms": row.get("attention_ms", row.get("latency_ms")),
                "error": row["error"]}

    search = data.get("search", data)
    front = [point(r) for r in search.get("pareto", [])]
    chosen = next((p for p in front if p["number"] == search.get("trial")), None)
    return front, front, chosen, search.get("study", "study")


def study_figures(source: Path | dict, out: Path) -> dict:
    """``source``: an Optuna SQLite file, an optimize-result JSON file, or a plan dict (its search)."""
    if isinstance(source, dict):
        trials, front, chosen, name = _points_from_json(source)
    elif source.read_bytes()[:15] == b"SQLite format 3":
        trials, front, chosen, name = _points_from_storage(source)
    else:
        trials, front, chosen, name = _points_from_json(json.loads(source.read_text()))
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
