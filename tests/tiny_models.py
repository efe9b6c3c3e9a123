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


def tiny_mini_vdit(size: tuple[int, int, int], steps: int, conditions: int = 2,
                   silenced: tuple[int, int] | None = None):
    """A two-block mini-vdit with random weights (gates opened so attention matters) as a ModelSpec
    with its sampler: ``conditions`` training conditions from noise seeds 0, 1, …, ``steps`` Euler
    steps at ``size`` pixels. ``silenced`` = (layer, head): that head's columns of its block's output
    projection are zero, so nothing it computes reaches the output."""
    from attnsearch.models import ModelSpec
    from attnsearch.models.mini_vdit import MiniVDiT, MiniVDiTConfig, make_noise, sample, to_frames, train_conditions

    torch.manual_seed(0)
    model = MiniVDiT(MiniVDiTConfig.tiny()).eval()
    with torch.no_grad():  # adaLN-zero starts with every gate closed: open them so attention matters
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
        if silenced is not None:
            layer, head = silenced
            hd = model.config.head_dim
            model.blocks[layer].proj.weight[:, head * hd:(head + 1) * hd] = 0.0
    conds = train_conditions(conditions, seed=0)
    noise = torch.cat([make_noise(i, *size) for i in range(conditions)])
    inputs: list = []
    sample(model, conds, noise, steps=steps,
           on_step=lambda i, x, t, c: inputs.append((x.clone(), t.clone(), c.clone())))

    def trajectories(n: int) -> torch.Tensor:
        return to_frames(sample(model, conds[:n], noise[:n], steps=steps))

    return ModelSpec(name="mini-vdit", model=model, geometry=model.geometry_for(*size), inputs=inputs,
                     fingerprint="test" if silenced is None else "planted", trajectories=trajectories,
                     num_trajectories=conditions, trajectory_range=1.0)
