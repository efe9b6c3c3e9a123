"""Figures of a profile: what the heads look like and how well each family covers them."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.colors import LogNorm, ListedColormap

from ..profiling.classify import class_counts, classify
from ..profiling.profile_io import Profile
from .style import FAMILY_COLORS, FAMILY_ORDER, SHORT, family_legend, save_figure


def attention_maps(profile: Profile, labels: pd.DataFrame, path: Path) -> Path:
    """Layers × heads grid of block-level attention maps (log colour), each titled with its class."""
    layers, heads = profile.num_layers, profile.num_heads
    side = 1.25 if layers * heads <= 96 else 0.8
    fig, axes = plt.subplots(layers, heads, figsize=(heads * side + 0.6, layers * side + 0.8), squeeze=False)
    cls = {(r.layer, r.head): r.pattern for r in labels.itertuples()}
    vmax = max((float(m.max()) for m in profile.maps.values()), default=1.0)
    norm = LogNorm(vmin=max(vmax * 1e-4, 1e-8), vmax=vmax)
    for (layer, head), ax in np.ndenumerate(axes):
        ax.set_xticks([])
        ax.set_yticks([])
        m = profile.maps.get((layer, head))
        if m is None:
            ax.set_visible(False)
            continue
        ax.imshow(np.clip(m.numpy(), norm.vmin, None), norm=norm, cmap="magma", interpolation="nearest")
        family = cls.get((layer, head), "dense")
        ax.set_title(f"L{layer}H{head} {SHORT[family]}", fontsize=6, color=FAMILY_COLORS[family], pad=2)
        for spine in ax.spines.values():
            spine.set_edgecolor(FAMILY_COLORS[family])
            spine.set_linewidth(1.5)
    fig.suptitle(f"{profile.model['name']}: block-level attention maps (query blocks ↓, key blocks →; log scale)\n"
                 "frame colour and letter = class (D diagonal, M multi-diagonal, V stripe, E energy decay, · dense)",
                 fontsize=9)
    fig.tight_layout(rect=(0, 0, 1, 0.96))
    return save_figure(fig, path)


def class_counts_per_layer(labels: pd.DataFrame, path: Path, title: str) -> Path:
    counts = class_counts(labels)
    fig, ax = plt.subplots(figsize=(max(5, 0.35 * len(counts) + 2), 3.4))
    bottom = np.zeros(len(counts))
    for family in counts.columns:
        ax.bar(counts.index, counts[family], bottom=bottom, color=FAMILY_COLORS[family], label=family, width=0.8)
        bottom += counts[family].to_numpy()
    ax.set_xlabel("layer")
    ax.set_ylabel("heads")
    ax.set_title(title, fontsize=10)
    ax.set_xticks(counts.index)
    family_legend(ax, counts.columns, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.tight_layout()
    return save_figure(fig, path)


def recall_vs_density(profile: Profile, labels: pd.DataFrame, path: Path, tau: float) -> Path:
    """Per family: recall against density of its candidates, over the heads classified as that
    family (median and 10–90% band): how much density each family needs for its own heads. The
    dashed grey line is the same family over every other head: what it would buy elsewhere."""
    t = profile.table.merge(labels[["layer", "head", "pattern"]].rename(columns={"pattern": "label"}),
                            on=["layer", "head"])
    fams = [f for f in FAMILY_ORDER[:4] if (t["pattern"] == f).any()]
    fig, axes = plt.subplots(1, len(fams), figsize=(3.1 * len(fams), 3.3), squeeze=False, sharey=True)
    for ax, family in zip(axes[0], fams):
        rows = t[t["pattern"] == family]
        for own, style in ((True, "o-"), (False, "--")):
            sel = rows[(rows["label"] == family) == own]
            if sel.empty:
                continue
            g = sel.groupby("candidate").agg(
                density=("density", "median"), med=("recall", "median"),
                lo=("recall", lambda x: x.quantile(0.1)), hi=("recall", lambda x: x.quantile(0.9))).sort_values("density")
            color = FAMILY_COLORS[family] if own else "#999999"
            label = f"{sel[['layer', 'head']].drop_duplicates().shape[0]} heads " + ("of this class" if own else "of other classes")
            ax.plot(g["density"], g["med"], style, color=color, ms=3, lw=1.2, label=label)
            if own:
                ax.fill_between(g["density"], g["lo"], g["hi"], color=color, alpha=0.2, lw=0)
        ax.axhline(tau, color="black", ls=":", lw=0.8)
        ax.set_title(family, color=FAMILY_COLORS[family], fontsize=10)
        ax.set_xlabel("block density")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.02)
        ax.legend(fontsize=7, loc="lower right")
    axes[0][0].set_ylabel(f"recall (softmax mass kept); τ = {tau} dotted")
    fig.suptitle("recall vs density per family (median, 10–90% band over heads and steps)", fontsize=10)
    fig.tight_layout()
    return save_figure(fig, path)


def class_stability(labels: pd.DataFrame, path: Path, num_steps: int) -> Path:
    """Layers × heads: colour = class over steps, shade = share of steps agreeing with it."""
    layers, heads = int(labels["layer"].max()) + 1, int(labels["head"].max()) + 1
    idx = np.zeros((layers, heads), dtype=int)
    alpha = np.ones((layers, heads))
    for r in labels.itertuples():
        idx[r.layer, r.head] = FAMILY_ORDER.index(r.pattern)
        alpha[r.layer, r.head] = r.stability
    fig, ax = plt.subplots(figsize=(max(4, 0.4 * heads + 2.5), max(2.5, 0.32 * layers + 1.2)))
    cmap = ListedColormap([FAMILY_COLORS[f] for f in FAMILY_ORDER])
    ax.imshow(idx, cmap=cmap, vmin=-0.5, vmax=len(FAMILY_ORDER) - 0.5, alpha=np.clip(alpha, 0.15, 1),
              aspect="auto", interpolation="nearest")
    if layers * heads <= 400:
        for (layer, head), s in np.ndenumerate(alpha):
            if s < 1:
                ax.text(head, layer, f"{s:.2f}", ha="center", va="center", fontsize=6)
    ax.set_xlabel("head")
    ax.set_ylabel("layer")
    ax.set_title(f"class over {num_steps} step(s); faded = unstable (share of steps agreeing shown)", fontsize=9)
    family_legend(ax, [f for f in FAMILY_ORDER[:5]], loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.tight_layout()
    return save_figure(fig, path)


def profile_figures(profile: Profile, out: Path, tau: float = 0.95, density_cap: float = 0.75) -> dict:
    """All profile figures into ``out``; returns the section for the HTML page."""
    labels = classify(profile, tau=tau, density_cap=density_cap, over_steps=True)
    figs = [
        ("Attention maps", attention_maps(profile, labels, out / "profile_maps.png")),
        ("Classes per layer", class_counts_per_layer(labels, out / "profile_classes.png",
                                                     f"classes per layer (τ = {tau}, cap {density_cap})")),
        ("Recall vs density", recall_vs_density(profile, labels, out / "profile_recall_density.png", tau)),
        ("Class stability across steps", class_stability(labels, out / "profile_stability.png", profile.num_steps)),
    ]
    counts = labels["pattern"].value_counts()
    summary = (f"{profile.model['name']} — geometry {profile.geometry}, block size {profile.settings.block_size}, "
               f"{profile.num_steps} step(s) × {profile.num_layers} layers × {profile.num_heads} heads; "
               + ", ".join(f"{counts.get(f, 0)} {f}" for f in FAMILY_ORDER[:5]))
    return {"title": "Profile", "summary": summary, "figures": figs}


