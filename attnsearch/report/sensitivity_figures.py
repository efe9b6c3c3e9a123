"""Figures of a sensitivity record: the output's gain per step and per head."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.colors import LogNorm

from ..search.sensitivity import Sensitivity
from .style import FAMILY_COLORS, save_figure


def gains(sens: Sensitivity, path: Path) -> Path:
    """Step gains (bars) and head gains (layers × heads), each relative to its own smallest positive
    gain, on log scales: which steps and heads the output feels most per unit of attention error."""
    step, head = sens.step_gain, sens.head_gain
    fig, (a, b) = plt.subplots(1, 2, figsize=(9.5, 3.2), gridspec_kw={"width_ratios": [1.6, 1]})
    a.bar(np.arange(len(step)), step / step[step > 0].min(), color=FAMILY_COLORS["diagonal"])
    a.set_yscale("log")
    a.set_xticks(range(0, len(step), max(1, len(step) // 10)))
    a.set_xlabel("denoising step")
    a.set_ylabel("gain (× the smallest)")
    a.set_title("every head of one step probed", fontsize=9)
    low = head[head > 0].min()
    im = b.imshow(np.maximum(head, low) / low, norm=LogNorm(), cmap="viridis", aspect="auto")
    b.set_xlabel("head")
    b.set_ylabel("layer")
    b.set_xticks(range(head.shape[1]))
    b.set_title("one head probed at every step" if sens.sites == "heads" else "one layer probed at every step",
                fontsize=9)
    fig.colorbar(im, ax=b, label="gain (× the smallest)")
    fig.suptitle(f"output change per unit of squared attention error (probes at ≤ {sens.density:g} density, "
                 f"{sens.trajectories} trajectories)", fontsize=9)
    return save_figure(fig, path, tight=True)


def sensitivity_figures(sens: Sensitivity, out: Path, name: str = "sensitivity") -> dict:
    """The report section of one sensitivity record."""
    s = sens.summary()
    summary = (f"{sens.model.get('name') or '?'} (fingerprint {sens.model.get('fingerprint') or '?'}): "
               f"{sens.shape[0]} steps × {sens.shape[1]} layers × {sens.shape[2]} heads, probed per "
               f"{sens.sites[:-1]} at ≤ {sens.density:g} density on {sens.trajectories} trajectories; step gains "
               f"{s['step_gain_ratio'] or 1:.3g}× apart, head gains {s['head_gain_ratio'] or 1:.3g}× apart"
               + (f"; unmeasured (axis mean used): {', '.join(sens.unmeasured)}" if sens.unmeasured else ""))
    return {"title": "Output sensitivity", "summary": summary,
            "figures": [("Gain per step and per head", gains(sens, out / f"{name}_gains.png"))]}


__all__ = ["gains", "sensitivity_figures"]
