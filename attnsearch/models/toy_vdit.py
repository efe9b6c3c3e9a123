"""toy-vdit: a small video DiT whose heads carry planted, known sparse-attention patterns.

The embedded default model. A DiT over a latent video (patch embedding, adaLN-modulated
transformer blocks driven by a timestep embedding, noise-prediction head), 6 layers × 8 heads,
head_dim 64, default geometry 8 frames × 16 × 16 (N = 2048), optional text tokens. Pure CPU,
deterministic by ``seed``; ``steps`` inputs form a fake denoising loop (the same clean latent mixed
with fixed noise at decreasing noise levels, flow-matching style, plus the timestep).

How the patterns are planted
----------------------------
Each head's query and key have two parts: ``content`` channels, a learned-style projection of
the hidden state as in any transformer, and ``planted`` channels, fixed buffers computed from each
token's position (frame f, spatial index p = y·W + x, video index v = f·S + p). Attention runs
through ``F.scaled_dot_product_attention`` on the concatenation, so the logit of query i and key j
is content(i, j) + Φq(i)·Φk(j); nothing overrides attention. The planted features are built so
that Φq(i)·Φk(j) is exactly a chosen logit kernel L(i, j) (the q side is pre-multiplied by √D to
cancel SDPA's scale), and the content part is scaled small (logit std ≈ 0.3) so the kernel
dominates. Three exact low-rank forms cover every family:

* ``video quadratic`` — L = −(v_i − v_j)² / 2σ² with q = [1, v, v²], k = [−cv², 2cv, −c], c =
  1/2σ² (v centred for float32 accuracy): a Gaussian band in video order. **diagonal(rows)**:
  σ = w / 2.1 for w = rows·W, so the block-rounded band of ``rows`` holds ≥ 98% of the mass while
  the next-narrower candidate (one block fewer each side) misses > 10%.
* ``frame × spatial`` — L = A[f_i, f_j] − Bm[f_i, f_j]·(p_i − p_j)² for any F × F matrices A, Bm,
  via q = onehot(f_i) ⊗ [1, p, p²] and k = Σ_a … (3F channels). A gives each frame pair a log
  weight (−30: never), Bm the spatial sharpness on that pair.
  **multi_diagonal(rows, frames=k)**: A = 0, Bm = 1/2σ² (σ = rows·W / 2.1) for |f_i − f_j| ≤ k,
  A = −30 beyond: the same spatial place in every frame within reach, equal mass per frame —
  no decay with frame distance, so energy_decay never covers it cheaply.
  **energy_decay(decay, sink)** follows Radial Attention's own mask at B = 64: the own frame is
  attended uniformly (Bm = 0); at frame distance d ≥ 1 the band half-width is c = decay·S/2^⌊log2 d⌋,
  Bm = 1/2(c/2.1)²; when c < 64 only every ceil(64/c)-th frame distance is attended (as the mask
  keeps); A makes frame distance d carry ρ^d (ρ = 0.5) of the own frame's mass. A uniform own frame
  is what no diagonal or multi_diagonal band covers; the cross-frame mass is what a narrower decay
  misses. ``sink`` adds frame 0, attended uniformly with 0.3 of the own frame's mass.
* ``key bias`` — L = β·[j is a sink token] (β = 12): **vertical_stripe(key_blocks)**: 4 sink tokens
  per stripe, each group inside one block at both block sizes, take ≥ 98% of every query's mass.

**dense** heads have no planted channels and a stronger content part (logit std ≈ 1): diffuse
attention that no candidate below 75% density covers. Text tokens (when ``text_tokens`` > 0) sit
at logit −4 for every video query; text queries see only content. The ground truth (one row per
layer and head: pattern, params as canonical JSON) is stated at block size 64, which the
stripes' key_blocks and energy_decay's every-k-th-frame rule depend on. ``planted_ground_truth(g,
128)`` recomputes the stripes' key_blocks exactly; the other params are token-level and unchanged,
but the energy_decay heads' frame skipping still follows B = 64.

float32 only: the quadratic forms cancel terms of up to ~10⁴, fine in float32 (error ~1e-3 in a
logit) but not in bf16/fp16 or TF32 matmuls.

Run ``python -m attnsearch.models.toy_vdit`` to print the ground-truth table.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..geometry import Geometry

BLOCK_SIZE = 64          # the block size the planted patterns (and their ground truth) are stated at
LAYERS, HEADS = 6, 8
NEVER = -30.0            # planted log-weight of pairs a head does not attend (e^-30 per key)
TEXT_LOGIT = -4.0        # planted logit of every text key for a video query
STRIPE_BIAS = 12.0       # planted logit of a sink token
SINK_TOKENS = 4          # tokens per stripe
BAND_SIGMAS = 2.1        # a band of half-width w is planted as a Gaussian of σ = w / 2.1
ED_RATIO = 0.5           # energy_decay: mass of frame distance d relative to the own frame is ρ^d
ED_SINK_RATIO = 0.3      # energy_decay(sink): mass of frame 0 relative to the own frame
# Target std of the content part of the logits on i.i.d. unit-variance input. Attention mixes the
# hidden states (tokens grow correlated), which halves the measured std of dense heads, so their
# target is set twice the ≈ 1 the model is meant to show.
CONTENT_STD = {"planted": 0.3, "dense": 2.0}


@dataclass(frozen=True)
class PlantedHead:
    """What one head is built to do. ``params`` are the pattern params of docs/design.md, except that a
    vertical_stripe head lists ``sinks``: where its sink tokens sit, as fractions of the video."""

    pattern: str
    params: dict[str, Any] = field(default_factory=dict)


def _catalogue() -> list[PlantedHead]:
    """The 48 heads: every family at several parameter values, plus dense heads."""
    heads = []
    heads += [PlantedHead("diagonal", {"rows": 2.0})] * 4
    heads += [PlantedHead("diagonal", {"rows": 8.0})] * 4
    heads += [PlantedHead("diagonal", {"rows": 16.0})] * 2
    heads += [PlantedHead("multi_diagonal", {"rows": 1.0, "frames": 1})] * 3
    heads += [PlantedHead("multi_diagonal", {"rows": 4.0, "frames": 1})]
    heads += [PlantedHead("multi_diagonal", {"rows": 2.0, "frames": 2})] * 3
    heads += [PlantedHead("multi_diagonal", {"rows": 1.0, "frames": 2})]
    heads += [PlantedHead("multi_diagonal", {"rows": 1.0, "frames": 4})] * 2
    heads += [PlantedHead("vertical_stripe", {"sinks": (0.0,)})] * 2
    heads += [PlantedHead("vertical_stripe", {"sinks": (0.52,)}), PlantedHead("vertical_stripe", {"sinks": (0.9,)})]
    heads += [PlantedHead("vertical_stripe", {"sinks": (0.0, 0.5)})] * 3
    heads += [PlantedHead("vertical_stripe", {"sinks": (0.27, 0.77)})]
    heads += [PlantedHead("vertical_stripe", {"sinks": (0.1, 0.35, 0.6, 0.85)})] * 2
    heads += [PlantedHead("energy_decay", {"decay": 0.125, "sink": False})] * 2
    heads += [PlantedHead("energy_decay", {"decay": 0.125, "sink": True})] * 2
    heads += [PlantedHead("energy_decay", {"decay": 0.25, "sink": False})] * 3
    heads += [PlantedHead("energy_decay", {"decay": 0.25, "sink": True})]
    heads += [PlantedHead("energy_decay", {"decay": 0.5, "sink": False})] * 2
    heads += [PlantedHead("dense")] * 8
    assert len(heads) == LAYERS * HEADS
    random.Random(20250611).shuffle(heads)  # fixed: the layout does not depend on the model seed
    return heads


_ALL = _catalogue()
#: PLANTED[layer][head]: what every head is built to do.
PLANTED: tuple[tuple[PlantedHead, ...], ...] = tuple(
    tuple(_ALL[layer * HEADS:(layer + 1) * HEADS]) for layer in range(LAYERS)
)


# --- planted features ------------------------------------------------------------------------


@dataclass(frozen=True)
class _Tokens:
    """Per-token coordinates [N] of a geometry (video index etc. are 0 on text tokens)."""

    is_video: torch.Tensor
    v: torch.Tensor
    f: torch.Tensor
    p: torch.Tensor

    @classmethod
    def of(cls, geom: Geometry) -> _Tokens:
        t = torch.arange(geom.num_tokens)
        is_video = (t >= geom.video_start) & (t < geom.video_start + geom.video_tokens)
        v = torch.where(is_video, t - geom.video_start, 0)
        return cls(is_video, v, v // geom.frame_size, v % geom.frame_size)


def feature_dims(geom: Geometry) -> int:
    """Planted channels per head: a text slot plus the frame × spatial form's 3 per frame."""
    return 1 + 3 * max(geom.frames, 1)


def sink_tokens(fractions, geom: Geometry) -> list[int]:
    """Token indices of a stripe head's sinks: SINK_TOKENS consecutive tokens per fraction, the
    group starting on a multiple of SINK_TOKENS so it never straddles a 64- or 128-token block."""
    out = []
    for frac in fractions:
        start = geom.video_start + int(frac * (geom.video_tokens - 1))
        start = min(-(-start // SINK_TOKENS) * SINK_TOKENS, geom.video_start + geom.video_tokens - SINK_TOKENS)
        start = max(start, geom.video_start)
        out += range(start, start + SINK_TOKENS)
    return sorted(set(out))


def _frame_kernel(head: PlantedHead, geom: Geometry) -> tuple[torch.Tensor, torch.Tensor]:
    """(A, Bm) [F, F] float64 of a frame × spatial head: log weight and spatial sharpness per
    frame pair (query frame, key frame)."""
    fr = torch.arange(geom.frames)
    d = (fr[:, None] - fr[None, :]).abs()
    if head.pattern == "multi_diagonal":
        k = _reach(head, geom)
        sigma = head.params["rows"] * geom.width / BAND_SIGMAS
        kept = d <= k
        return (torch.where(kept, 0.0, NEVER).double(), torch.where(kept, 1 / (2 * sigma**2), 0.0).double())
    # energy_decay
    s, decay = geom.frame_size, head.params["decay"]
    a = torch.full((geom.frames, geom.frames), NEVER, dtype=torch.float64)
    bm = torch.zeros_like(a)
    for dist in range(geom.frames):
        if dist == 0:
            a[d == 0] = 0.0  # the whole own frame, uniformly
            continue
        c = decay * s / 2 ** (dist.bit_length() - 1)
        if c < BLOCK_SIZE and dist % math.ceil(BLOCK_SIZE / c):
            continue  # the mask keeps only every ceil(B/c)-th frame distance once c < B
        sigma = c / BAND_SIGMAS
        z = min(sigma * math.sqrt(2 * math.pi), s)  # spatial mass of one key frame's Gaussian
        a[d == dist] = dist * math.log(ED_RATIO) + math.log(s / z)
        bm[d == dist] = 1 / (2 * sigma**2)
    if head.params.get("sink"):
        a[1:, 0] = math.log(ED_SINK_RATIO)  # frame 0, uniformly: ED_SINK_RATIO of the own frame's mass
        bm[1:, 0] = 0.0
    return a, bm


def _reach(head: PlantedHead, geom: Geometry) -> int:
    """multi_diagonal's frame reach, clamped to the geometry."""
    frames = head.params.get("frames")
    return geom.frames - 1 if frames is None else min(frames, geom.frames - 1)


def planted_features(head: PlantedHead, geom: Geometry) -> tuple[torch.Tensor, torch.Tensor]:
    """(Φq, Φk) float32 [N, feature_dims]: Φq(i)·Φk(j) is the head's planted logit L(i, j).

    Computed in float64 and rounded once; the logits are exact up to float32 rounding of the
    features (relative 1e-7 of terms ≤ ~10⁴ for the default geometry)."""
    tok = _Tokens.of(geom)
    n, dims = geom.num_tokens, feature_dims(geom)
    vid = tok.is_video.double()
    q = torch.zeros(n, dims, dtype=torch.float64)
    k = torch.zeros(n, dims, dtype=torch.float64)
    if head.pattern != "dense":  # text slot: every text key at TEXT_LOGIT for video queries
        q[:, 0] = vid
        k[:, 0] = TEXT_LOGIT * (1 - vid)
    if head.pattern == "diagonal":
        sigma = head.params["rows"] * geom.width / BAND_SIGMAS
        c = 1 / (2 * sigma**2)
        v = (tok.v.double() - (geom.video_tokens - 1) / 2) * vid  # centred: smaller terms, less rounding
        q[:, 1:4] = torch.stack([vid, v, v * v], 1)
        k[:, 1:4] = torch.stack([-c * v * v, 2 * c * v, -c * vid], 1)
    elif head.pattern in ("multi_diagonal", "energy_decay"):
        a, bm = _frame_kernel(head, geom)
        p = (tok.p.double() - (geom.frame_size - 1) / 2) * vid
        onehot = F.one_hot(tok.f, geom.frames).double() * vid[:, None]  # [N, F]
        q[:, 1::3] = onehot
        q[:, 2::3] = onehot * p[:, None]
        q[:, 3::3] = onehot * (p * p)[:, None]
        a_k, b_k = a[:, tok.f].T * vid[:, None], bm[:, tok.f].T * vid[:, None]  # [N, F]: row a of A, Bm per key
        k[:, 1::3] = a_k - b_k * (p * p)[:, None]
        k[:, 2::3] = 2 * b_k * p[:, None]
        k[:, 3::3] = -b_k
    elif head.pattern == "vertical_stripe":
        k[sink_tokens(head.params["sinks"], geom), 1] = STRIPE_BIAS
        q[:, 1] = vid
    elif head.pattern != "dense":
        raise ValueError(f"toy-vdit: no planted construction for pattern {head.pattern!r}")
    return q.float(), k.float()


def ground_truth_params(head: PlantedHead, geom: Geometry, block_size: int = BLOCK_SIZE) -> dict[str, Any]:
    """Pattern params (docs/design.md) of a planted head (vertical_stripe: its sinks' key blocks at ``block_size``)."""
    if head.pattern == "vertical_stripe":
        blocks = sorted({t // block_size for t in sink_tokens(head.params["sinks"], geom)})
        return {"key_blocks": blocks, "rows": 0.0}
    if head.pattern == "multi_diagonal":
        return {"rows": head.params["rows"], "frames": _reach(head, geom)}
    return dict(head.params)


def planted_ground_truth(geom: Geometry, block_size: int = BLOCK_SIZE):
    """DataFrame (layer, head, pattern, params as canonical JSON) of every planted head;
    ``attrs["block_size"]`` says which block size the params are stated at."""
    import pandas as pd

    from ..patterns import normalize_params, params_key

    rows = []
    for layer, heads in enumerate(PLANTED):
        for h, head in enumerate(heads):
            params = ground_truth_params(head, geom, block_size)
            params = normalize_params(head.pattern, params, geom, block_size)
            rows.append({"layer": layer, "head": h, "pattern": head.pattern, "params": params_key(params)})
    df = pd.DataFrame(rows)
    df.attrs["block_size"] = block_size
    return df


# --- the model -------------------------------------------------------------------------------


def timestep_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    """Sinusoidal embedding [B, dim] of timesteps t [B] (as in DiT)."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float32) / half)
    args = t.float()[:, None] * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return x * (1 + scale[:, None]) + shift[:, None]


class Block(nn.Module):
    """adaLN DiT block whose q/k concatenate content channels with fixed planted channels.

    x [B, N, dim] → q, k [B, heads, N, head_dim] = [content (head_dim − P) | planted (P)],
    v [B, heads, N, head_dim] → SDPA → out projection; then the MLP.
    """

    def __init__(self, dim: int, heads: int, head_dim: int, planted_q: torch.Tensor, planted_k: torch.Tensor,
                 content_gain: torch.Tensor) -> None:
        super().__init__()
        self.heads, self.head_dim = heads, head_dim
        self.content_dim = head_dim - planted_q.shape[-1]
        self.norm1 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.norm2 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.q = nn.Linear(dim, heads * self.content_dim)
        self.k = nn.Linear(dim, heads * self.content_dim)
        self.v = nn.Linear(dim, heads * head_dim)
        self.out = nn.Linear(heads * head_dim, dim)
        # Sub-LN on the attention output (as in Magneto / Foundation Transformers): an average over
        # many tokens has a small norm, and without it attention would barely move the residual
        # stream, so an attention error would barely show in the model output.
        self.attn_norm = nn.LayerNorm(heads * head_dim, elementwise_affine=False, eps=1e-6)
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(approximate="tanh"), nn.Linear(4 * dim, dim))
        self.ada = nn.Linear(dim, 6 * dim)
        with torch.no_grad():  # content q/k entries of std content_gain[h] on unit-variance input
            for proj in (self.q, self.k):
                proj.weight.normal_(0.0, 1.0 / math.sqrt(dim))
                proj.weight.view(heads, self.content_dim, dim).mul_(content_gain[:, None, None])
                proj.bias.zero_()
            self.ada.weight.mul_(0.1)
        # [heads, N, P]; q pre-multiplied by √head_dim to cancel SDPA's default 1/√head_dim.
        self.register_buffer("planted_q", planted_q * math.sqrt(head_dim), persistent=False)
        self.register_buffer("planted_k", planted_k, persistent=False)

    def forward(self, x: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        shift1, scale1, gate1, shift2, scale2, gate2 = self.ada(cond).chunk(6, dim=-1)
        h = modulate(self.norm1(x), shift1, scale1)
        q = self.q(h).view(b, n, self.heads, self.content_dim).transpose(1, 2)
        k = self.k(h).view(b, n, self.heads, self.content_dim).transpose(1, 2)
        v = self.v(h).view(b, n, self.heads, self.head_dim).transpose(1, 2)
        q = torch.cat([q, self.planted_q.expand(b, -1, -1, -1)], dim=-1)
        k = torch.cat([k, self.planted_k.expand(b, -1, -1, -1)], dim=-1)
        o = F.scaled_dot_product_attention(q, k, v)
        x = x + (1 + gate1[:, None]) * self.out(self.attn_norm(o.transpose(1, 2).reshape(b, n, -1)))
        return x + gate2[:, None] * self.mlp(modulate(self.norm2(x), shift2, scale2))


class ToyVDiT(nn.Module):
    """Latent video [B, C, F, H, W] + timestep [B] (+ text [B, T, text_dim]) → predicted noise
    [B, C, F, H, W]. Build it with ``build``; the planted layout is ``PLANTED``."""

    def __init__(self, geometry: Geometry, *, channels: int = 16, dim: int = 256, head_dim: int = 64,
                 text_dim: int = 64) -> None:
        super().__init__()
        self.geometry, self.channels, self.text_dim = geometry, channels, text_dim
        self.config = {"geometry": geometry.to_dict(), "channels": channels, "dim": dim, "layers": LAYERS,
                       "heads": HEADS, "head_dim": head_dim, "text_dim": text_dim}
        self.patch_embed = nn.Linear(channels, dim)
        self.text_embed = nn.Linear(text_dim, dim)
        self.time_embed = nn.Sequential(nn.Linear(256, dim), nn.SiLU(), nn.Linear(dim, dim))
        blocks = []
        for layer in range(LAYERS):
            feats = [planted_features(h, geometry) for h in PLANTED[layer]]
            gains = torch.tensor([_content_gain(h, head_dim, feature_dims(geometry)) for h in PLANTED[layer]])
            blocks.append(Block(dim, HEADS, head_dim, torch.stack([f[0] for f in feats]),
                                torch.stack([f[1] for f in feats]), gains))
        self.blocks = nn.ModuleList(blocks)
        self.norm_out = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.ada_out = nn.Linear(dim, 2 * dim)
        self.proj_out = nn.Linear(dim, channels)

    def forward(self, latent: torch.Tensor, timestep: torch.Tensor, text: torch.Tensor | None = None) -> torch.Tensor:
        g = self.geometry
        if latent.dim() != 5 or tuple(latent.shape[1:]) != (self.channels, g.frames, g.height, g.width):
            raise ValueError(f"toy-vdit: latent must be [B, {self.channels}, {g.frames}, {g.height}, {g.width}] "
                             f"for geometry {g}, got {list(latent.shape)}")
        b = latent.shape[0]
        x = self.patch_embed(latent.flatten(2).transpose(1, 2))  # [B, F·H·W, dim]
        if g.text_tokens:
            if text is None or tuple(text.shape) != (b, g.text_tokens, self.text_dim):
                got = None if text is None else list(text.shape)
                raise ValueError(f"toy-vdit: text must be [{b}, {g.text_tokens}, {self.text_dim}] for geometry {g}, "
                                 f"got {got}")
            t_tok = self.text_embed(text)
            x = torch.cat([t_tok, x] if g.text_position == "prefix" else [x, t_tok], dim=1)
        elif text is not None:
            raise ValueError(f"toy-vdit: geometry {g} has no text tokens but a text input was given")
        cond = F.silu(self.time_embed(timestep_embedding(timestep.expand(b), 256)))
        for block in self.blocks:
            x = block(x, cond)
        shift, scale = self.ada_out(cond).chunk(2, dim=-1)
        x = self.proj_out(modulate(self.norm_out(x), shift, scale))
        vs = g.video_start
        x = x[:, vs:vs + g.video_tokens]
        return x.transpose(1, 2).reshape(b, self.channels, g.frames, g.height, g.width)


def _content_gain(head: PlantedHead, head_dim: int, planted_dims: int) -> float:
    """Std of the content q/k entries giving a content-logit std of CONTENT_STD for the head:
    var(q·k/√D) = Dc·g⁴/D for Dc independent unit-variance products."""
    target = CONTENT_STD["dense" if head.pattern == "dense" else "planted"]
    dc = head_dim - planted_dims
    return (target**2 * head_dim / dc) ** 0.25


def denoising_inputs(geometry: Geometry, steps: int, *, channels: int = 16, text_dim: int = 64,
                     seed: int = 0) -> list[tuple]:
    """``steps`` inputs of a fake flow-matching denoising loop: (x_t, t[, text]) with
    x_t = (1 − σ)·x₀ + σ·ε for σ = 1, …, 1/steps and t = 1000·σ; x₀, ε and text fixed by seed."""
    gen = torch.Generator().manual_seed(seed + 1)
    shape = (1, channels, geometry.frames, geometry.height, geometry.width)
    x0, eps = torch.randn(shape, generator=gen), torch.randn(shape, generator=gen)
    text = torch.randn(1, geometry.text_tokens, text_dim, generator=gen) if geometry.text_tokens else None
    inputs = []
    for i in range(steps):
        sigma = 1.0 - i / steps
        entry = ((1 - sigma) * x0 + sigma * eps, torch.tensor([1000.0 * sigma]))
        inputs.append(entry + (text,) if text is not None else entry)
    return inputs


def build(seed: int = 0, steps: int = 4, frames: int = 8, height: int = 16, width: int = 16,
          text_tokens: int = 0, text_position: str = "prefix", head_dim: int = 64):
    """The registry factory of ``toy-vdit``: a ModelSpec with ground truth (block size 64)."""
    from . import ModelSpec, fingerprint

    for name, value, lo in (("seed", seed, 0), ("steps", steps, 1), ("frames", frames, 2), ("height", height, 1),
                            ("width", width, 1), ("text_tokens", text_tokens, 0), ("head_dim", head_dim, 1)):
        if not isinstance(value, int) or isinstance(value, bool) or value < lo:
            raise ValueError(f"toy-vdit: option {name} must be an integer ≥ {lo}, got {value!r}")
    geometry = Geometry(frames, height, width, text_tokens, text_position)
    planted = feature_dims(geometry)
    if head_dim < planted + 8:
        raise ValueError(f"toy-vdit: head_dim {head_dim} too small for {frames} frames: the planted channels take "
                         f"3·frames + 1 = {planted}, and at least 8 content channels are needed")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = ToyVDiT(geometry, head_dim=head_dim).eval()
    inputs = denoising_inputs(geometry, steps, channels=model.channels, text_dim=model.text_dim, seed=seed)
    return ModelSpec(name="toy-vdit", model=model, geometry=geometry, inputs=inputs,
                     fingerprint=fingerprint(model, config=model.config),
                     ground_truth=planted_ground_truth(geometry))


def main() -> None:
    import pandas as pd

    geom = Geometry(8, 16, 16)
    table = planted_ground_truth(geom)
    print(f"toy-vdit planted ground truth: {LAYERS} layers × {HEADS} heads, geometry {geom}, "
          f"params at block size {BLOCK_SIZE}")
    with pd.option_context("display.max_rows", None, "display.max_colwidth", 80, "display.width", 120):
        print(table.to_string(index=False))
    print("\nheads per family:", table["pattern"].value_counts().to_dict())


if __name__ == "__main__":
    main()
