"""FP8 (e4m3) quantization of attention operands in Triton: the ``@triton.jit`` code only.

The scales and layouts are ``runtime/quantize.py``'s (the definition, in PyTorch); the host side
(allocation, grids) is ``quantize._quantize_triton``. Two launches:

``quantize_rows``, grid (NB, B·NH, 3): one program per (row block, (batch, listed head), operand).
  Operand 0 reads the block of Q [B, H, N, D] and writes its e4m3 rows to Q8 [B, H, N, D]
  (contiguous) and its scale to QScale [B, H, NB]; operand 1 does the same for K's block in
  K8 / KScale ([B, H_KV, ...]); operand 2 reads V's block and merges each channel's max |v| into
  Amax [B, H_KV, D] with an atomic max. Amax must be zero on entry (amax ≥ 0, so the float order is
  the integer order the atomic uses, and zero is the identity).
``quantize_channels``, grid (ceil(N_PAD / ROWS), B·NH): one program per (block of ROWS tokens,
  (batch, listed head)) reads Amax, turns it into the channel scales in registers (the same
  division as the definition's), reads V's rows and writes them channel-major to V8
  [B, H_KV, D, N_PAD]; padding columns N ≤ n < N_PAD get e4m3 zero. The program of the first
  token block writes the scales to VScale [B, H_KV, D]. Two passes over V are inherent: every
  token's byte depends on the channel's max over all N.

Heads: ``Heads`` (int32, NH entries) lists the query heads whose operands are written (``LISTED``);
None (``LISTED`` False): every head, NH = H. A listed head's K/V head is head // GROUP; under GQA
(GROUP > 1) only the first listed head of each K/V head writes it, so a K/V head is read and written
once. Every output is indexed by the head's own number: other heads' entries are left untouched.

The stores are coalesced: Q8/K8 rows run along D; V8's tile is transposed in registers so that
consecutive threads write consecutive tokens of one channel, and its mask (token < N_PAD, a multiple
of 16 like every ROWS-block start) is constant over 16 tokens, so the stores are 16-byte vectors.
Divisions are IEEE round-to-nearest (``tl.div_rn``; Triton's ``/`` is an approximate division on
CUDA), so scales and bytes equal PyTorch's.
"""

from __future__ import annotations

import triton
import triton.language as tl

E4M3_MAX = tl.constexpr(448.0)


@triton.jit
def _scale(amax):
    """amax / E4M3_MAX (IEEE division), 1 where amax is 0: the definition's ``quantize._scale``."""
    return tl.where(amax > 0, tl.div_rn(amax, E4M3_MAX), 1.0)


@triton.jit
def _head(Heads, i, LISTED: tl.constexpr):
    """The query head of listed entry ``i``."""
    if LISTED:
        return tl.load(Heads + i)
    else:
        return i


@triton.jit
def _writes_kv(Heads, i, head, GROUP: tl.constexpr, LISTED: tl.constexpr, HEADS_PAD: tl.constexpr):
    """Whether listed entry ``i`` (query head ``head``) is the one that writes its K/V head: the
    first listed head of the group (every head when GROUP is 1)."""
    if GROUP == 1:
        return True
    elif LISTED:
        j = tl.arange(0, HEADS_PAD)
        earlier = tl.load(Heads + j, mask=j < i, other=0)
        same = (j < i) & (earlier // GROUP == head // GROUP)
        return tl.sum(same.to(tl.int32), 0) == 0
    else:
        return head % GROUP == 0


@triton.jit
def _load_rows(X, stride_xb, stride_xh, stride_xn, stride_xd, b, head, rows, N, HEAD_DIM: tl.constexpr):
    """Rows ``rows`` of X[b, head] (any strides) in float32; rows ≥ N read as 0."""
    d = tl.arange(0, HEAD_DIM)
    base = X + b.to(tl.int64) * stride_xb + head.to(tl.int64) * stride_xh
    x = tl.load(base + rows[:, None] * stride_xn + d[None, :] * stride_xd, mask=rows[:, None] < N, other=0.0)
    return x.to(tl.float32)


@triton.jit
def _quantize_block(X, X8, Scale, stride_xb, stride_xh, stride_xn, stride_xd, b, head, num_heads, blk, N, NB,
                    BLOCK: tl.constexpr, HEAD_DIM: tl.constexpr):
    """Block ``blk`` of X[b, head] → its e4m3 rows in X8 [B, num_heads, N, D] and its scale in Scale
    [B, num_heads, NB]."""
    rows = blk * BLOCK + tl.arange(0, BLOCK)
    x = _load_rows(X, stride_xb, stride_xh, stride_xn, stride_xd, b, head, rows, N, HEAD_DIM)
    scale = _scale(tl.max(tl.max(tl.abs(x), 1), 0))
    x8 = tl.div_rn(x, scale).to(X8.dtype.element_ty)
    bh = b * num_heads + head
    out = X8 + bh.to(tl.int64) * N * HEAD_DIM
    tl.store(out + rows[:, None] * HEAD_DIM + tl.arange(0, HEAD_DIM)[None, :], x8, mask=rows[:, None] < N)
    tl.store(Scale + bh * NB + blk, scale)


@triton.jit
def quantize_rows(Q, K, V, Q8, K8, QScale, KScale, Amax, Heads,
                  stride_qb, stride_qh, stride_qn, stride_qd, stride_kb, stride_kh, stride_kn, stride_kd,
                  stride_vb, stride_vh, stride_vn, stride_vd, N, NB, H, H_KV, NH,
                  BLOCK: tl.constexpr, HEAD_DIM: tl.constexpr, GROUP: tl.constexpr, LISTED: tl.constexpr,
                  HEADS_PAD: tl.constexpr):
    """Q's and K's blocks → Q8, QScale, K8, KScale; V's blocks → Amax (zeroed by the caller)."""
    blk = tl.program_id(0)
    b = tl.program_id(1) // NH
    i = tl.program_id(1) % NH
    operand = tl.program_id(2)
    head = _head(Heads, i, LISTED)
    if operand == 0:
        _quantize_block(Q, Q8, QScale, stride_qb, stride_qh, stride_qn, stride_qd, b, head, H, blk, N, NB,
                        BLOCK, HEAD_DIM)
    elif _writes_kv(Heads, i, head, GROUP, LISTED, HEADS_PAD):
        kv = head // GROUP
        if operand == 1:
            _quantize_block(K, K8, KScale, stride_kb, stride_kh, stride_kn, stride_kd, b, kv, H_KV, blk, N,
                            NB, BLOCK, HEAD_DIM)
        else:
            rows = blk * BLOCK + tl.arange(0, BLOCK)
            x = _load_rows(V, stride_vb, stride_vh, stride_vn, stride_vd, b, kv, rows, N, HEAD_DIM)
            d = tl.arange(0, HEAD_DIM)
            tl.atomic_max(Amax + (b * H_KV + kv) * HEAD_DIM + d, tl.max(tl.abs(x), 0), sem="relaxed")


@triton.jit
def _wgmma_key(p):
    """``quantize.wgmma_key``: the key at column p (0 ≤ p < 32) of a group in the "wgmma" order."""
    return (p & 0b10001) | ((p & 0b01100) >> 1) | ((p & 0b00010) << 2)


@triton.jit
def quantize_channels(V, V8, VScale, Amax, Heads, stride_vb, stride_vh, stride_vn, stride_vd, N, N_PAD, H_KV,
                      NH, ROWS: tl.constexpr, HEAD_DIM: tl.constexpr, GROUP: tl.constexpr, LISTED: tl.constexpr,
                      HEADS_PAD: tl.constexpr, WGMMA_ORDER: tl.constexpr):
    """V / its channel scales (from Amax) → V8 [B, H_KV, D, N_PAD] e4m3 and VScale [B, H_KV, D].
    WGMMA_ORDER: column c holds the key ``_wgmma_key`` names (N_PAD a multiple of 32): the tile's
    rows are read in that order, so the stores stay contiguous."""
    blk = tl.program_id(0)
    b = tl.program_id(1) // NH
    i = tl.program_id(1) % NH
    head = _head(Heads, i, LISTED)
    if _writes_kv(Heads, i, head, GROUP, LISTED, HEADS_PAD):
        kv = head // GROUP
        bh = b * H_KV + kv
        d = tl.arange(0, HEAD_DIM)
        scale = _scale(tl.load(Amax + bh * HEAD_DIM + d))
        rows = blk * ROWS + tl.arange(0, ROWS)  # the tile's columns of V8
        keys = rows
        if WGMMA_ORDER:
            keys = rows - rows % 32 + _wgmma_key(rows % 32)
        x = _load_rows(V, stride_vb, stride_vh, stride_vn, stride_vd, b, kv, keys, N, HEAD_DIM)
        x8 = tl.trans(tl.div_rn(x, scale[None, :]).to(V8.dtype.element_ty))      # [D, ROWS]
        out = V8 + bh.to(tl.int64) * HEAD_DIM * N_PAD
        tl.store(out + d[:, None] * N_PAD + rows[None, :], x8, mask=rows[None, :] < N_PAD)
        if blk == 0:
            tl.store(VScale + bh * HEAD_DIM + d, scale)
