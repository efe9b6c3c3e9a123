"""Figures of a bench result: measured against predicted latency, speedup against density."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import numpy as np

from .style import FAMILY_COLORS, save_figure

ROW_KEYS = ("layer_plans", "bench", "rows", "sweep")


def bench_rows(data: dict[str, Any]) -> list[dict[str, Any]]:
    """The timed layer rows of any bench JSON attnsearch writes (plan, single layers, sweeps)."""
    rows: list[dict[str, Any]] = []
    for key in ROW_KEYS:
        value = data.get(key)
        if isinstance(value, list):
            rows += [r for r in value if isinstance(r, dict) and "sparse_ms" in r and "density" in r]
    return rows


def timing_note(rows: list[dict]) -> str:
    """" (<mode> timing)" when every row was timed in one ``time_ms`` mode, else "": queued, synced
    and sustained rates of one kernel differ by 3-20% (reports/kernel/), so a figure says which."""
    modes = {r.get("timing") for r in rows}
    return f" ({modes.pop()} timing)" if len(modes) == 1 and None not in modes else ""


def _finish(fig, ax, path: Path, title: str) -> Path:
    """Title, legend, layout, write and close: the common end of every bench figure."""
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return save_figure(fig, path)


def measured_vs_predicted(rows: list[dict], path: Path, card: str) -> Path | None:
    pts = [(r["predicted_ms"], r["sparse_ms"]) for r in rows if r.get("predicted_ms")]
    if not pts:
        return None
    pred, meas = map(np.asarray, zip(*pts))
    fig, ax = plt.subplots(figsize=(4.6, 4.2))
    lim = (min(pred.min(), meas.min()) * 0.8, max(pred.max(), meas.max()) * 1.25)
    ax.plot(lim, lim, color="black", lw=0.8, label="measured = predicted")
    ax.fill_between(lim, [v * 0.9 for v in lim], [v * 1.1 for v in lim], color="grey", alpha=0.2, label="±10%")
    ax.scatter(pred, meas, s=14, color=FAMILY_COLORS["diagonal"], zorder=3)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(lim)
    ax.set_ylim(lim)
    within = float(np.mean(np.abs(meas / pred - 1) <= 0.10))
    ax.set_xlabel("predicted ms (cost model)")
    ax.set_ylabel("measured ms")
    return _finish(fig, ax, path, f"{card}: {within:.0%} of {len(pts)} layers within ±10%")


def speedup_vs_density(rows: list[dict], path: Path, card: str) -> Path | None:
    rows = [r for r in rows if r.get("cudnn_ms")]
    if not rows:
        return None
    dens = np.array([r["density"] for r in rows])
    fig, ax = plt.subplots(figsize=(5.6, 4))
    x = np.linspace(max(dens.min() * 0.8, 0.01), 1.0, 200)
    ax.plot(x, 1 / x, color="black", lw=0.8, label="1 / density (ideal)")
    ax.plot(x, 0.8 / x, color="black", lw=0.8, ls="--", label="0.8 / density (target)")
    ax.scatter(dens, [r["cudnn_ms"] / r["sparse_ms"] for r in rows], color=FAMILY_COLORS["diagonal"], s=18,
               label="attnsearch runtime", zorder=3)
    flex = [r for r in rows if r.get("flex_ms")]
    if flex:
        ax.scatter([r["density"] for r in flex], [r["cudnn_ms"] / r["flex_ms"] for r in flex], marker="x",
                   color=FAMILY_COLORS["energy_decay"], s=22, label="FlexAttention (same blocks)", zorder=3)
    ax.axhline(1.0, color=FAMILY_COLORS["dense"], lw=0.8, ls=":", label="dense cuDNN")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("block density")
    ax.set_ylabel("speedup over dense cuDNN SDPA")
    return _finish(fig, ax, path, f"speedup vs density on {card}{timing_note(rows)}")


def tflops_vs_density(rows: list[dict], path: Path, card: str) -> Path | None:
    """Effective TFLOP/s on kept blocks of the runtime and FlexAttention against density, with
    cuDNN's dense rate as the line a sparse kernel must stay near for speedup ≈ 1/density."""
    rows = sorted((r for r in rows if r.get("sparse_tflops")), key=lambda r: r["density"])
    if len(rows) < 2:
        return None
    fig, ax = plt.subplots(figsize=(5.6, 3.8))
    dens = [r["density"] for r in rows]
    ax.plot(dens, [r["sparse_tflops"] for r in rows], "o-", color=FAMILY_COLORS["diagonal"], label="attnsearch runtime")
    flex = [r for r in rows if r.get("flex_tflops")]
    if flex:
        ax.plot([r["density"] for r in flex], [r["flex_tflops"] for r in flex], "x--",
                color=FAMILY_COLORS["energy_decay"], label="FlexAttention (same blocks)")
    cudnn = [r["cudnn_tflops"] for r in rows if r.get("cudnn_tflops")]
    if cudnn:
        ax.axhline(float(np.median(cudnn)), color=FAMILY_COLORS["dense"], ls=":",
                   label=f"cuDNN dense ({np.median(cudnn):.0f})")
    ax.set_xscale("log")
    ax.set_xlabel("block density")
    ax.set_ylabel("effective TFLOP/s on kept blocks")
    ax.set_ylim(bottom=0)
    return _finish(fig, ax, path, f"kernel rate vs density on {card}{timing_note(rows)}")


def bench_figures(data: dict[str, Any], out: Path) -> dict:
    rows = bench_rows(data)
    card = data.get("card") or data.get("env", {}).get("card") or (rows[0].get("card") if rows else "?")
    figs = []
    for caption, fig in (("Measured vs predicted latency per layer", measured_vs_predicted(rows, out / "bench_predicted.png", card)),
                         ("Speedup vs density", speedup_vs_density(rows, out / "bench_speedup.png", card)),
                         ("Kernel rate vs density", tflops_vs_density(rows, out / "bench_tflops.png", card))):
        if fig is not None:
            figs.append((caption, fig))
    summary = f"{len(rows)} timed layers on {card}"
    if data.get("speedup_vs_cudnn"):
        summary += f"; whole plan {data['speedup_vs_cudnn']:.2f}× faster than dense cuDNN"
    return {"title": "Bench", "summary": summary, "figures": figs}
