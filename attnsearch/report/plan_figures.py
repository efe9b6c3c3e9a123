"""Figures of a plan: which pattern each head runs, what it is predicted to cost, and when."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.colors import ListedColormap
from matplotlib.patches import Rectangle

from ..plan import Plan
from .style import FAMILY_COLORS, FAMILY_ORDER, family_legend, save_figure


def _sparse_entries(plan: Plan):
    return [e for e in plan.schedule if e.layers is not None]


def head_map(plan: Plan, path: Path) -> Path:
    """Layers × heads coloured by pattern with each head's block density, heads whose kept blocks
    run in FP8 hatched; one panel per sparse schedule entry (at most three; later entries are
    usually the same)."""
    entries = _sparse_entries(plan)[:3] or plan.schedule[:1]
    fig, axes = plt.subplots(1, len(entries), squeeze=False,
                             figsize=(len(entries) * max(3.5, 0.42 * plan.num_heads + 1.2),
                                      max(2.5, 0.3 * plan.num_layers + 1.3)))
    cmap = ListedColormap([FAMILY_COLORS[f] for f in FAMILY_ORDER])
    for ax, entry in zip(axes[0], entries):
        idx = np.full((plan.num_layers, plan.num_heads), FAMILY_ORDER.index("dense"))
        dens = np.ones((plan.num_layers, plan.num_heads))
        fp8 = []
        if entry.layers is not None:
            for layer, lp in enumerate(entry.layers):
                d = lp.head_densities().numpy()
                for head, (pattern, _) in enumerate(lp.head_specs):
                    idx[layer, head] = FAMILY_ORDER.index(pattern)
                    dens[layer, head] = d[head]
                fp8 += [(layer, head) for head in lp.precision_heads("fp8")]
        ax.imshow(idx, cmap=cmap, vmin=-0.5, vmax=len(FAMILY_ORDER) - 0.5, aspect="auto", interpolation="nearest")
        for layer, head in fp8:
            ax.add_patch(Rectangle((head - 0.5, layer - 0.5), 1, 1, fill=False, hatch="///", edgecolor="white",
                                   linewidth=0))
        if plan.num_layers * plan.num_heads <= 600:
            for (layer, head), d in np.ndenumerate(dens):
                ax.text(head, layer, f"{d:.2f}"[1:] if d < 1 else "1", ha="center", va="center", fontsize=5.5,
                        color="white" if idx[layer, head] != FAMILY_ORDER.index("skip") else "black")
        ax.set_xlabel("head")
        ax.set_ylabel("layer")
        ax.set_title(f"steps [{entry.start}, {entry.stop})", fontsize=9)
    family_legend(axes[0][-1], FAMILY_ORDER, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fp8_note = "; hatched: FP8 kept blocks" if any(lp.precision_heads("fp8") for lp in plan.layer_plans()) else ""
    fig.suptitle(f"pattern per head (numbers: block density{fp8_note})", fontsize=10)
    fig.tight_layout()
    return save_figure(fig, path)


def layer_latency(plan: Plan, path: Path, cost) -> Path:
    """Predicted attention latency per layer of the first sparse entry against dense cuDNN."""
    entries = _sparse_entries(plan)
    layers = np.arange(plan.num_layers)
    dense = float(cost.dense_ms(plan.geometry.num_tokens, plan.num_heads))
    sparse = [cost.layer_ms(lp) for lp in entries[0].layers] if entries else [dense] * plan.num_layers
    fig, ax = plt.subplots(figsize=(max(5, 0.3 * plan.num_layers + 2), 3.2))
    ax.bar(layers, sparse, color=FAMILY_COLORS["diagonal"], label="plan (predicted)")
    ax.axhline(dense, color=FAMILY_COLORS["dense"], ls="--", label=f"dense cuDNN ({dense:.2f} ms)")
    ax.set_xlabel("layer")
    ax.set_ylabel("ms per attention call")
    total = sum(sparse)
    ax.set_title(f"predicted latency per layer, first sparse steps\n{cost.table.device}: "
                 f"{dense * plan.num_layers / total:.2f}× faster than dense", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return save_figure(fig, path)


def schedule(plan: Plan, path: Path) -> Path:
    """Steps × layers: mean block density of the layer's heads at every step (1 = dense)."""
    grid = np.ones((plan.num_steps, plan.num_layers))
    for e in plan.schedule:
        if e.layers is not None:
            grid[e.start:e.stop] = [lp.density for lp in e.layers]
    fig, ax = plt.subplots(figsize=(max(5, 0.25 * plan.num_layers + 2), max(2.4, 0.18 * plan.num_steps + 1.2)))
    im = ax.imshow(grid, cmap="viridis", vmin=0, vmax=1, aspect="auto", interpolation="nearest")
    for e in plan.schedule[1:]:
        ax.axhline(e.start - 0.5, color="white", lw=1)
    exact = plan.residual_steps
    for step in exact:  # the exact step of a residual entry runs its inexact heads densely as well
        ax.axhspan(step - 0.5, step + 0.5, facecolor="none", edgecolor="red", lw=1.2)
    ax.set_xlabel("layer")
    ax.set_ylabel("step")
    ax.set_title("step schedule: layer density per step (white lines: schedule boundaries"
                 + ("; red: exact steps of residual reuse" if exact else "") + ")", fontsize=9)
    fig.colorbar(im, ax=ax, label="block density")
    fig.tight_layout()
    return save_figure(fig, path)


def plan_figures(plan: Plan, out: Path) -> dict:
    from ..costmodel import CostModel

    head_dim, batch = plan.costed_call()
    cost = CostModel(plan.hardware.get("calibration") or None, head_dim=head_dim, batch=batch,
                     execution=plan.hardware.get("execution"))
    figs = [("Pattern per head", head_map(plan, out / "plan_heads.png")),
            ("Predicted latency per layer", layer_latency(plan, out / "plan_latency.png", cost)),
            ("Step schedule", schedule(plan, out / "plan_schedule.png"))]
    p = plan.predicted
    searched = "" if plan.source_geometry is None else f" (retargeted; searched at {plan.source_geometry})"
    portable = "" if plan.portable else " (non-portable)"
    summary = (f"{plan.model.get('name', '?')} — geometry {plan.geometry}{searched}{portable}, "
               f"{plan.num_steps} steps × {plan.num_layers} layers × {plan.num_heads} heads, "
               f"block size {plan.block_size}; "
               f"cost model: {cost.table.note}")
    if plan.precision_share("fp8"):
        summary += f"; FP8 kept blocks on {plan.precision_share('fp8'):.0%} of the computed heads"
    if plan.has_residual:
        summary += (f"; residual reuse: exact steps {', '.join(map(str, plan.residual_steps))} (mean density "
                    f"{plan.mean_density:.3f} with their exact calls; residuals "
                    f"{plan.residual_bytes() / 2**20:,.1f} MiB in bf16 at head_dim {head_dim}, batch {batch}; "
                    "{} of {} inexact head-layers of its entries reuse)".format(*plan.reuse_counts()))
    if p:
        summary += (f"; predicted attention {p.get('attention_ms', float('nan')):.1f} ms vs dense "
                    f"{p.get('dense_attention_ms', float('nan')):.1f} ms ({p.get('speedup', float('nan')):.2f}×), "
                    f"rel_err {p.get('rel_err', float('nan')):.3g}")
    return {"title": "Plan", "summary": summary, "figures": figs}
