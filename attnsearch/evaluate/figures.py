"""Pictures of an evaluation: frames side by side, GIFs, difference maps, PSNR per frame, quality vs
density. Every file is written through ``atomic_io.replacing`` (whole or absent)."""

from __future__ import annotations

import math
import textwrap
from pathlib import Path
from typing import Any, Sequence

import matplotlib

matplotlib.use("Agg")  # files only, headless

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from ..atomic_io import replacing  # noqa: E402
from ..report.style import save_figure  # noqa: E402

#: Frames shown in a grid (evenly spaced over the video).
GRID_FRAMES = 8
#: Milliseconds per GIF frame.
GIF_MS = 125
#: Characters per line of a row label (a row is 1.3 inches tall; labels at 7 pt wrap to fit it).
LABEL_WIDTH = 18


def to_uint8(frames: torch.Tensor) -> np.ndarray:
    """[1, 3, F, H, W] in [0, 1] → uint8 [F, H, W, 3]."""
    return (frames[0].permute(1, 2, 3, 0).clamp(0, 1) * 255).round().to(torch.uint8).numpy()


def _columns(num_frames: int) -> list[int]:
    if num_frames <= GRID_FRAMES:
        return list(range(num_frames))
    return sorted({round(i * (num_frames - 1) / (GRID_FRAMES - 1)) for i in range(GRID_FRAMES)})


def _panels(rows: Sequence[tuple[str, np.ndarray]], extra_width: float = 0.0, **imshow: Any) -> tuple[Any, Any, Any]:
    """A figure of rows (label, [F, H, W(, 3)] images) × evenly spaced frames; returns (fig, axes, last image)."""
    cols = _columns(len(rows[0][1]))
    fig, axes = plt.subplots(len(rows), len(cols), squeeze=False,
                             figsize=(1.3 * len(cols) + 0.8 + extra_width, 1.3 * len(rows) + 0.5))
    im = None
    for r, (label, images) in enumerate(rows):
        for c, f in enumerate(cols):
            ax = axes[r][c]
            im = ax.imshow(images[f], interpolation="nearest", **imshow)
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(f"frame {f}", fontsize=7)
            if c == 0:
                ax.set_ylabel(textwrap.fill(label, LABEL_WIDTH), fontsize=7)
    return fig, axes, im


def _title(fig, title: str) -> None:
    """``title`` above the panels' own titles: 0.35 inch of the figure is kept free for it."""
    if not title:
        return
    fig.suptitle(title, fontsize=8, y=1 - 0.1 / fig.get_figheight(), va="top")
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.35 / fig.get_figheight()))


def frame_grid(rows: Sequence[tuple[str, torch.Tensor]], path: Path, title: str = "") -> Path:
    """Rows (dense, plan, baselines …) × evenly spaced frames."""
    fig, _, _ = _panels([(label, to_uint8(frames)) for label, frames in rows])
    fig.tight_layout()
    _title(fig, title)
    return save_figure(fig, path)


def gif(rows: Sequence[tuple[str, torch.Tensor]], path: Path, min_height: int = 128) -> Path:
    """An animated GIF of the rows' videos side by side (nearest-neighbour upscaled to ≥ min_height
    pixels), each panel captioned."""
    from PIL import Image, ImageDraw

    videos = [to_uint8(frames) for _, frames in rows]
    f, h, w, _ = videos[0].shape
    scale = max(1, math.ceil(min_height / h))
    caption, gap = 12, 4
    pages = []
    for i in range(f):
        page = Image.new("RGB", (len(rows) * (w * scale + gap) - gap, h * scale + caption), "white")
        draw = ImageDraw.Draw(page)
        for j, ((label, _), video) in enumerate(zip(rows, videos)):
            x = j * (w * scale + gap)
            page.paste(Image.fromarray(video[i]).resize((w * scale, h * scale), Image.NEAREST), (x, caption))
            draw.text((x + 2, 0), label[: max(4, w * scale // 6)], fill="black")
        pages.append(page)
    with replacing(path, suffix=".gif") as tmp:
        pages[0].save(tmp, format="GIF", save_all=True, append_images=pages[1:], duration=GIF_MS, loop=0)
    return Path(path)


def difference_map(dense: torch.Tensor, rows: Sequence[tuple[str, torch.Tensor]], path: Path, title: str = "") -> Path:
    """|video − dense| (mean over colour channels) per run and frame, on one colour scale."""
    diffs = [(label, (frames - dense).abs().mean(1)[0].numpy()) for label, frames in rows]   # [F, H, W]
    vmax = max(float(d.max()) for _, d in diffs) or 1.0
    fig, axes, im = _panels(diffs, extra_width=0.6, cmap="magma", vmin=0, vmax=vmax)
    fig.colorbar(im, ax=axes, shrink=0.8, label="|Δ| (frames in [0, 1])")
    fig.suptitle(title, fontsize=8)
    return save_figure(fig, path)


def psnr_per_frame(rows: Sequence[tuple[str, Sequence[float]]], path: Path, title: str = "") -> Path:
    """PSNR of every frame against dense, one line per run (identical frames, +inf, are left out)."""
    fig, ax = plt.subplots(figsize=(5.5, 3.2))
    for label, values in rows:
        xs = [i for i, v in enumerate(values) if math.isfinite(v)]
        name = label if len(xs) == len(values) else f"{label} ({len(values) - len(xs)} identical frames)"
        ax.plot(xs, [values[i] for i in xs], marker="o", ms=3, label=name)
    ax.set_xlabel("frame")
    ax.set_ylabel("PSNR vs dense (dB)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, frameon=False)
    ax.set_title(title, fontsize=8)
    fig.tight_layout()
    return save_figure(fig, path)


def quality_vs_density(series: dict[str, list[tuple[float, float, float]]], path: Path) -> Path:
    """Mean PSNR and SSIM against mean kept-block density: ``series`` name → [(density, psnr, ssim)]
    (the plans form one series, each baseline family another)."""
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 3.4))
    for name, points in series.items():
        points = sorted(points)
        finite = [p for p in points if math.isfinite(p[1])]
        ax1.plot([p[0] for p in finite], [p[1] for p in finite], marker="o", label=name)
        ax2.plot([p[0] for p in points], [p[2] for p in points], marker="o", label=name)
    ax1.set_ylabel("mean PSNR vs dense (dB)")
    ax1.set_title("runs identical to dense (∞ dB) not drawn", fontsize=8)
    ax2.set_ylabel("mean SSIM vs dense")
    for ax in (ax1, ax2):
        ax.set_xlabel("mean kept-block density (attention compute)")
        ax.grid(alpha=0.3)
    ax1.legend(fontsize=8, frameon=False)
    fig.tight_layout()
    return save_figure(fig, path)


__all__ = ["difference_map", "frame_grid", "gif", "psnr_per_frame", "quality_vs_density", "to_uint8"]
