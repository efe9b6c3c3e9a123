"""Procedural video clips for mini-vdit, rendered on the fly in torch (no data set to download).

A clip is one coloured object moving in the direction its condition names over a low-saturation
textured background that pans and zooms, with grey distractor shapes that move, bounce off the
walls, rotate and pass in front of or behind the object. Space is in normalised coordinates
(x, y ∈ [0, 1]), so a condition renders at any resolution. Time is in frames: τ = frame /
(REFERENCE_FRAMES − 1), so every speed is per frame and a clip of F frames is the first F frames of
the same motion whatever F is. That matches what the network can see: rotary positions are
relative, so it cannot tell a clip's length from inside it, and a speed defined per clip would make
the per-frame motion of 8- and 16-frame clips contradict each other.

The object enters from the side it moves away from (a "moving right" object starts near the left
edge; ENTRY) and starts anywhere across its motion. So the motion word says where the object is
at every frame, as the colour word says what hue it has: swapping "right" for "left" moves a
condition's mean clip (what a denoiser predicts from pure noise) about as much as swapping two
colours does. With the start anywhere along the path it moved it about six times less than a
colour word (mean square over 8 × 32 × 32 clips), too weak a signal for a small network to learn
which way an object goes rather than only that it moves (the model card). Backgrounds
are darker than the object on average for the same reason: the six hues average to a grey, and on a
background of that grey an object's place would change the colour-averaged mean clip hardly at all,
so that learning where a motion word puts the object would first need the colour of the object.

Condition vocabulary (one token per slot; index 0 of every slot is the null token that
classifier-free guidance trains with):

    kind        circle, square, triangle, ring, cross
    colour      red, green, blue, yellow, magenta, cyan      (saturated: the only saturated pixels)
    motion      left, right, up, down                         (object centre travels 0.45-0.6 of the frame
                                                                   over REFERENCE_FRAMES frames,
                                                                   entering from the opposite side)
    background  stripes, checker, waves, gradient             (saturation ≤ 0.2, pans and zooms)

Pixels are in [-1, 1], layout [batch, 3, frames, height, width].
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

KINDS = ("circle", "square", "triangle", "ring", "cross")
COLOURS = ("red", "green", "blue", "yellow", "magenta", "cyan")
MOTIONS = ("left", "right", "up", "down")
BACKGROUNDS = ("stripes", "checker", "waves", "gradient")
#: The condition slots in token order; each slot's vocabulary (index 0 is reserved for "null").
SLOTS = (("kind", KINDS), ("colour", COLOURS), ("motion", MOTIONS), ("background", BACKGROUNDS))

#: RGB in [0, 1] of each colour word: pure, saturated hues (HSV saturation 1).
PALETTE = {
    "red": (0.95, 0.1, 0.1), "green": (0.1, 0.85, 0.15), "blue": (0.15, 0.25, 0.95),
    "yellow": (0.95, 0.9, 0.1), "magenta": (0.9, 0.1, 0.9), "cyan": (0.1, 0.9, 0.9),
}
#: Unit displacement of the object's centre over the clip for each motion word (y grows downwards).
DIRECTIONS = {"left": (-1.0, 0.0), "right": (1.0, 0.0), "up": (0.0, -1.0), "down": (0.0, 1.0)}

#: Frames over which the object travels its full distance: the unit of clip time τ.
REFERENCE_FRAMES = 16
#: Along its motion an object starts within this share of its feasible range, on the side it moves
#: away from, so the motion word says where the object is at every frame (see the module docstring).
ENTRY = 0.1

#: Number of distinct conditions.
NUM_CONDITIONS = math.prod(len(v) for _, v in SLOTS)
#: Conditions never rendered for training nor used by the search: the held-out evaluation set.
NUM_HELDOUT = 64


@dataclass(frozen=True)
class Condition:
    """One text-like condition: a word per slot."""

    kind: str
    colour: str
    motion: str
    background: str

    def __post_init__(self) -> None:
        for slot, vocab in SLOTS:
            if getattr(self, slot) not in vocab:
                raise ValueError(f"condition {slot}: {getattr(self, slot)!r} is not one of {', '.join(vocab)}")

    def tokens(self) -> list[int]:
        """Token ids (1-based inside each slot; 0 is the null token)."""
        return [vocab.index(getattr(self, slot)) + 1 for slot, vocab in SLOTS]

    @property
    def index(self) -> int:
        """Position of this condition in the enumeration of all conditions."""
        i = 0
        for slot, vocab in SLOTS:
            i = i * len(vocab) + vocab.index(getattr(self, slot))
        return i

    @classmethod
    def from_index(cls, index: int) -> Condition:
        words = []
        for slot, vocab in reversed(SLOTS):
            index, r = divmod(index, len(vocab))
            words.append(vocab[r])
        return cls(*reversed(words))

    def __str__(self) -> str:
        return f"{self.colour} {self.kind} moving {self.motion} over {self.background}"


def _heldout_indices() -> list[int]:
    g = torch.Generator().manual_seed(20_241_205)
    return sorted(torch.randperm(NUM_CONDITIONS, generator=g)[:NUM_HELDOUT].tolist())


HELDOUT_INDICES = tuple(_heldout_indices())
TRAIN_INDICES = tuple(i for i in range(NUM_CONDITIONS) if i not in set(HELDOUT_INDICES))


def heldout_conditions(n: int = NUM_HELDOUT) -> list[Condition]:
    """The first ``n`` held-out conditions (never trained on, never used by the search)."""
    if not 1 <= n <= NUM_HELDOUT:
        raise ValueError(f"heldout_conditions: n must be in [1, {NUM_HELDOUT}], got {n}")
    return [Condition.from_index(i) for i in HELDOUT_INDICES[:n]]


def train_conditions(n: int, seed: int = 0) -> list[Condition]:
    """``n`` conditions drawn (with a seed) from the training set: what profiling and search use."""
    g = torch.Generator().manual_seed(seed)
    pick = torch.randint(len(TRAIN_INDICES), (n,), generator=g).tolist()
    return [Condition.from_index(TRAIN_INDICES[i]) for i in pick]


def condition_tokens(conditions: list[Condition], device: torch.device | str = "cpu") -> torch.Tensor:
    """[batch, 4] int64 token ids."""
    return torch.tensor([c.tokens() for c in conditions], dtype=torch.long, device=device)


# -- rendering --------------------------------------------------------------------------------------


def _shape_inside(kind: torch.Tensor, x: torch.Tensor, y: torch.Tensor, radius: torch.Tensor,
                  edge: float) -> torch.Tensor:
    """Soft coverage in [0, 1] of shape ``kind`` (index into KINDS) centred at the origin.

    ``x``, ``y``: coordinates relative to the centre, already rotated into the shape's frame;
    ``radius``: the shape's size; ``edge``: anti-aliasing width (about one pixel).
    """
    r = torch.sqrt(x * x + y * y)
    circle = radius - r
    square = radius * 0.85 - torch.maximum(x.abs(), y.abs())
    # Equilateral triangle pointing up (y grows downwards), inradius radius/2: the minimum of the
    # distances to its three edges, each edge's outward normal 120° from the next.
    k = math.sqrt(3.0) / 2
    a = radius * 0.5
    tri = torch.minimum(torch.minimum(a - y, a - (k * x - 0.5 * y)), a - (-k * x - 0.5 * y))
    ring = torch.minimum(radius - r, r - radius * 0.55)
    arm = radius * 0.32
    cross = torch.maximum(torch.minimum(radius - x.abs(), arm - y.abs()), torch.minimum(radius - y.abs(), arm - x.abs()))
    sdf = torch.stack([circle, square, tri, ring, cross], dim=0)          # [5, ...]
    idx = kind.reshape(1, *kind.shape, *([1] * (sdf.dim() - 1 - kind.dim())))
    chosen = torch.gather(sdf, 0, idx.expand(1, *sdf.shape[1:]))[0]
    return torch.clamp(chosen / edge + 0.5, 0.0, 1.0)


def _triangle_wave(p: torch.Tensor) -> torch.Tensor:
    """Position in [0, 1] of a point moving at unit speed that bounces between 0 and 1."""
    p = torch.remainder(p, 2.0)
    return torch.where(p > 1.0, 2.0 - p, p)


def _background(kind: torch.Tensor, u: torch.Tensor, v: torch.Tensor, params: torch.Tensor) -> torch.Tensor:
    """Texture value in [0, 1] of background ``kind`` at texture coordinates (u, v)."""
    freq, angle, phase = params[..., 0], params[..., 1], params[..., 2]
    along = u * torch.cos(angle) + v * torch.sin(angle)
    stripes = 0.5 + 0.5 * torch.sin(2 * math.pi * freq * along + phase)
    checker = 0.5 + 0.5 * torch.tanh(4.0 * torch.sin(math.pi * freq * u + phase) * torch.sin(math.pi * freq * v))
    waves = 0.5 + 0.25 * (torch.sin(2 * math.pi * freq * 0.7 * (u + 0.3 * torch.sin(3 * v + phase)))
                          + torch.sin(2 * math.pi * freq * 0.55 * (v + 0.3 * torch.sin(3 * u))))
    gradient = torch.clamp(0.5 + 0.6 * (along - 0.5) + 0.08 * torch.sin(2 * math.pi * freq * 2 * u), 0.0, 1.0)
    tex = torch.stack([stripes, checker, waves, gradient], dim=0)
    idx = kind.reshape(1, *kind.shape, *([1] * (tex.dim() - 1 - kind.dim())))
    return torch.gather(tex, 0, idx.expand(1, *tex.shape[1:]))[0]


def render(conditions: torch.Tensor, frames: int, height: int, width: int, generator: torch.Generator | None = None,
           device: torch.device | str | None = None, distractors: int = 2) -> torch.Tensor:
    """Render one clip per condition row.

    Args:
        conditions: [batch, 4] token ids (1-based per slot, as :meth:`Condition.tokens`; no nulls).
        frames, height, width: clip size in pixels.
        generator: randomness of everything the condition leaves free (positions, speeds,
            rotation, texture, distractors).
        distractors: grey shapes per clip (each present with probability 0.75).

    Returns:
        [batch, 3, frames, height, width] float32 in [-1, 1].
    """
    device = torch.device(device) if device is not None else conditions.device
    cond = conditions.to(device).long() - 1
    if (cond < 0).any():
        raise ValueError("render: null tokens (0) cannot be rendered")
    b = cond.shape[0]

    def rand(*shape: int) -> torch.Tensor:
        return torch.rand(*shape, generator=generator, device="cpu" if generator is None else generator.device).to(device)

    tau = (torch.arange(frames, device=device, dtype=torch.float32) / (REFERENCE_FRAMES - 1)).view(1, frames)
    ys = (torch.arange(height, device=device, dtype=torch.float32) + 0.5) / height
    xs = (torch.arange(width, device=device, dtype=torch.float32) + 0.5) / width
    aspect = width / height
    yy = ys.view(1, 1, height, 1)
    xx = xs.view(1, 1, 1, width) * aspect
    edge = 1.5 / height

    # Background: a low-saturation tinted texture that pans and zooms.
    bg_kind = cond[:, 3].view(b, 1, 1, 1)
    freq = 2.0 + 3.0 * rand(b)
    angle = math.pi * rand(b)
    phase = 2 * math.pi * rand(b)
    params = torch.stack([freq, angle, phase], dim=-1).view(b, 1, 1, 1, 3)
    pan = (rand(b, 2) - 0.5) * 0.6
    zoom = 1.0 + (rand(b) - 0.5) * 0.5
    z = 1.0 + (zoom.view(b, 1) - 1.0) * tau                                          # [B, F]
    u = (xx - 0.5 * aspect) / z.view(b, frames, 1, 1) + pan[:, 0].view(b, 1, 1, 1) * tau.view(1, frames, 1, 1)
    v = (yy - 0.5) / z.view(b, frames, 1, 1) + pan[:, 1].view(b, 1, 1, 1) * tau.view(1, frames, 1, 1)
    tex = _background(bg_kind.expand(b, frames, height, width), u, v, params.expand(b, frames, height, width, 3))
    # Darker than the object on average (its six hues have mean value 0.52), so where the object is
    # shows in the mean clip whatever its colour (the module docstring says why that matters).
    level = 0.1 + 0.3 * rand(b)
    contrast = 0.2 + 0.2 * rand(b)
    grey = level.view(b, 1, 1, 1) + contrast.view(b, 1, 1, 1) * (tex - 0.5)       # [B, F, H, W]
    tint = rand(b, 3)
    tint = tint / tint.max(dim=1, keepdim=True).values
    # Saturation of the background stays below 0.2: mix 15% of a tint into the grey level.
    rgb = grey.unsqueeze(1) * (0.85 + 0.15 * tint.view(b, 3, 1, 1, 1))                # [B, 3, F, H, W]

    def sprite(kind: torch.Tensor, cx: torch.Tensor, cy: torch.Tensor, radius: torch.Tensor,
               rot: torch.Tensor) -> torch.Tensor:
        dx = xx - cx.view(b, frames, 1, 1) * aspect
        dy = yy - cy.view(b, frames, 1, 1)
        c, s = torch.cos(rot).view(b, frames, 1, 1), torch.sin(rot).view(b, frames, 1, 1)
        rx, ry = c * dx + s * dy, -s * dx + c * dy
        return _shape_inside(kind.view(b, 1, 1, 1).expand(b, frames, height, width), rx, ry,
                             radius.view(b, frames, 1, 1), edge)

    # The conditioned object.
    direction = torch.tensor([DIRECTIONS[m] for m in MOTIONS], device=device)[cond[:, 2]]   # [B, 2]
    radius0 = 0.09 + 0.05 * rand(b)
    margin = radius0 + 0.03
    span = 1.0 - 2 * margin
    # Distance covered by the clip's last frame; a clip longer than REFERENCE_FRAMES keeps the
    # per-frame speed until the path would leave the frame, then slows to fit.
    speed = 0.45 + 0.15 * rand(b)
    travel = torch.minimum(speed * tau[0, -1], span)
    tau_rel = tau / tau[0, -1].clamp_min(1e-6)                                      # [1, F] in [0, 1]
    # Start far enough back that the whole path stays inside the frame: the start lies in [lo, hi].
    lo = margin.view(b, 1) + torch.clamp(-direction * travel.view(b, 1), min=0.0)
    hi = (1.0 - margin).view(b, 1) - torch.clamp(direction * travel.view(b, 1), min=0.0)
    # Along its motion the object enters from the side it moves away from (the first ENTRY share of
    # [lo, hi]); across its motion it starts anywhere.
    u = rand(b, 2)
    share = torch.where(direction > 0, ENTRY * u, torch.where(direction < 0, 1.0 - ENTRY * u, u))
    start = lo + share * (hi - lo)
    cx = start[:, 0:1] + direction[:, 0:1] * travel.view(b, 1) * tau_rel
    cy = start[:, 1:2] + direction[:, 1:2] * travel.view(b, 1) * tau_rel
    radius = radius0.view(b, 1) * (1.0 + 0.15 * torch.sin(2 * math.pi * (tau * (0.5 + rand(b, 1)) + rand(b, 1))))
    rot = (rand(b, 1) * 2 * math.pi) + (rand(b, 1) - 0.5) * 4.0 * tau
    obj_alpha = sprite(cond[:, 0], cx, cy, radius, rot).unsqueeze(1)                   # [B, 1, F, H, W]
    colour = torch.tensor([PALETTE[c] for c in COLOURS], device=device)[cond[:, 1]]  # [B, 3]
    shade = 0.85 + 0.15 * rand(b)
    obj_rgb = (colour * shade.view(b, 1)).view(b, 3, 1, 1, 1)

    in_front = rand(b, distractors) < 0.5
    # Distractors behind the object first, then the object, then those in front.
    layers: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
    for d in range(distractors):
        present = (rand(b) < 0.75).float().view(b, 1, 1, 1, 1)
        kind = torch.randint(len(KINDS), (b,), generator=generator,
                             device="cpu" if generator is None else generator.device).to(device)
        vel = (rand(b, 2) - 0.5) * 1.2
        p0 = rand(b, 2)
        r = 0.06 + 0.05 * rand(b)
        m = r + 0.01
        dcx = m.view(b, 1) + _triangle_wave(p0[:, 0:1] + vel[:, 0:1] * tau) * (1 - 2 * m).view(b, 1)
        dcy = m.view(b, 1) + _triangle_wave(p0[:, 1:2] + vel[:, 1:2] * tau) * (1 - 2 * m).view(b, 1)
        drot = rand(b, 1) * 2 * math.pi + (rand(b, 1) - 0.5) * 6.0 * tau
        alpha = sprite(kind, dcx, dcy, r.view(b, 1).expand(b, frames), drot).unsqueeze(1) * present
        value = torch.where(rand(b) < 0.5, 0.08 + 0.1 * rand(b), 0.8 + 0.15 * rand(b)).view(b, 1, 1, 1, 1)
        layers.append((alpha, value.expand(b, 3, 1, 1, 1), in_front[:, d]))
    for alpha, value, front in layers:
        a = alpha * (~front).float().view(b, 1, 1, 1, 1)
        rgb = rgb * (1 - a) + value * a
    rgb = rgb * (1 - obj_alpha) + obj_rgb * obj_alpha
    for alpha, value, front in layers:
        a = alpha * front.float().view(b, 1, 1, 1, 1)
        rgb = rgb * (1 - a) + value * a
    return (rgb.clamp(0.0, 1.0) * 2.0 - 1.0).contiguous()


def random_batch(batch: int, frames: int, height: int, width: int, generator: torch.Generator,
                 device: torch.device | str) -> tuple[torch.Tensor, torch.Tensor]:
    """A training batch: (clips [B, 3, F, H, W], condition tokens [B, 4]) from the training conditions."""
    pick = torch.randint(len(TRAIN_INDICES), (batch,), generator=generator, device=generator.device)
    train = torch.tensor(TRAIN_INDICES, device=generator.device)[pick].cpu().tolist()
    tokens = condition_tokens([Condition.from_index(i) for i in train], device=device)
    return render(tokens, frames, height, width, generator=generator, device=device), tokens
