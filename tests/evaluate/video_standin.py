"""A tiny video denoiser whose attention has known structure, and its Generator (for the evaluate tests).

Tokens are the pixels of a [1, 3, F, H, W] video. Every layer has two heads: head 0 attends
almost only to frame 0's tokens (its queries and frame 0's keys share a large common component,
so the softmax mass off frame 0 is ~F·e^-14), head 1 is plain random attention. A plan keeping
frame 0's key blocks for head 0 is therefore nearly exact, one keeping other blocks is not.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from attnsearch import Geometry
from attnsearch.evaluate import EvaluateError, Video

FRAMES, SIZE, HEADS, HEAD_DIM, LAYERS = 4, 16, 2, 16, 2
GEOMETRY = Geometry(FRAMES, SIZE, SIZE)
SINK = 8.0  # |common component|: score of a frame-0 key ≈ SINK² / sqrt(HEAD_DIM) = 16 above the rest


class StandIn(nn.Module):
    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        dim = HEADS * HEAD_DIM
        self.embed = nn.Parameter(torch.randn(4, dim, generator=g) / 2)            # 3 channels + time
        self.pos = nn.Parameter(torch.randn(GEOMETRY.num_tokens, dim, generator=g) / 4)
        self.qkv = nn.ParameterList([nn.Parameter(torch.randn(dim, 3 * dim, generator=g) / dim ** 0.5)
                                     for _ in range(LAYERS)])
        self.proj = nn.ParameterList([nn.Parameter(torch.randn(dim, dim, generator=g) / dim ** 0.5)
                                      for _ in range(LAYERS)])
        self.out = nn.Parameter(torch.randn(dim, 3, generator=g) / dim ** 0.5)
        u = torch.randn(HEAD_DIM, generator=g)
        self.register_buffer("sink", SINK * u / u.norm())
        self.register_buffer("frame0", (torch.arange(GEOMETRY.num_tokens) < SIZE * SIZE).float())

    def forward(self, x: torch.Tensor, t: float) -> torch.Tensor:
        b = x.shape[0]
        tokens = x.flatten(2).transpose(1, 2)                                      # [B, N, 3]
        h = torch.cat([tokens, torch.full_like(tokens[..., :1], t)], -1) @ self.embed + self.pos
        for qkv, proj in zip(self.qkv, self.proj):
            q, k, v = (h @ qkv).view(b, -1, 3, HEADS, HEAD_DIM).permute(2, 0, 3, 1, 4)
            q, k = q.clone(), k.clone()
            q[:, 0] += self.sink
            k[:, 0] += self.frame0[:, None] * self.sink
            a = F.scaled_dot_product_attention(q, k, v)
            h = h + a.transpose(1, 2).reshape(b, -1, HEADS * HEAD_DIM) @ proj
        return (h @ self.out).transpose(1, 2).reshape_as(x)


class StandInGenerator:
    """The Generator protocol over StandIn: Euler steps from seeded noise, one forward per step."""

    steps_by_timestep = False

    def __init__(self, model: StandIn | None = None) -> None:
        self.name = "stand-in"
        self.transformer = model or StandIn()

    def describe(self) -> dict:
        return {"name": self.name, "geometry": GEOMETRY.to_dict()}

    def fit(self, geometry: Geometry) -> None:
        if geometry != GEOMETRY:
            raise EvaluateError(f"-o frames/height/width: the stand-in attends over {GEOMETRY}, the plan {geometry}")

    def generate(self, seed: int, steps: int) -> Video:
        g = torch.Generator().manual_seed(seed)
        x = torch.randn(1, 3, FRAMES, SIZE, SIZE, generator=g)
        with torch.no_grad():
            for i in range(steps):
                x = x + self.transformer(x, 1 - i / steps) / steps
        return Video(latents=x.clone(), frames=((x.clamp(-1, 1) + 1) / 2), condition=f"noise {seed}")
