"""Quality metrics for validating sparse attention on video models: PSNR, SSIM, relative L2.

Each compares a result ``x`` (sparse) with a reference ``ref`` (dense) of the same shape: final
latents or decoded frames. Everything is computed in float64 on the tensors' device.

    rel_l2(x, ref)                      ‖x − ref‖₂ / ‖ref‖₂
    psnr(x, ref, data_range=2.0)        10·log10(R² / MSE) dB; inf when x == ref
    ssim(x, ref, data_range=2.0)        mean SSIM over frames (Wang et al. 2004, Gaussian window)
    compare(x, ref, layout="BCFHW")     all three, as a dict

Data range R. PSNR and SSIM are defined for a signal of known range: decoded frames in [−1, 1]
(diffusers' VAE output) have R = 2, uint8-style frames R = 255. Latents have no fixed range; with
``data_range=None`` R is taken from the reference, max(ref) − min(ref) (the convention of
scikit-image for float inputs without a range is to refuse; we document the choice instead).

SSIM, exactly as implemented here (Wang, Bovik, Sheikh, Simoncelli 2004, "Image quality
assessment: from error visibility to structural similarity", with its published constants):

* frames: a video [B, C, F, H, W] ("BCFHW", Wan/HunyuanVideo latents and diffusers' decoded
  video) or [B, F, C, H, W] ("BFCHW", CogVideoX latents) is split into B·F frames of C channels;
  ``layout="CHW"`` takes [..., C, H, W] with every leading index a frame.
* window: an 11 × 11 Gaussian, σ = 1.5, normalised to sum 1, applied separably per channel as a
  *valid* convolution (no padding: only positions where the window fits, as the reference MATLAB
  ``ssim_index``); H and W must be ≥ the window size (``window_size`` can be made smaller, odd).
* per position: μx, μy, σx², σy², σxy are the window-weighted means, variances and covariance
  (biased: E[x²] − μx²), and
  SSIM = ((2 μx μy + C1)(2 σxy + C2)) / ((μx² + μy² + C1)(σx² + σy² + C2)),
  C1 = (K1·R)², C2 = (K2·R)², K1 = 0.01, K2 = 0.03.
* a frame's SSIM is the mean over channels and valid positions; ``ssim`` returns the mean over
  frames, or with ``reduction="none"`` the per-frame values (shape [B, F] for video layouts).
"""

from __future__ import annotations

import math
from typing import Literal

import torch
import torch.nn.functional as F

K1, K2 = 0.01, 0.03
WINDOW_SIZE, WINDOW_SIGMA = 11, 1.5
Layout = Literal["BCFHW", "BFCHW", "CHW"]


def _check(x: torch.Tensor, ref: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    for name, t in (("x", x), ("ref", ref)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name}: expected a tensor, got {type(t).__name__}")
    if x.shape != ref.shape:
        raise ValueError(f"x: shape {tuple(x.shape)} differs from ref's {tuple(ref.shape)}")
    if x.numel() == 0:
        raise ValueError("x: empty tensor")
    x, ref = x.detach().to(torch.float64), ref.detach().to(device=x.device, dtype=torch.float64)
    if not (torch.isfinite(x).all() and torch.isfinite(ref).all()):
        raise ValueError("x/ref: non-finite values (NaN or inf) cannot be compared")
    return x, ref


def _range(ref: torch.Tensor, data_range: float | None) -> float:
    if data_range is None:
        r = float(ref.max() - ref.min())
        if r <= 0:
            raise ValueError("data_range: the reference is constant; pass data_range explicitly")
        return r
    if not data_range > 0:
        raise ValueError(f"data_range: must be > 0, got {data_range!r}")
    return float(data_range)


def rel_l2(x: torch.Tensor, ref: torch.Tensor) -> float:
    """‖x − ref‖₂ / ‖ref‖₂ over all elements (inf if ref is all zero and x is not, 0 if both are)."""
    x, ref = _check(x, ref)
    num, den = float(torch.linalg.vector_norm(x - ref)), float(torch.linalg.vector_norm(ref))
    if den == 0:
        return 0.0 if num == 0 else math.inf
    return num / den


def mse(x: torch.Tensor, ref: torch.Tensor) -> float:
    x, ref = _check(x, ref)
    return float(((x - ref) ** 2).mean())


def psnr(x: torch.Tensor, ref: torch.Tensor, data_range: float | None = None) -> float:
    """10·log10(R² / MSE) in dB over all elements; inf for identical tensors. R: module docstring."""
    x, ref = _check(x, ref)
    r = _range(ref, data_range)
    m = float(((x - ref) ** 2).mean())
    return math.inf if m == 0 else 10.0 * math.log10(r * r / m)


def gaussian_window(size: int = WINDOW_SIZE, sigma: float = WINDOW_SIGMA, dtype=torch.float64,
                    device=None) -> torch.Tensor:
    """1-D Gaussian [size] centred on the middle tap, summing to 1."""
    if not isinstance(size, int) or size < 1 or size % 2 == 0:
        raise ValueError(f"window_size: must be a positive odd integer, got {size!r}")
    if not sigma > 0:
        raise ValueError(f"sigma: must be > 0, got {sigma!r}")
    t = torch.arange(size, dtype=dtype, device=device) - (size - 1) / 2
    g = torch.exp(-(t * t) / (2 * sigma * sigma))
    return g / g.sum()


def to_frames(t: torch.Tensor, layout: Layout) -> tuple[torch.Tensor, tuple[int, ...]]:
    """→ ([frames, C, H, W], leading shape of the per-frame result)."""
    if layout == "BCFHW":
        if t.dim() != 5:
            raise ValueError(f"layout BCFHW: expected a 5-D tensor, got {tuple(t.shape)}")
        b, c, f, h, w = t.shape
        return t.permute(0, 2, 1, 3, 4).reshape(b * f, c, h, w), (b, f)
    if layout == "BFCHW":
        if t.dim() != 5:
            raise ValueError(f"layout BFCHW: expected a 5-D tensor, got {tuple(t.shape)}")
        b, f, c, h, w = t.shape
        return t.reshape(b * f, c, h, w), (b, f)
    if layout == "CHW":
        if t.dim() < 3:
            raise ValueError(f"layout CHW: expected [..., C, H, W], got {tuple(t.shape)}")
        lead = tuple(t.shape[:-3])
        return t.reshape(-1, *t.shape[-3:]), lead
    raise ValueError(f"layout: must be 'BCFHW', 'BFCHW' or 'CHW', got {layout!r}")


def ssim_map(x: torch.Tensor, ref: torch.Tensor, data_range: float, window_size: int = WINDOW_SIZE,
             sigma: float = WINDOW_SIGMA) -> torch.Tensor:
    """SSIM at every valid position of frames [N, C, H, W] (float64) → [N, C, H − s + 1, W − s + 1]."""
    n, c, h, w = x.shape
    if h < window_size or w < window_size:
        raise ValueError(f"ssim: frames of {h}×{w} are smaller than the {window_size}×{window_size} window "
                         "(pass a smaller odd window_size)")
    g = gaussian_window(window_size, sigma, x.dtype, x.device)
    gh = g.view(1, 1, window_size, 1).expand(c, 1, window_size, 1)
    gw = g.view(1, 1, 1, window_size).expand(c, 1, 1, window_size)

    def blur(t: torch.Tensor) -> torch.Tensor:
        return F.conv2d(F.conv2d(t, gh, groups=c), gw, groups=c)

    mu_x, mu_y = blur(x), blur(ref)
    sxx = blur(x * x) - mu_x * mu_x
    syy = blur(ref * ref) - mu_y * mu_y
    sxy = blur(x * ref) - mu_x * mu_y
    c1, c2 = (K1 * data_range) ** 2, (K2 * data_range) ** 2
    return ((2 * mu_x * mu_y + c1) * (2 * sxy + c2)) / ((mu_x ** 2 + mu_y ** 2 + c1) * (sxx + syy + c2))


def ssim(x: torch.Tensor, ref: torch.Tensor, data_range: float | None = None, *, layout: Layout = "BCFHW",
         window_size: int = WINDOW_SIZE, sigma: float = WINDOW_SIGMA,
         reduction: Literal["mean", "none"] = "mean") -> float | torch.Tensor:
    """Mean per-frame SSIM of ``x`` against ``ref`` (definition: module docstring)."""
    x, ref = _check(x, ref)
    r = _range(ref, data_range)
    xf, lead = to_frames(x, layout)
    rf, _ = to_frames(ref, layout)
    per_frame = ssim_map(xf, rf, r, window_size, sigma).mean(dim=(1, 2, 3))
    if reduction == "none":
        return per_frame.reshape(lead)
    if reduction != "mean":
        raise ValueError(f"reduction: must be 'mean' or 'none', got {reduction!r}")
    return float(per_frame.mean())


def compare(x: torch.Tensor, ref: torch.Tensor, data_range: float | None = None, *, layout: Layout = "BCFHW",
            window_size: int = WINDOW_SIZE) -> dict[str, float]:
    """{"psnr", "ssim", "rel_l2", "data_range"} of x against ref (one shared data range)."""
    _, r64 = _check(x, ref)
    r = _range(r64, data_range)
    return {"psnr": psnr(x, ref, r), "ssim": ssim(x, ref, r, layout=layout, window_size=window_size),
            "rel_l2": rel_l2(x, ref), "data_range": r}


__all__ = ["K1", "K2", "WINDOW_SIGMA", "WINDOW_SIZE", "compare", "gaussian_window", "mse", "psnr", "rel_l2",
           "ssim", "ssim_map", "to_frames"]
