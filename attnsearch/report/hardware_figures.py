"""Figures of a hardware table (``kernels/<gpu>.json``): how well each kernel's constants fit its
measurements, and what an eager call costs the host, kernel by kernel."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from ..costmodel.table import HardwareTable, parse_variant_key
from .style import FAMILY_COLORS, save_figure

#: The kinds of sparse call whose host cost is drawn: (label, parts).
HOST_CALLS = (("native", ("native",)), ("FP8", ("fp8",)), ("native + FP8", ("native", "fp8")),
              ("native + skip heads", ("native", "fill")))


def fit_errors(table: HardwareTable, path: Path) -> Path:
    """Median and 90th-percentile relative error of each fitted part against its own points."""
    rows = [(k, v) for k, v in sorted(table.fit.items()) if isinstance(v, dict) and "median_abs_rel_err" in v]
    fig, ax = plt.subplots(figsize=(max(5.0, 0.45 * len(rows) + 2), 3.2))
    x = np.arange(len(rows))
    ax.bar(x - 0.2, [100 * v["median_abs_rel_err"] for _, v in rows], 0.4, label="median",
           color=FAMILY_COLORS["diagonal"])
    ax.bar(x + 0.2, [100 * v["p90_abs_rel_err"] for _, v in rows], 0.4, label="90th percentile",
           color=FAMILY_COLORS["energy_decay"])
    ax.set_xticks(x, [f"{k}\n({v['points']})" for k, v in rows], rotation=60, ha="right", fontsize=7)
    ax.set_ylabel("|predicted / measured − 1| (%)")
    ax.set_title("fit of each part against its calibration points (points in brackets)", fontsize=9)
    ax.legend(fontsize=8)
    return save_figure(fig, path, tight=True)


def host_costs(table: HardwareTable, path: Path) -> Path:
    """Host µs of each kind of eager sparse call per kernel, and of a cuDNN call per head_dim."""
    host = table.host
    keys = sorted(host.sparse, key=lambda k: parse_variant_key(k)[:2])
    fig, ax = plt.subplots(figsize=(max(5.0, 1.3 * len(keys) + 2.5), 3.2))
    width = 0.8 / len(HOST_CALLS)
    colors = list(FAMILY_COLORS.values())
    top = 0.0
    for i, (label, parts) in enumerate(HOST_CALLS):
        us = [host.sparse_us(*parse_variant_key(k)[:2], parts) for k in keys]
        top = max(top, *us)
        ax.bar(np.arange(len(keys)) + (i - (len(HOST_CALLS) - 1) / 2) * width, us, width, label=label,
               color=colors[i % len(colors)])
    text = "cuDNN call: " + ", ".join(f"{d} {us:.0f} µs" for d, us in sorted(host.dense.items()))
    for i, us in enumerate(host.dense.values()):
        ax.axhline(us, ls="--", lw=0.8, color="grey", label=None if i else text)
    ax.set_xticks(range(len(keys)), keys)
    ax.set_ylim(0, 1.45 * max(top, *host.dense.values()))   # room for the legend above the bars
    ax.set_ylabel("host µs per eager call")
    ax.set_title("host dispatch per call: an eager call takes at least this long", fontsize=9)
    ax.legend(fontsize=7)
    return save_figure(fig, path, tight=True)


def hardware_figures(table: HardwareTable, out: Path, name: str = "hardware") -> dict:
    """The report section of one hardware table."""
    software = ", ".join(f"{k} {table.software[k]}" for k in ("torch", "triton", "cuda") if k in table.software)
    kernels = sorted({"d{}_b{}".format(*parse_variant_key(k)[:2]) for k in table.sparse})
    summary = (f"{table.device} ({table.sm_count} SMs), calibrated {table.date or '?'}"
               + (f" with {software}" if software else "") + f"; sparse kernels {', '.join(kernels)} in "
               f"{', '.join(table.precisions)}; "
               + ("host dispatch costs measured (optimize --execution eager)" if table.host is not None
                  else "no host dispatch costs (device time only; recalibrate to cost eager calls)"))
    figures = [("Fit of the cost model's parts", fit_errors(table, out / f"{name}_fit.png"))]
    if table.host is not None:
        figures.append(("Host dispatch per eager call", host_costs(table, out / f"{name}_host.png")))
    return {"title": f"Hardware table: {table.name}", "summary": summary, "figures": figures}


__all__ = ["fit_errors", "hardware_figures", "host_costs"]
