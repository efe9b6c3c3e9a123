"""Rectified-flow sampling for mini-vdit: a deterministic Euler sampler with classifier-free guidance.

x_t = (1 − t)·clip + t·noise, and the model predicts the velocity v = noise − clip, so one Euler
step from t to t' < t is x ← x + (t' − t)·v. The time grid is shifted towards high noise
(t ↦ s·t / (1 + (s − 1)·t), s = ``SHIFT``), as Wan and SD3 sample.

Classifier-free guidance runs the conditional and the null-condition branch as one batch, so every
sampling step is exactly one model forward: under ``attnsearch.apply`` step n of the plan is
sampler step n.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from .data import Condition, condition_tokens
from .model import MiniVDiT

#: Time-shift of the sampling grid.
SHIFT = 3.0
#: Default number of sampling steps and guidance scale.
DEFAULT_STEPS = 20
DEFAULT_GUIDANCE = 4.0


def shift_time(t: torch.Tensor, shift: float = SHIFT) -> torch.Tensor:
    """t ↦ s·t / (1 + (s − 1)·t), towards high noise for s > 1 (the identity at s = 1): the map of
    the sampling grid, and of training's flow times under ``train --time-shift``."""
    return shift * t / (1 + (shift - 1) * t)


def time_grid(steps: int, shift: float = SHIFT) -> torch.Tensor:
    """The ``steps + 1`` flow times from 1 (noise) down to 0 (clip)."""
    if not isinstance(steps, int) or isinstance(steps, bool) or steps < 1:
        raise ValueError(f"steps must be an integer ≥ 1, got {steps!r}")
    return shift_time(torch.linspace(1.0, 0.0, steps + 1, dtype=torch.float64), shift).float()


def make_noise(seed: int, frames: int = 16, height: int = 64, width: int = 64, channels: int = 3) -> torch.Tensor:
    """The starting noise of one video: [1, channels, frames, height, width] float32 on the CPU,
    a pure function of ``seed`` (the same on every machine)."""
    g = torch.Generator().manual_seed(int(seed))
    return torch.randn(1, channels, frames, height, width, generator=g)


def to_frames(x: torch.Tensor) -> torch.Tensor:
    """Final latents (pixels in [-1, 1]) → frames in [0, 1]."""
    return ((x.float() + 1.0) / 2.0).clamp(0.0, 1.0)


@torch.no_grad()
def sample(model: MiniVDiT, conditions: Sequence[Condition] | torch.Tensor, noise: torch.Tensor,
           steps: int = DEFAULT_STEPS, guidance: float = DEFAULT_GUIDANCE,
           on_step: Callable[[int, torch.Tensor, torch.Tensor, torch.Tensor], None] | None = None) -> torch.Tensor:
    """Generate clips from ``noise`` [B, 3, F, H, W] under ``conditions`` (B of them).

    Deterministic: the same model, conditions, noise and steps give the same result. Runs on the
    model's device and dtype; returns the final latents [B, 3, F, H, W] in float32.

    ``on_step(step, x, t, cond_tokens)`` (optional) sees each forward's inputs before it runs
    (what profiling records as a step's input).
    """
    if not isinstance(guidance, (int, float)) or not guidance >= 0:
        raise ValueError(f"guidance must be a number ≥ 0, got {guidance!r}")
    param = next(model.parameters())
    device, dtype = param.device, param.dtype
    tokens = conditions if isinstance(conditions, torch.Tensor) else condition_tokens(list(conditions))
    tokens = tokens.to(device)
    if noise.dim() != 5 or noise.shape[0] != tokens.shape[0]:
        raise ValueError(f"noise: expected [{tokens.shape[0]}, 3, F, H, W], got {tuple(noise.shape)}")
    x = noise.to(device=device, dtype=torch.float32)
    both = torch.cat([tokens, torch.zeros_like(tokens)]) if guidance != 1.0 else tokens
    grid = time_grid(steps)
    for i in range(steps):
        t, t_next = float(grid[i]), float(grid[i + 1])
        xin = torch.cat([x, x]) if guidance != 1.0 else x
        tt = torch.full((xin.shape[0],), t, device=device)
        if on_step is not None:
            on_step(i, xin, tt, both)
        v = model(xin.to(dtype), tt, both).float()
        if guidance != 1.0:
            v_cond, v_null = v.chunk(2)
            v = v_null + guidance * (v_cond - v_null)
        x = x + (t_next - t) * v
    return x
