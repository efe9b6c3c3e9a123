"""FP8 (e4m3) quantization of attention operands in Triton: the ``@triton.jit`` code only.

The scales and layouts are ``runtime/quantize.py``'s (the definition, in PyTorch); these kernels
compute the same values in one pass over q and K and two over V, where the PyTorch definition takes
several. ``quantize_blocks``: one program per (batch·head, block of rows) takes the block's amax and
writes its e4m3 rows and scale. ``channel_amax``: per (batch·head, block of rows), each channel's
amax, merged over blocks with an atomic max (amax ≥ 0, so float order is integer order).
Divisions are IEEE round-to-nearest (``tl.div_rn``; Triton's ``/`` is an approximate division on
CUDA), so the bytes equal PyTorch's.
``quantize_channels``: divides by the channel scales and writes the block channel-major.
"""

from __future__ import annotations

import triton
import triton.language as tl

E4M3_MAX = tl.constexpr(448.0)


@triton.jit
def quantize_blocks(X, X8, Scale, stride_xb, stride_xh, stride_xn, stride_xd, N, NB, H,
                    BLOCK: tl.constexpr, HEAD_DIM: tl.constexpr):
    """X [B, H, N, D] (any strides) → X8 [B, H, N, D] contiguous e4m3, Scale [B, H, NB] float32."""
    bh = tl.program_id(0)
    blk = tl.program_id(1)
    b = bh // H
    h = bh % H
    rows = blk * BLOCK + tl.arange(0, BLOCK)
    d = tl.arange(0, HEAD_DIM)
    inside = rows[:, None] < N
    base = X + b.to(tl.int64) * stride_xb + h.to(tl.int64) * stride_xh
    x = tl.load(base + rows[:, None] * stride_xn + d[None, :] * stride_xd, mask=inside, other=0.0).to(tl.float32)
    amax = tl.max(tl.max(tl.abs(x), 1), 0)
    scale = tl.where(amax > 0, tl.div_rn(amax, E4M3_MAX), 1.0)
    out = X8 + bh.to(tl.int64) * N * HEAD_DIM
    x8 = tl.div_rn(x, scale).to(X8.dtype.element_ty)
    tl.store(out + rows[:, None] * HEAD_DIM + d[None, :], x8, mask=inside)
    tl.store(Scale + bh * NB + blk, scale)


@triton.jit
def channel_amax(X, Amax, stride_xb, stride_xh, stride_xn, stride_xd, N, H,
                 BLOCK: tl.constexpr, HEAD_DIM: tl.constexpr):
    """Amax [B, H, D] float32 (zeroed) ← max over rows of |X| [B, H, N, D]."""
    bh = tl.program_id(0)
    blk = tl.program_id(1)
    b = bh // H
    h = bh % H
    rows = blk * BLOCK + tl.arange(0, BLOCK)
    d = tl.arange(0, HEAD_DIM)
    base = X + b.to(tl.int64) * stride_xb + h.to(tl.int64) * stride_xh
    x = tl.load(base + rows[:, None] * stride_xn + d[None, :] * stride_xd, mask=rows[:, None] < N, other=0.0)
    tl.atomic_max(Amax + bh * HEAD_DIM + d, tl.max(tl.abs(x.to(tl.float32)), 0))


@triton.jit
def quantize_channels(X, X8, Scale, stride_xb, stride_xh, stride_xn, stride_xd, N, N_PAD, H,
                      BLOCK: tl.constexpr, HEAD_DIM: tl.constexpr):
    """X [B, H, N, D] / Scale [B, H, D] → X8 [B, H, D, N_PAD] e4m3 (columns ≥ N untouched)."""
    bh = tl.program_id(0)
    blk = tl.program_id(1)
    b = bh // H
    h = bh % H
    rows = blk * BLOCK + tl.arange(0, BLOCK)
    d = tl.arange(0, HEAD_DIM)
    inside = rows[:, None] < N
    base = X + b.to(tl.int64) * stride_xb + h.to(tl.int64) * stride_xh
    x = tl.load(base + rows[:, None] * stride_xn + d[None, :] * stride_xd, mask=inside, other=0.0).to(tl.float32)
    scale = tl.load(Scale + bh * HEAD_DIM + d)
    out = X8 + bh.to(tl.int64) * HEAD_DIM * N_PAD
    x8 = tl.div_rn(x, scale[None, :]).to(X8.dtype.element_ty)
    tl.store(out + d[None, :] * N_PAD + rows[:, None], x8, mask=inside)
