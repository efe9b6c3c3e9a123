"""One colour per pattern family, the same in every figure, the Agg backend, and how a figure is
written (whole or not at all, through :mod:`attnsearch.atomic_io`)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

from ..atomic_io import replacing

matplotlib.use("Agg")  # reports are files: never open a window, work headless

FAMILY_ORDER = ("diagonal", "multi_diagonal", "vertical_stripe", "energy_decay", "dense", "skip")
FAMILY_COLORS = {
    "diagonal": "#1f77b4",
    "multi_diagonal": "#ff7f0e",
    "vertical_stripe": "#2ca02c",
    "energy_decay": "#9467bd",
    "dense": "#7f7f7f",
    "skip": "#d9d9d9",
}
SHORT = {"diagonal": "D", "multi_diagonal": "M", "vertical_stripe": "V", "energy_decay": "E", "dense": "·", "skip": "∅"}


def family_legend(ax, families=FAMILY_ORDER, **kwargs) -> None:
    from matplotlib.patches import Patch

    handles = [Patch(color=FAMILY_COLORS[f], label=f) for f in families]
    ax.legend(handles=handles, **{"fontsize": 8, "frameon": False, **kwargs})


def quality_axes(axes, xlabel: str, legend_size: int = 7) -> None:
    """A (PSNR, SSIM) pair of axes of videos against dense ones: labelled over ``xlabel``, gridded,
    the legend on the first."""
    axes[0].set_ylabel("PSNR vs dense video (dB)")
    axes[1].set_ylabel("SSIM vs dense video")
    for ax in axes:
        ax.set_xlabel(xlabel)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=legend_size, frameon=False)


def save_quality_figure(fig, axes, xlabel: str, title: str, path: Path, legend_size: int = 7) -> Path:
    """:func:`quality_axes` on ``axes``, ``title`` over the figure, written to ``path`` cropped."""
    quality_axes(axes, xlabel, legend_size)
    fig.suptitle(title, fontsize=9)
    return save_figure(fig, path, tight=True)


def labelled_curve(ax, xs, ys, labels, *, color: str, offset: tuple[int, int] = (4, 4), fontsize: int = 7,
                   **plot) -> None:
    """Plot the curve (xs, ys) in ``color`` and write each point's label beside it, in that colour."""
    ax.plot(xs, ys, color=color, **plot)
    for x, y, text in zip(xs, ys, labels):
        ax.annotate(text, (x, y), textcoords="offset points", xytext=offset, fontsize=fontsize, color=color)


def save_figure(fig, path: Path, dpi: int = 110, tight: bool = False) -> Path:
    """Write ``fig`` to ``path`` (format from its suffix) through a temporary file, close it, return
    the path; ``tight`` crops the figure to what it draws."""
    import matplotlib.pyplot as plt

    path = Path(path)
    with replacing(path, suffix=path.suffix) as tmp:
        fig.savefig(tmp, dpi=dpi, bbox_inches="tight" if tight else None)
    plt.close(fig)
    return path
