"""The output folder of an evaluation: ``evaluation.json``, figures per video, ``index.html``.

    out/evaluation.json                     the result (strict JSON)
    out/quality_vs_density.png              when several plans were evaluated
    out/video_<seed>/frames.png             rows dense / plans / baselines, columns frames
    out/video_<seed>/<k>_<run>.gif          dense and run k side by side, animated
    out/video_<seed>/difference.png         |run − dense| per frame
    out/video_<seed>/psnr_per_frame.png
    out/index.html                          a self-contained page linking all of it
"""

from __future__ import annotations

import html
import math
import re
from pathlib import Path
from typing import Any

from ..atomic_io import write_text_atomic
from . import figures
from .evaluation import EvaluationResult

CSS = ("body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1200px;color:#222;padding:0 1em}"
       "table{border-collapse:collapse;font-size:.85em}td,th{border:1px solid #ddd;padding:.2em .5em;text-align:right}"
       "th:first-child,td:first-child{text-align:left}img{max-width:100%;border:1px solid #eee}"
       "figure{margin:1em 0;display:inline-block;vertical-align:top}figcaption{font-size:.85em;color:#555}")


def slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_") or "run"


def _num(value: Any, fmt: str) -> str:
    if value is None:
        return "–"
    if isinstance(value, float) and math.isinf(value):
        return "∞ (identical)"
    return format(value, fmt)


def _summary_table(result: EvaluationResult) -> str:
    reuse = any(r.plan.has_residual for r in result.runs)
    head = ("run", "density", "predicted speedup", "mean PSNR (dB)", "worst PSNR (dB)", "mean SSIM",
            "latent rel L2") + ((f"residual reuse: exact steps, peak MiB ({result.residual_precision})",) if reuse else ())
    rows = []
    for r in result.runs:
        o, p = r.overall, r.predicted
        speed = _num(p.get("speedup"), ".2f") + ("×" if p.get("speedup") else "")
        row = (r.label, _num(r.density, ".3f"), speed, _num(o["psnr_db"], ".2f"), _num(o["psnr_db_min"], ".2f"),
               _num(o["ssim"], ".4f"), _num(o["rel_l2_latents"], ".4f"))
        if reuse:
            steps = ", ".join(map(str, r.plan.residual_steps))
            row += (f"{steps}; {r.residual_peak_bytes / 2**20:,.1f}" if steps else "–",)
        rows.append(row)
    cells = "".join(f"<th>{html.escape(h)}</th>" for h in head)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><tr>{cells}</tr>{body}</table>"


def _hardware_note(result: EvaluationResult) -> str:
    notes = {r.predicted.get("reason") or (r.predicted.get("hardware") or {}).get("note") for r in result.runs}
    return "; ".join(sorted(n for n in notes if n))


def _figure(path: Path, out: Path, caption: str) -> str:
    rel = html.escape(path.relative_to(out).as_posix())
    return f"<figure><a href='{rel}'><img src='{rel}' alt='{html.escape(caption)}'></a>" \
           f"<figcaption>{html.escape(caption)}</figcaption></figure>"


def _series_name(run: Any, result: EvaluationResult) -> str:
    """The curve of the quality-vs-density figure a run belongs to: a baseline family's, or the plans'
    (FP8 runs apart). Plans of several searches (their ``search.study``) each form their own curve: a
    line through plans of different searches would read as one trade-off."""
    if run.kind == "baseline":
        return f"baseline {run.baseline['baseline']}"
    name = "plans in FP8" if run.kind == "fp8" else "plans"
    studies = {(r.plan.search or {}).get("study") for r in result.runs if r.kind == "plan"}
    if len(studies) > 1:
        name += f" of {(run.plan.search or {}).get('study') or 'no search'}"
    return name


def write_outputs(result: EvaluationResult, out: str | Path, *, figure_videos: int | None = 4) -> dict[str, Any]:
    """Write the JSON, the figures of the first ``figure_videos`` videos (None: all) and index.html
    into ``out``; returns {"json", "index", "figures": [paths]}."""
    out = Path(out)
    json_path = result.write_json(out / "evaluation.json")
    made: list[Path] = []
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>attnsearch evaluation</title>"
             f"<style>{CSS}</style></head><body>",
             f"<h1>attnsearch evaluation: {html.escape(result.generator['name'])}</h1>",
             f"<p>{len(result.seeds)} videos (seeds {result.seeds[0]}…{result.seeds[-1]}, "
             f"{'held out from the search' if result.held_out else 'NOT all held out from the search'}), "
             f"{result.steps} sampler steps, each run against the dense video of the same seed and condition. "
             f"Predicted speedup: {html.escape(_hardware_note(result))}. "
             f"Data: <a href='evaluation.json'>evaluation.json</a>.</p>",
             _summary_table(result)]
    plans = result.plans()
    if len(plans) > 1:
        series: dict[str, list[tuple[float, float, float]]] = {}
        for r in result.runs:
            name = _series_name(r, result)
            series.setdefault(name, []).append((r.density, r.overall["psnr_db"], r.overall["ssim"]))
        p = figures.quality_vs_density(series, out / "quality_vs_density.png")
        made.append(p)
        parts.append("<h2>Quality vs density</h2>" + _figure(p, out, "mean PSNR and SSIM against dense vs mean "
                                                                     "kept-block density"))
    count = len(result.seeds) if figure_videos is None else min(figure_videos, len(result.seeds))
    for i in range(count):
        seed, dense = result.seeds[i], result.dense[i]
        folder = out / f"video_{seed}"
        title = f"seed {seed}: {dense.condition}"
        rows = [(r.label, r.videos[i].frames) for r in result.runs]
        parts.append(f"<h2>{html.escape(title)}</h2>")
        grid = figures.frame_grid([("dense", dense.frames), *rows], folder / "frames.png", title)
        diff = figures.difference_map(dense.frames, rows, folder / "difference.png", title)
        curve = figures.psnr_per_frame([(r.label, r.metrics[i]["psnr_per_frame_db"]) for r in result.runs],
                                       folder / "psnr_per_frame.png", title)
        made += [grid, diff, curve]
        parts += [_figure(grid, out, "frames: dense, then every run"), _figure(diff, out, "|run − dense| per frame"),
                  _figure(curve, out, "PSNR per frame vs dense")]
        for j, r in enumerate(result.runs):
            g = figures.gif([("dense", dense.frames), (r.label, r.videos[i].frames)],
                            folder / f"{j}_{slug(r.label)}.gif")
            made.append(g)
            m = r.metrics[i]
            parts.append(_figure(g, out, f"dense | {r.label}: PSNR {_num(m['psnr_db'], '.2f')} dB, "
                                         f"SSIM {m['ssim']:.4f}"))
    parts.append("</body></html>")
    index = write_text_atomic(out / "index.html", "\n".join(parts))
    return {"json": json_path, "index": index, "figures": made}


__all__ = ["write_outputs"]
