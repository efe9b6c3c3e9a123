"""FP8 (e4m3) quantization of attention operands in Triton: the ``@triton.jit`` code only.

The scales and layouts are ``runtime/quantize.py``'s (the definition, in PyTorch); these kernels
compute the same values in one pass over q and K and two over V, where the PyTorch definition takes
several, and only for the heads listed in ``Heads`` (int32; the heads of a layer that run FP8):
program axis 0 is (batch, i) over those heads, i < NH; the outputs are indexed by the head's own
number, so other heads' entries are left untouched. ``quantize_blocks``: one program per (batch·head,
block of rows) takes the block's amax and writes its e4m3 rows and scale. ``channel_amax``: per (batch·head, block of rows), each channel's
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
def _row_block(X, Heads, stride_xb, stride_xh, stride_xn, stride_xd, N, H, NH,
               BLOCK: tl.constexpr, HEAD_DIM: tl.constexpr):
    """This program's (batch, listed head, block) tile of X [B, H, N, D] in float32 (rows ≥ N read
    as 0), the flat index b·H + head of its (batch, head), its row indices and whether each row is
    inside N."""
    b = tl.program_id(0) // NH
    head = tl.load(Heads + tl.program_id(0) % NH)
    rows = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    d = tl.arange(0, HEAD_DIM)
    inside = rows[:, None] < N
    base = X + b.to(tl.int64) * stride_xb + head.to(tl.int64) * stride_xh
    x = tl.load(base + rows[:, None] * stride_xn + d[None, :] * stride_xd, mask=inside, other=0.0)
    return x.to(tl.float32), b * H + head, rows, inside


@triton.jit
def quantize_blocks(X, X8, Scale, Heads, stride_xb, stride_xh, stride_xn, stride_xd, N, NB, H, NH,
                    BLOCK: tl.constexpr, HEAD_DIM: tl.constexpr):
    """X [B, H, N, D] (any strides) → X8 [B, H, N, D] contiguous e4m3, Scale [B, H, NB] float32."""
    x, bh, rows, inside = _row_block(X, Heads, stride_xb, stride_xh, stride_xn, stride_xd, N, H, NH, BLOCK,
                                     HEAD_DIM)
    amax = tl.max(tl.max(tl.abs(x), 1), 0)
    scale = tl.where(amax > 0, tl.div_rn(amax, E4M3_MAX), 1.0)
    out = X8 + bh.to(tl.int64) * N * HEAD_DIM
    x8 = tl.div_rn(x, scale).to(X8.dtype.element_ty)
    tl.store(out + rows[:, None] * HEAD_DIM + tl.arange(0, HEAD_DIM)[None, :], x8, mask=inside)
    tl.store(Scale + bh * NB + tl.program_id(1), scale)


@triton.jit
def channel_amax(X, Amax, Heads, stride_xb, stride_xh, stride_xn, stride_xd, N, H, NH,
                 BLOCK: tl.constexpr, HEAD_DIM: tl.constexpr):
    """Amax [B, H, D] float32 (zeroed) ← max over rows of |X| [B, H, N, D]."""
    x, bh, _, _ = _row_block(X, Heads, stride_xb, stride_xh, stride_xn, stride_xd, N, H, NH, BLOCK, HEAD_DIM)
    tl.atomic_max(Amax + bh * HEAD_DIM + tl.arange(0, HEAD_DIM), tl.max(tl.abs(x), 0))


@triton.jit
def quantize_channels(X, X8, Scale, Heads, stride_xb, stride_xh, stride_xn, stride_xd, N, N_PAD, H, NH,
                      BLOCK: tl.constexpr, HEAD_DIM: tl.constexpr):
    """X [B, H, N, D] / Scale [B, H, D] → X8 [B, H, D, N_PAD] e4m3 (columns ≥ N untouched)."""
    x, bh, rows, inside = _row_block(X, Heads, stride_xb, stride_xh, stride_xn, stride_xd, N, H, NH, BLOCK,
                                     HEAD_DIM)
    d = tl.arange(0, HEAD_DIM)
    scale = tl.load(Scale + bh * HEAD_DIM + d)
    out = X8 + bh.to(tl.int64) * HEAD_DIM * N_PAD
    x8 = tl.div_rn(x, scale[None, :]).to(X8.dtype.element_ty)
    tl.store(out + d[None, :] * N_PAD + rows[:, None], x8, mask=inside)
