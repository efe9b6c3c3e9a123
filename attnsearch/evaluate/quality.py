"""How far one generated video is from its dense twin, and a set of videos on average.

Frames are compared in [0, 1] (data range 1): PSNR, SSIM (attnsearch.metrics, 11 × 11 Gaussian
window, or the largest odd window that fits smaller frames) and PSNR of every frame; the final
latents by relative L2. PSNR of identical videos is +inf (``identical`` says so).
"""

from __future__ import annotations

import math
import statistics
from typing import Any

import torch

from ..metrics import WINDOW_SIZE, psnr, rel_l2, ssim
from .generator import Video

#: Data range of frames in [0, 1].
FRAME_RANGE = 1.0


def _window(frames: torch.Tensor) -> int:
    side = min(frames.shape[-2:])
    return min(WINDOW_SIZE, side if side % 2 else side - 1)


def video_quality(video: Video, dense: Video) -> dict[str, Any]:
    """Metrics of ``video`` against ``dense`` (the same seed without the plan)."""
    x, ref = video.frames, dense.frames
    if x.shape != ref.shape:
        raise ValueError(f"frames: {tuple(x.shape)} differ from the dense video's {tuple(ref.shape)}")
    per_frame = [psnr(x[:, :, f], ref[:, :, f], data_range=FRAME_RANGE) for f in range(x.shape[2])]
    return {
        "psnr_db": psnr(x, ref, data_range=FRAME_RANGE),
        "ssim": ssim(x, ref, data_range=FRAME_RANGE, layout="BCFHW", window_size=_window(x)),
        "psnr_per_frame_db": per_frame,
        "rel_l2_latents": rel_l2(video.latents, dense.latents),
        "identical": bool(torch.equal(x, ref)),
    }


def _mean(values: list[float]) -> float:
    return math.inf if any(v == math.inf for v in values) else statistics.fmean(values)


def overall(per_video: list[dict[str, Any]]) -> dict[str, Any]:
    """Means over videos (PSNR: +inf when any video is identical to dense) and the worst video."""
    psnrs = [v["psnr_db"] for v in per_video]
    return {
        "psnr_db": _mean(psnrs),
        "psnr_db_min": min(psnrs),
        "ssim": statistics.fmean(v["ssim"] for v in per_video),
        "ssim_min": min(v["ssim"] for v in per_video),
        "rel_l2_latents": statistics.fmean(v["rel_l2_latents"] for v in per_video),
        "identical_videos": sum(v["identical"] for v in per_video),
        "videos": len(per_video),
    }


__all__ = ["FRAME_RANGE", "overall", "video_quality"]
