"""A tiny two-layer attention model for CLI tests (loaded as ``tests/tiny_models.py:tiny``)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from attnsearch import Geometry


class TinyAttention(torch.nn.Module):
    def __init__(self, dim: int = 32, heads: int = 2, layers: int = 2) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = torch.nn.ModuleList(torch.nn.Linear(dim, 3 * dim) for _ in range(layers))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        for proj in self.qkv:
            q, k, v = proj(x).view(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
            x = x + F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, n, c)
        return x


def tiny(steps: int = 2, seed: int = 0):
    torch.manual_seed(seed)
    geom = Geometry(frames=2, height=6, width=8, text_tokens=4, text_position="prefix")
    inputs = [torch.randn(1, geom.num_tokens, 32) for _ in range(steps)]
    return TinyAttention(), inputs, geom
