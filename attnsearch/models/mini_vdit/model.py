"""The mini-vdit network: a small Wan-like video diffusion transformer.

    pixels [B, 3, F, H, W] ──3-D patch embed (1×4×4)──▶ tokens [B, F·H/4·W/4, dim]
        ──blocks × depth──▶ adaLN final layer ──unpatchify──▶ velocity [B, 3, F, H, W]

Each block: self-attention with 3-D rotary position embedding (frame, row, column) and RMS-normed
queries and keys, cross-attention to the four condition tokens, and an MLP; adaLN-zero
modulation from the timestep (one shared projection plus a learned per-block table, as Wan does),
to whose embedding the mean of the condition tokens is added (a pooled condition, as SD3 and Flux
add their pooled text embedding), so clip-wide properties such as the motion direction reach every
token without going through cross-attention.

Besides the rotary (relative) positions, each token gets an absolute position: Fourier features of
its centre in clip coordinates (time τ = frame / (REFERENCE_FRAMES − 1) as the data define it; row
and column as a share of the frame), through a learned projection (as CogVideoX adds a 3-D
sine-cosine embedding). The projection starts random, not at zero: a motion word is useful only
where the network knows positions, and positions only through what the motion word says, so from
zero neither gets a gradient. Without it the network is translation-equivariant near pure noise
and cannot put the object of a motion word where the data have it at a given frame. Space in
shares of the frame and time in the data's own unit keep the embedding meaningful at every
resolution and frame count.
Both attentions call ``torch.nn.functional.scaled_dot_product_attention`` with head_dim 64, so
attnsearch's capture, profiler and runtime see the self-attention calls as layers; the model's
``attnsearch_accept`` tells them to leave the cross-attention alone.

Rotary positions are patch indices, so the weights run at any frame count and resolution that is
a multiple of the patch size.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ...geometry import Geometry
from .data import REFERENCE_FRAMES, SLOTS

#: Where the trained weights ship (fp16 safetensors with the config in its metadata) and their file.
WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
WEIGHTS_FILE = "mini-vdit.safetensors"


def read_weights(path: str | Path) -> tuple[MiniVDiTConfig, dict[str, torch.Tensor], dict[str, str]]:
    """An exported weights file (fp16 safetensors, the config in its metadata): its config, its tensors
    in float32 and its metadata. ValueError naming the file when it is not mini-vdit weights."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            state = {k: f.get_tensor(k).float() for k in f.keys()}
    except Exception as err:  # safetensors raises its own error types for a malformed file
        raise ValueError(f"{path}: not a safetensors file ({err})") from None
    if meta.get("format") != "attnsearch-mini-vdit":
        raise ValueError(f"{path}: not a mini-vdit weights file (metadata format {meta.get('format')!r})")
    return MiniVDiTConfig.from_dict(json.loads(meta["config"])), state, meta


@dataclass(frozen=True)
class MiniVDiTConfig:
    """Architecture of a mini-vdit. ``dim`` = heads × head_dim."""

    dim: int = 256
    depth: int = 6
    head_dim: int = 64
    mlp_ratio: float = 4.0
    patch: tuple[int, int, int] = (1, 4, 4)
    channels: int = 3
    rope_theta: float = 10_000.0
    #: Add the mean of the condition tokens to the timestep embedding (see the module docstring).
    pooled_condition: bool = True
    #: Add Fourier features of each token's absolute clip coordinates (see the module docstring).
    absolute_position: bool = True

    @property
    def heads(self) -> int:
        return self.dim // self.head_dim

    @classmethod
    def tiny(cls) -> MiniVDiTConfig:
        """A two-block, two-head model for fast tests (random weights)."""
        return cls(dim=128, depth=2)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["patch"] = list(self.patch)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> MiniVDiTConfig:
        d = dict(d)
        d["patch"] = tuple(d["patch"])
        # A config without one of these keys describes a model without that part.
        d.setdefault("pooled_condition", False)
        d.setdefault("absolute_position", False)
        return cls(**d)


def _rope_split(head_dim: int) -> tuple[int, int, int]:
    """Channels of a head given to (frame, row, column) rotations, each even (Wan's split)."""
    hw = 2 * (head_dim // 6)
    return head_dim - 2 * hw, hw, hw


def rope_angles(frames: int, rows: int, cols: int, head_dim: int, theta: float, device) -> torch.Tensor:
    """Rotation angles [N, head_dim / 2] of every token (frame-major order) for the 3-D RoPE."""
    parts = []
    for size, n, axis in zip(_rope_split(head_dim), (frames, rows, cols), range(3)):
        freqs = theta ** (-torch.arange(0, size, 2, device=device, dtype=torch.float64) / size)
        pos = torch.arange(n, device=device, dtype=torch.float64)
        ang = torch.outer(pos, freqs)                                  # [n, size/2]
        shape = [1, 1, 1, size // 2]
        shape[axis] = n
        parts.append(ang.view(shape).expand(frames, rows, cols, size // 2))
    return torch.cat(parts, dim=-1).reshape(frames * rows * cols, head_dim // 2).float()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate channel pairs (2i, 2i+1) of ``x`` [B, heads, N, D] by the angles behind cos/sin [N, D/2]
    (or of ``x`` [B, N, heads, D] by cos/sin [N, 1, D/2])."""
    x1, x2 = x.float().unflatten(-1, (-1, 2)).unbind(-1)
    if torch.is_grad_enabled():
        out = torch.stack((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1).flatten(-2)
        return out.type_as(x)
    # Without autograd both halves are written straight into the interleaved result (no stack).
    out = torch.empty(x.shape, dtype=x1.dtype, device=x.device)
    o1, o2 = out.unflatten(-1, (-1, 2)).unbind(-1)
    torch.mul(x1, cos, out=o1).sub_(x2 * sin)
    torch.mul(x1, sin, out=o2).add_(x2 * cos)
    return out.type_as(x)


#: Frequencies (multiples of π per unit of clip coordinate) of the absolute-position features.
POSITION_FREQUENCIES = 8


def position_features(frames: int, rows: int, cols: int, patch: tuple[int, int, int], device) -> torch.Tensor:
    """Fourier features [N, 6 · POSITION_FREQUENCIES] of every token's centre (frame-major order):
    sin and cos of k·π·c for k = 1 … POSITION_FREQUENCIES and each coordinate c of (τ, y, x), with
    τ = frame / (REFERENCE_FRAMES − 1) and y, x as shares of the frame's height and width."""
    pt = patch[0]
    tau = (torch.arange(frames, device=device, dtype=torch.float32) * pt + (pt - 1) / 2) / (REFERENCE_FRAMES - 1)
    y = (torch.arange(rows, device=device, dtype=torch.float32) + 0.5) / rows
    x = (torch.arange(cols, device=device, dtype=torch.float32) + 0.5) / cols
    grid = torch.stack(torch.meshgrid(tau, y, x, indexing="ij"), dim=-1).reshape(-1, 3)        # [N, 3]
    k = torch.arange(1, POSITION_FREQUENCIES + 1, device=device, dtype=torch.float32) * math.pi
    ang = (grid.unsqueeze(-1) * k).flatten(1)                                                     # [N, 3K]
    return torch.cat([torch.sin(ang), torch.cos(ang)], dim=-1)


def timestep_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal embedding of t ∈ [0, 1] (scaled by 1000, as diffusion models do)."""
    half = dim // 2
    freqs = torch.exp(-math.log(10_000.0) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    args = 1000.0 * t.float().view(-1, 1) * freqs.view(1, -1)
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


class Block(nn.Module):
    def __init__(self, cfg: MiniVDiTConfig) -> None:
        super().__init__()
        d, self.heads, self.head_dim = cfg.dim, cfg.heads, cfg.head_dim
        self.norm1 = nn.LayerNorm(d, elementwise_affine=False, eps=1e-6)
        self.qkv = nn.Linear(d, 3 * d)
        self.q_norm = nn.RMSNorm(cfg.head_dim, eps=1e-6)
        self.k_norm = nn.RMSNorm(cfg.head_dim, eps=1e-6)
        self.proj = nn.Linear(d, d)
        self.norm2 = nn.LayerNorm(d, eps=1e-6)
        self.cross_q = nn.Linear(d, d)
        self.cross_kv = nn.Linear(d, 2 * d)
        self.cross_proj = nn.Linear(d, d)
        self.norm3 = nn.LayerNorm(d, elementwise_affine=False, eps=1e-6)
        hidden = int(d * cfg.mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(d, hidden), nn.GELU(approximate="tanh"), nn.Linear(hidden, d))
        # Per-block learned part of the adaLN modulation (shift, scale, gate for attention and MLP).
        self.modulation = nn.Parameter(torch.randn(1, 6, d) / d ** 0.5)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        return x.unflatten(-1, (self.heads, self.head_dim)).transpose(1, 2)

    def forward(self, x: torch.Tensor, t_mod: torch.Tensor, cond: torch.Tensor, cos: torch.Tensor,
                sin: torch.Tensor) -> torch.Tensor:
        shift1, scale1, gate1, shift2, scale2, gate2 = (self.modulation + t_mod).unsqueeze(2).unbind(1)
        h = torch.addcmul(shift1, self.norm1(x), 1 + scale1)
        # Norms and rotations in token-major layout [B, N, heads, head_dim], the attention on its
        # transposed view: the attention's output then comes back token-major, and flattening its
        # heads for the projection is a view, not a copy.
        q, k, v = self.qkv(h).unflatten(-1, (3, self.heads, self.head_dim)).unbind(2)
        cos, sin = cos.unsqueeze(1), sin.unsqueeze(1)
        q = apply_rope(self.q_norm(q), cos, sin).transpose(1, 2)
        k = apply_rope(self.k_norm(k), cos, sin).transpose(1, 2)
        a = F.scaled_dot_product_attention(q, k, v.transpose(1, 2))
        x = torch.addcmul(x, gate1, self.proj(a.transpose(1, 2).flatten(2)))
        ck, cv = self.cross_kv(cond).chunk(2, dim=-1)
        c = F.scaled_dot_product_attention(self._heads(self.cross_q(self.norm2(x))), self._heads(ck), self._heads(cv))
        c = self.cross_proj(c.transpose(1, 2).flatten(2))
        # Without autograd the residual sums accumulate in place: x is this block's own tensor here.
        inplace = not torch.is_grad_enabled()
        x = x.add_(c) if inplace else x + c
        h = torch.addcmul(shift2, self.norm3(x), 1 + scale2)
        m = self._mlp(h)
        return x.addcmul_(gate2, m) if inplace else torch.addcmul(x, gate2, m)

    def _mlp(self, h: torch.Tensor) -> torch.Tensor:
        """``self.mlp(h)``; without autograd the activation overwrites the hidden layer in place
        (the same values, one [B, N, hidden] buffer fewer to allocate and fill)."""
        fc1, act, fc2 = self.mlp
        if torch.is_grad_enabled() or type(act) is not nn.GELU:
            return self.mlp(h)
        return fc2(torch.ops.aten.gelu_(fc1(h), approximate=act.approximate))


class MiniVDiT(nn.Module):
    """A rectified-flow video DiT over pixels: ``forward(x_t, t, cond_tokens) → velocity``.

    Args of forward:
        x: [B, 3, F, H, W] noisy clip (H and W multiples of the patch size).
        t: [B] or scalar flow time in [0, 1] (1 = pure noise).
        cond: [B, 4] condition token ids (0 = null, for classifier-free guidance).

    The velocity target is ``noise − clip`` (x_t = (1 − t)·clip + t·noise).
    """

    def __init__(self, config: MiniVDiTConfig | None = None) -> None:
        super().__init__()
        cfg = self.config_ = config or MiniVDiTConfig()
        if cfg.dim % cfg.head_dim:
            raise ValueError(f"mini-vdit: dim {cfg.dim} is not a multiple of head_dim {cfg.head_dim}")
        d = cfg.dim
        pt, ph, pw = cfg.patch
        self.patch_embed = nn.Conv3d(cfg.channels, d, kernel_size=cfg.patch, stride=cfg.patch)
        self.time_embed = nn.Sequential(nn.Linear(d, d), nn.SiLU(), nn.Linear(d, d))
        self.time_proj = nn.Sequential(nn.SiLU(), nn.Linear(d, 6 * d))
        self.cond_embed = nn.ModuleList(nn.Embedding(len(vocab) + 1, d) for _, vocab in SLOTS)
        self.cond_pos = nn.Parameter(torch.randn(len(SLOTS), d) * 0.02)
        self.cond_mlp = nn.Sequential(nn.LayerNorm(d), nn.Linear(d, d), nn.GELU(approximate="tanh"), nn.Linear(d, d))
        self.cond_pool = nn.Sequential(nn.LayerNorm(d), nn.Linear(d, d)) if cfg.pooled_condition else None
        self.pos_embed = nn.Linear(6 * POSITION_FREQUENCIES, d) if cfg.absolute_position else None
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.depth))
        self.norm_out = nn.LayerNorm(d, elementwise_affine=False, eps=1e-6)
        self.out_modulation = nn.Parameter(torch.randn(1, 2, d) / d ** 0.5)
        self.head = nn.Linear(d, cfg.channels * pt * ph * pw)
        self._init()

    @property
    def config(self) -> MiniVDiTConfig:
        return self.config_

    def _init(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)
        nn.init.zeros_(self.time_proj[-1].weight)      # adaLN-zero: every gate starts closed
        nn.init.zeros_(self.time_proj[-1].bias)
        for blk in self.blocks:
            nn.init.zeros_(blk.cross_proj.weight)
            with torch.no_grad():
                blk.modulation[:, 2].zero_()
                blk.modulation[:, 5].zero_()
        nn.init.zeros_(self.head.weight)

    @staticmethod
    def attnsearch_accept(call) -> bool:
        """Layers are the self-attention calls (as many keys as queries); cross-attention is not."""
        return call.key.shape[-2] == call.query.shape[-2]

    def token_grid(self, frames: int, height: int, width: int) -> tuple[int, int, int]:
        pt, ph, pw = self.config.patch
        if frames % pt or height % ph or width % pw:
            raise ValueError(f"mini-vdit: clip {frames}×{height}×{width} is not a multiple of the patch "
                             f"{pt}×{ph}×{pw}")
        return frames // pt, height // ph, width // pw

    def geometry_for(self, frames: int, height: int, width: int) -> Geometry:
        """The self-attention token layout of a clip of this size (no text tokens: the condition
        enters through cross-attention)."""
        return Geometry(*self.token_grid(frames, height, width))

    def attnsearch_geometry(self, x: torch.Tensor, *args, **kwargs) -> Geometry:
        """The geometry of a forward's self-attention calls, from its arguments: ``apply`` asks
        it, so a plan runs at the clip size the model is called with."""
        return self.geometry_for(*x.shape[2:])

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        cfg = self.config
        b, c, f, h, w = x.shape
        gf, gh, gw = self.token_grid(f, h, w)
        # Token-major memory once here: elementwise results keep their input's layout, so a transposed
        # stream would make every LayerNorm copy it.
        tokens = self.patch_embed(x).flatten(2).transpose(1, 2).contiguous()           # [B, N, d]
        if self.pos_embed is not None:
            pos = position_features(gf, gh, gw, cfg.patch, x.device).to(self.pos_embed.weight.dtype)
            tokens = tokens + self.pos_embed(pos).to(tokens.dtype)
        t = torch.as_tensor(t, device=x.device, dtype=torch.float32).reshape(-1).expand(b)
        ctok = torch.stack([emb(cond[:, i]) for i, emb in enumerate(self.cond_embed)], dim=1) + self.cond_pos
        ctok = self.cond_mlp(ctok)                                                      # [B, 4, d]
        temb = self.time_embed(timestep_embedding(t, cfg.dim).to(tokens.dtype))
        if self.cond_pool is not None:
            temb = temb + self.cond_pool(ctok.mean(dim=1))
        t_mod = self.time_proj(temb).unflatten(1, (6, cfg.dim))                         # [B, 6, d]
        ang = rope_angles(gf, gh, gw, cfg.head_dim, cfg.rope_theta, x.device)
        cos, sin = torch.cos(ang), torch.sin(ang)
        for blk in self.blocks:
            tokens = blk(tokens, t_mod, ctok, cos, sin)
        shift, scale = (self.out_modulation + temb.unsqueeze(1)).unbind(1)
        out = self.head(self.norm_out(tokens) * (1 + scale.unsqueeze(1)) + shift.unsqueeze(1))
        pt, ph, pw = cfg.patch
        out = out.view(b, gf, gh, gw, c, pt, ph, pw).permute(0, 4, 1, 5, 2, 6, 3, 7)
        return out.reshape(b, c, f, h, w)
