"""Block-sparse flash-attention forward in Triton: the ``@triton.jit`` code only.

Layering follows Triton's fused-attention tutorial: ``_attn_fwd_tile`` (one key tile of the online
softmax), ``_attn_fwd_program`` (one query tile of one (batch, head): walks the kept key blocks of
its query block), ``block_sparse_attn_fwd`` (the kernel: one tile per program, or a persistent grid
taking tiles from an atomic counter). ``launch.py`` beside it builds the grid and arguments.

Semantics (docs/design.md): softmax over the keys of the kept blocks only; keys ≥ N are masked; rows
≥ N are not stored; a row with no kept block outputs zero. fp32 accumulation, exp2 softmax with
the scale folded into log2(e). Inputs are [batch, heads, N, D] with any strides (no copies).

Work decomposition: a program handles BLOCK_M query rows (a sub-tile of plan block ``BLOCK``) and
walks the kept key blocks in BLOCK_N sub-tiles. Programs are numbered
``pid = (item · SUB_M + sub_m) · BATCH + b`` over the launch's ordered work list, so the sub-tiles
and batch copies of one item run side by side. On Hopper the K/V tiles may come through the bulk
tensor copy engine (TMA, 4-D host descriptors over the strided tensors, out-of-range rows
zero-filled) instead of pointer loads.

FP8 (``FP8``): q, K and V arrive as e4m3 with float32 scales (``runtime/quantize.py``: q per query
block, K per key block, V per channel, V stored channel-major so its tiles are K-major as the
FP8 tensor-core product wants); both products run in FP8 with fp32 accumulation, the softmax in
fp32, the output in the caller's dtype.
"""

from __future__ import annotations

import triton
import triton.language as tl

#: P (in [0, 1] under the running max) is multiplied by this before its e4m3 cast: e4m3's largest
#: finite value, so P's small entries keep e4m3's relative precision instead of flushing to zero.
P_SCALE = tl.constexpr(448.0)


@triton.jit
def _load_kv_tile(src, b, kvh, start_n, offs_kv, offs_d, stride_n, stride_d, N, BLOCK_N: tl.constexpr,
                  HEAD_DIM: tl.constexpr, MASK_KEYS: tl.constexpr, USE_TMA: tl.constexpr,
                  CHANNEL_MAJOR: tl.constexpr = False):
    """The [BLOCK_N, HEAD_DIM] K or V tile at key ``start_n`` (a TMA descriptor, or a base pointer).
    CHANNEL_MAJOR: the descriptor is over a [.., D, N] tensor (FP8's V); its box comes transposed."""
    if USE_TMA and CHANNEL_MAJOR:
        tile = tl.trans(src.load([b, kvh, 0, start_n]).reshape(HEAD_DIM, BLOCK_N))
    elif USE_TMA:
        # Rows ≥ N of the descriptor's [.., N, D] box come back as zeros.
        tile = src.load([b, kvh, start_n, 0]).reshape(BLOCK_N, HEAD_DIM)
    elif MASK_KEYS:
        tile = tl.load(src + offs_kv[:, None] * stride_n + offs_d[None, :] * stride_d,
                       mask=offs_kv[:, None] < N, other=0.0)
    else:
        tile = tl.load(src + offs_kv[:, None] * stride_n + offs_d[None, :] * stride_d)
    return tile


@triton.jit
def _attn_fwd_tile(acc, l_i, m_i, q, k_src, v_src, b, kvh, start_n, N,
                   stride_kn, stride_kd, stride_vn, stride_vd, qk_scale, offs_n, offs_d, k_scales,
                   BLOCK: tl.constexpr, BLOCK_N: tl.constexpr, HEAD_DIM: tl.constexpr, MASK_KEYS: tl.constexpr,
                   USE_TMA: tl.constexpr, INPUT_PRECISION: tl.constexpr, FP8: tl.constexpr):
    """One BLOCK_N key tile starting at ``start_n``: update the running max, sum and output.

    FP8: q, K and V tiles are e4m3 (``quantize.py``); the key block's scale (``k_scales``: this
    (batch, K head)'s per-block scales) multiplies the products, P enters the second product as
    e4m3 times P_SCALE, and the epilogue undoes P_SCALE and V's channel scales."""
    offs_kv = start_n + offs_n
    k = _load_kv_tile(k_src, b, kvh, start_n, offs_kv, offs_d, stride_kn, stride_kd, N, BLOCK_N, HEAD_DIM,
                      MASK_KEYS, USE_TMA)
    qk = tl.dot(q, tl.trans(k), input_precision=INPUT_PRECISION)
    if FP8:
        qk = qk * tl.load(k_scales + start_n // BLOCK)
    if MASK_KEYS:
        qk = tl.where(offs_kv[None, :] < N, qk, float("-inf"))
    # Online softmax in base 2: qk_scale = scale · log2(e), so exp2(qk·qk_scale − m) = e^(scale·qk − m').
    m_ij = tl.maximum(m_i, tl.max(qk, 1) * qk_scale)
    qk = qk * qk_scale - m_ij[:, None]
    p = tl.math.exp2(qk)
    alpha = tl.math.exp2(m_i - m_ij)  # rescales what was accumulated under the old max
    l_i = l_i * alpha + tl.sum(p, 1)
    acc = acc * alpha[:, None]
    v = _load_kv_tile(v_src, b, kvh, start_n, offs_kv, offs_d, stride_vn, stride_vd, N, BLOCK_N, HEAD_DIM,
                      MASK_KEYS, USE_TMA, FP8)
    if FP8:
        acc = tl.dot((p * P_SCALE).to(v.dtype), v, acc)
    else:
        acc = tl.dot(p.to(v.dtype), v, acc, input_precision=INPUT_PRECISION)
    return acc, l_i, m_ij


@triton.jit
def _attn_fwd_program(
    pid, Q, K, V, Out, Counts, Indices, Work, QScale, KScale, VScale,
    stride_qz, stride_qh, stride_qn, stride_qd,
    stride_kz, stride_kh, stride_kn, stride_kd,
    stride_vz, stride_vh, stride_vn, stride_vd,
    stride_oz, stride_oh, stride_on, stride_od,
    stride_ch, stride_ih, stride_iq,
    qk_scale, N, NB, BATCH, KV_GROUP, NUM_HEADS,
    HEAD_DIM: tl.constexpr, BLOCK: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
    USE_TMA: tl.constexpr, INPUT_PRECISION: tl.constexpr, WARP_SPECIALIZE: tl.constexpr, FP8: tl.constexpr,
):
    """One tile ``pid`` (one query sub-tile of one work item and batch): the whole program body."""
    SUB_M: tl.constexpr = BLOCK // BLOCK_M
    SUB_N: tl.constexpr = BLOCK // BLOCK_N
    # Decode the tile: batch fastest, then query sub-tile, then the work item (head, qb).
    b = pid % BATCH
    rest = pid // BATCH
    sub_m = rest % SUB_M
    item = tl.load(Work + rest // SUB_M)
    head = item // NB
    qb = item % NB
    kvh = head // KV_GROUP  # grouped-query attention: KV_GROUP query heads share one K/V head

    offs_m = qb * BLOCK + sub_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, HEAD_DIM)
    b64 = b.to(tl.int64)
    q_base = Q + b64 * stride_qz + head.to(tl.int64) * stride_qh
    q = tl.load(q_base + offs_m[:, None] * stride_qn + offs_d[None, :] * stride_qd,
                mask=offs_m[:, None] < N, other=0.0)
    if USE_TMA:
        k_src = K
        v_src = V
    else:
        k_src = K + b64 * stride_kz + kvh.to(tl.int64) * stride_kh
        v_src = V + b64 * stride_vz + kvh.to(tl.int64) * stride_vh

    # FP8 scales (``quantize.py``): q per (batch, head, query block), K per (batch, K head, key
    # block), V per (batch, K head, channel); all float32, contiguous.
    k_scales = KScale + (b64 * (NUM_HEADS // KV_GROUP) + kvh) * NB
    if FP8:
        qk_scale = qk_scale * tl.load(QScale + (b64 * NUM_HEADS + head) * NB + qb)

    m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
    l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
    acc = tl.zeros([BLOCK_M, HEAD_DIM], dtype=tl.float32)

    # This query block's kept key blocks, ascending. The last block of the sequence (nb − 1) may
    # run past N, so if kept it is peeled off into a masked stage; every other tile is unmasked.
    row = Indices + head * stride_ih + qb * stride_iq
    n_kept = tl.load(Counts + head * stride_ch + qb)
    last = tl.load(row + tl.maximum(n_kept - 1, 0))
    has_tail = (n_kept > 0) & (last == NB - 1)
    n_full = n_kept - has_tail.to(tl.int32)
    # WARP_SPECIALIZE: producer/consumer warp groups (Triton's automatic warp specialization).
    for j in tl.range(0, n_full * SUB_N, warp_specialize=WARP_SPECIALIZE):
        kb = tl.load(row + j // SUB_N)
        start_n = kb * BLOCK + (j % SUB_N) * BLOCK_N
        acc, l_i, m_i = _attn_fwd_tile(acc, l_i, m_i, q, k_src, v_src, b, kvh, start_n, N,
                                       stride_kn, stride_kd, stride_vn, stride_vd, qk_scale,
                                       offs_n, offs_d, k_scales, BLOCK, BLOCK_N, HEAD_DIM, False, USE_TMA,
                                       INPUT_PRECISION, FP8)
    # Masked stage: the sub-tiles of block nb − 1 that start below N (none if it is not kept).
    tail_lo = (NB - 1) * BLOCK
    tail_hi = tl.where(has_tail, N, tail_lo)
    for start_n in range(tail_lo, tail_hi, BLOCK_N):
        acc, l_i, m_i = _attn_fwd_tile(acc, l_i, m_i, q, k_src, v_src, b, kvh, start_n, N,
                                       stride_kn, stride_kd, stride_vn, stride_vd, qk_scale, offs_n, offs_d,
                                       k_scales, BLOCK, BLOCK_N, HEAD_DIM, True, USE_TMA, INPUT_PRECISION, FP8)

    # Epilogue: normalise; a row with no kept key (l = 0) has acc = 0 and outputs zero.
    l_i = tl.where(l_i > 0.0, l_i, 1.0)
    acc = acc / l_i[:, None]
    if FP8:
        v_scales = tl.load(VScale + (b64 * (NUM_HEADS // KV_GROUP) + kvh) * HEAD_DIM + offs_d)
        acc = acc * (v_scales / P_SCALE)[None, :]
    o_base = Out + b64 * stride_oz + head.to(tl.int64) * stride_oh
    tl.store(o_base + offs_m[:, None] * stride_on + offs_d[None, :] * stride_od,
             acc.to(Out.dtype.element_ty), mask=offs_m[:, None] < N)


@triton.jit
def block_sparse_attn_fwd(
    Q, K, V, Out, Counts, Indices, Work, QScale, KScale, VScale,
    stride_qz, stride_qh, stride_qn, stride_qd,
    stride_kz, stride_kh, stride_kn, stride_kd,
    stride_vz, stride_vh, stride_vn, stride_vd,
    stride_oz, stride_oh, stride_on, stride_od,
    stride_ch, stride_ih, stride_iq,
    qk_scale, N, NB, BATCH, KV_GROUP, NUM_HEADS, NUM_TILES, Counter,
    HEAD_DIM: tl.constexpr, BLOCK: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
    USE_TMA: tl.constexpr, INPUT_PRECISION: tl.constexpr, WARP_SPECIALIZE: tl.constexpr, FP8: tl.constexpr,
    PERSISTENT: tl.constexpr,
):
    """Not PERSISTENT: program pid runs tile pid. PERSISTENT: a few programs per SM, each taking
    the next tile from the zeroed int32 ``Counter`` until NUM_TILES are taken: tiles start in
    work-list order (head-major L2 reuse as before) and the load stays balanced."""
    if PERSISTENT:
        tile = tl.atomic_add(Counter, 1)  # scalar: one thread, result shared by the program
        while tile < NUM_TILES:
            _attn_fwd_program(
                tile, Q, K, V, Out, Counts, Indices, Work, QScale, KScale, VScale,
                stride_qz, stride_qh, stride_qn, stride_qd, stride_kz, stride_kh, stride_kn, stride_kd,
                stride_vz, stride_vh, stride_vn, stride_vd, stride_oz, stride_oh, stride_on, stride_od,
                stride_ch, stride_ih, stride_iq, qk_scale, N, NB, BATCH, KV_GROUP, NUM_HEADS,
                HEAD_DIM, BLOCK, BLOCK_M, BLOCK_N, USE_TMA, INPUT_PRECISION, WARP_SPECIALIZE, FP8)
            tile = tl.atomic_add(Counter, 1)
    else:
        _attn_fwd_program(
            tl.program_id(0), Q, K, V, Out, Counts, Indices, Work, QScale, KScale, VScale,
            stride_qz, stride_qh, stride_qn, stride_qd, stride_kz, stride_kh, stride_kn, stride_kd,
            stride_vz, stride_vh, stride_vn, stride_vd, stride_oz, stride_oh, stride_on, stride_od,
            stride_ch, stride_ih, stride_iq, qk_scale, N, NB, BATCH, KV_GROUP, NUM_HEADS,
            HEAD_DIM, BLOCK, BLOCK_M, BLOCK_N, USE_TMA, INPUT_PRECISION, WARP_SPECIALIZE, FP8)
