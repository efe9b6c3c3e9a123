"""Read a clip's object colour and motion direction back from its pixels.

The data make this a matter of pixel statistics: the conditioned object is the only saturated
thing in a clip (backgrounds have HSV saturation ≤ 0.2, distractors are grey). Per frame, the
saturated pixels are the object; their mean colour names the colour word (nearest palette hue) and
the drift of their centroid from the first third of the clip to the last third names the motion.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .data import COLOURS, DIRECTIONS, MOTIONS, PALETTE, Condition

#: A pixel belongs to the object when its saturation and value exceed these.
MIN_SATURATION = 0.5
MIN_VALUE = 0.3
#: Fewest object pixels a frame needs to give a centroid (as a share of the frame).
MIN_AREA = 0.002
#: Smallest centroid drift (share of the frame side) that names a direction.
MIN_DRIFT = 0.08


@dataclass(frozen=True)
class Reading:
    """What the checker sees in one clip (``None`` where it cannot tell)."""

    colour: str | None
    motion: str | None

    def matches(self, condition: Condition) -> bool:
        return self.colour == condition.colour and self.motion == condition.motion


def _hue(rgb: torch.Tensor) -> torch.Tensor:
    """Hue angle in radians of [..., 3] RGB (via the opponent-colour plane)."""
    r, g, b = rgb.unbind(-1)
    return torch.atan2((3 ** 0.5) * (g - b), 2 * r - g - b)


def read_clip(frames: torch.Tensor) -> Reading:
    """Read one clip [3, F, H, W] with values in [0, 1]."""
    if frames.dim() != 4 or frames.shape[0] != 3:
        raise ValueError(f"read_clip: expected [3, F, H, W], got {tuple(frames.shape)}")
    x = frames.float().clamp(0, 1)
    mx, mn = x.max(dim=0).values, x.min(dim=0).values
    sat = (mx - mn) / mx.clamp_min(1e-6)
    mask = (sat > MIN_SATURATION) & (mx > MIN_VALUE)                  # [F, H, W]
    f, h, w = mask.shape
    if mask.sum() < MIN_AREA * h * w * f:
        return Reading(None, None)
    mean_rgb = x.permute(1, 2, 3, 0)[mask].mean(dim=0)
    hue = _hue(mean_rgb)
    palette = torch.tensor([PALETTE[c] for c in COLOURS])
    dist = torch.remainder(_hue(palette) - hue + torch.pi, 2 * torch.pi) - torch.pi
    colour = COLOURS[int(dist.abs().argmin())]

    area = mask.flatten(1).sum(dim=1).float()                          # [F]
    valid = area >= MIN_AREA * h * w
    ys = (torch.arange(h, dtype=torch.float32) + 0.5) / h
    xs = (torch.arange(w, dtype=torch.float32) + 0.5) / w
    cy = (mask.float() * ys.view(1, h, 1)).flatten(1).sum(1) / area.clamp_min(1)
    cx = (mask.float() * xs.view(1, 1, w)).flatten(1).sum(1) / area.clamp_min(1)
    third = max(1, f // 3)
    first, last = valid[:third], valid[-third:]
    if not first.any() or not last.any():
        return Reading(colour, None)
    dx = cx[-third:][last].mean() - cx[:third][first].mean()
    dy = cy[-third:][last].mean() - cy[:third][first].mean()
    drift = torch.stack([dx, dy])
    if drift.abs().max() < MIN_DRIFT:
        return Reading(colour, None)
    units = torch.tensor([DIRECTIONS[m] for m in MOTIONS])
    motion = MOTIONS[int((units @ drift).argmax())]
    return Reading(colour, motion)


def condition_accuracy(frames: torch.Tensor, conditions: list[Condition]) -> float:
    """Share of clips [B, 3, F, H, W] (values in [0, 1]) whose colour and motion both match."""
    if frames.shape[0] != len(conditions):
        raise ValueError(f"condition_accuracy: {frames.shape[0]} clips for {len(conditions)} conditions")
    hits = sum(read_clip(clip).matches(c) for clip, c in zip(frames, conditions))
    return hits / len(conditions)
