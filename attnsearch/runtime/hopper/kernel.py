"""Block-sparse flash-attention forward for Hopper, warp-specialised, in Gluon (Triton's explicit-
layout dialect), in the schedule of FlashAttention-3 (Shah et al., 2024, "FlashAttention-3: Fast and
Accurate Attention with Asynchrony and Low-precision", §3.1-3.2): a producer warp feeds K/V through
TMA rings, two consumer warpgroups own 64 query rows each of one 128-row plan block, and the two take
turns on the tensor cores ("ping-pong") so that one's softmax runs while the other's wgmmas do.
Triton's own compiler does not build this schedule (it waits on every QK wgmma before the softmax
that reads it); docs/hopper-kernel.md has the measurements.

Same semantics, tables and work list as the Triton kernel (docs/design.md: softmax over the kept blocks'
keys, keys ≥ N masked, rows ≥ N not stored, a row with no kept block outputs zero), for block size
128, fp16/bf16, head_dim 64 or 128, TMA-compatible strides; built on e4m3 descriptors it is the
FP8 kernel (``quantize_fp8``'s operands, V's keys in the "wgmma" order: ``_operand``, ``_carried``,
``_tile_scales``, ``_normalised``; docs/hopper-kernel.md, *FP8 kept blocks*). It cannot run under the CPU
interpreter: ``tests/runtime/test_kernel_compile.py`` compiles it for sm_90a on the CPU, GPU correctness is
``tests/runtime/test_gpu_kernels.py`` (``pytest -m gpu``).

This file holds the device code only: ``ws_block_sparse_fwd`` (the kernel: shared memory, barriers,
the partitions) and its partitions. ``launch.py`` beside it builds the TMA descriptors, the
persistent grid and its tile schedule; ``probe.py`` the cycle-counter reads a probing build adds.

Partitions (``gl.warp_specialize``; setmaxnreg moves registers to the consumers):

* producer, 1 warp, 24 registers: per tile, the two Q halves (two tiles' worth of Q buffers), then
  K[j] and V[j] of every kept key block j into ``STAGES``-deep rings (``*_ready`` signalled by the
  copy engine, ``*_empty`` by both consumers once their wgmma has read the slot). It runs ahead
  into the next tile while the consumers finish this one.
* two consumers, 4 warps and 240 registers each (the default partition is consumer 0), per kept
  block j:

      wait my turn                      (turns[WG], passed by the other consumer)
      issue S[j] = Q·K[j]ᵀ, O += P[j-1]·V[j-1]
      pass the turn
      wait S[j]
      softmax(S[j]) → P[j], alpha       beside the other consumer's wgmmas
      wait PV[j-1]; O *= alpha

  Both products retire before the loop edge: an accumulator in flight across it makes ptxas
  serialise every wgmma (warning C7514). ptxas would hoist the wait
  for PV[j-1] above the softmax; a clock read before it (``_fenced``) keeps it after, so a
  consumer's softmax runs beside its own PV product too. At head_dim 128 the running
  max moves only when a block's exceeds it by 2^8 (FlashAttention-4), and a PTX branch skips the
  rescale of O while it holds (``_rescaled``). At head_dim 64 the consumers load Q
  into registers once per tile and the QK products take it from there
  (``q_in_registers``): the products then read a seventh less from shared memory.

The grid is persistent (one program per SM); which tiles each program runs is list-scheduled on the
host from the kept-block counts (``launch.schedule``), in the work list's head-major order, and
decoded into a table the kernel reads a tile ahead (``launch.tile_table``).

Two consumer schedules, with the same steady-state turns (``_tile_turns``): ``_consumer`` restarts
the pipeline at every tile (its first block's S alone, its last PV alone, pointer stores);
``_consumer_flat`` runs one pipeline across tile boundaries (a tile's first QK goes out with the
last tile's last PV, whose rows then leave through a TMA store). The launcher picks flat at head_dim
128, and at 64 where query blocks keep fewer than ``FLAT_BELOW_KEPT`` key blocks on average
(``launch.prefers_flat``); docs/hopper-kernel.md has the measurements.
"""

from __future__ import annotations

import math

import torch
from triton.experimental import gluon
from triton.experimental.gluon import language as gl
from triton.experimental.gluon.language.nvidia.hopper import (
    fence_async_shared,
    mbarrier,
    tma,
    warpgroup_mma,
    warpgroup_mma_wait,
)

from ..quantize import E4M3_MAX
from .probe import probe_lap, probe_now, probe_start, probe_store

#: TMA copies are ``async_copy_global_to_shared`` / ``..._shared_to_global`` in Triton 3.6 (the
#: GPU machine's) and ``async_load`` / ``async_store`` in newer ones (3.9 here).
_tma_load = getattr(tma, "async_load", None) or tma.async_copy_global_to_shared
_tma_store = getattr(tma, "async_store", None) or tma.async_copy_shared_to_global
LOG2E = 1.4426950408889634
HALF_M = gl.constexpr(64)  # query rows per consumer warpgroup (one wgmma M)
GL_DTYPES = {torch.float16: gl.float16, torch.bfloat16: gl.bfloat16, torch.float8_e4m3fn: gl.float8e4nv}


@gluon.constexpr_function
def _acc_layout(n, dtype):
    """Register layout of a 64 × n wgmma accumulator of one warpgroup (4 warps stacked along M) whose
    operands are ``dtype`` (an instruction's K is 32 bytes of them)."""
    return gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[4, 1],
                                     instr_shape=[16, n, 256 // dtype.primitive_bitwidth])


@gluon.jit
def _v_operand(v_smem, slot, BLOCK: gl.constexpr, HEAD_DIM: gl.constexpr):
    """V[slot] as the PV product's B operand, [BLOCK keys, HEAD_DIM]: the TMA box itself in 16 bits;
    in FP8 the box is [HEAD_DIM, BLOCK] of V's channel-major storage (FP8 products need both operands
    K-major, and PV reduces over keys), read transposed."""
    if v_smem.dtype.is_fp8():
        v = v_smem.index(slot).reshape([HEAD_DIM, BLOCK]).permute((1, 0))
    else:
        v = v_smem.index(slot).reshape([BLOCK, HEAD_DIM])
    return v


@gluon.jit
def _qk_alone(c, q, k_smem, k_ready, k_empty, turns, s_zero, WG: gl.constexpr, BLOCK: gl.constexpr,
              HEAD_DIM: gl.constexpr, STAGES: gl.constexpr):
    """S = Q·Kᵀ of kept block ``c`` (global count) in this consumer's turn, with no PV beside it:
    a tile's first block when the pipeline starts there."""
    slot = c % STAGES
    mbarrier.wait(k_ready.index(slot), (c // STAGES) & 1)
    mbarrier.wait(turns.index(WG), (c & 1) ^ (1 - WG))
    k_t = k_smem.index(slot).reshape([BLOCK, HEAD_DIM]).permute((1, 0))
    s = warpgroup_mma(q, k_t, s_zero, use_acc=False, is_async=True)
    mbarrier.arrive(turns.index(1 - WG), count=1)
    s = warpgroup_mma_wait(0, deps=(s,))
    mbarrier.arrive(k_empty.index(slot), count=1)
    return s


@gluon.jit
def _pv_alone(c, p, acc, v_smem, v_ready, v_empty, BLOCK: gl.constexpr, HEAD_DIM: gl.constexpr,
              STAGES: gl.constexpr):
    """O += P·V of kept block ``c`` (global count) with no S beside it, retired: the pipeline's
    last block (a tile's in the tile schedule, the program's in the flat one)."""
    slot = c % STAGES
    p = _issued(p, acc, v_smem.dtype)
    mbarrier.wait(v_ready.index(slot), (c // STAGES) & 1)
    o = warpgroup_mma(p, _v_operand(v_smem, slot, BLOCK, HEAD_DIM), acc, is_async=True)
    acc = warpgroup_mma_wait(0, deps=(o,))
    mbarrier.arrive(v_empty.index(slot), count=1)
    return acc


@gluon.jit
def _issue_turn(c, q, p, acc, k_smem, v_smem, k_ready, k_empty, v_ready, turns, s_zero, t, w_kv, w_turn,
                WG: gl.constexpr, BLOCK: gl.constexpr, HEAD_DIM: gl.constexpr, STAGES: gl.constexpr,
                PROBE: gl.constexpr):
    """Turn ``c`` (kept block c, counted across tiles) of a consumer, both schedules alike: wait for
    K[c] and V[c - 1], then the turn; issue S[c] = Q·K[c]ᵀ and O += P[c-1]·V[c-1]; pass the turn;
    wait for S (wgmma groups retire in order: PV may still run) and release K[c]'s slot. Returns
    (S, the PV product in flight, V's slot, and the probe's clock and two phase sums)."""
    OTHER: gl.constexpr = 1 - WG
    slot = c % STAGES
    prev = (c - 1) % STAGES
    p = _issued(p, acc, v_smem.dtype)  # before the waits: FP8's conversion runs while this consumer waits
    mbarrier.wait(k_ready.index(slot), (c // STAGES) & 1)
    mbarrier.wait(v_ready.index(prev), ((c - 1) // STAGES) & 1)
    t, w_kv = probe_lap(t, w_kv, PROBE)
    # Turn c of this consumer waits on parity (c & 1) ^ (1 - WG): consumer 0 goes first, and the
    # two alternate from then on (_qk_alone takes the same parity for a tile's first block).
    mbarrier.wait(turns.index(WG), (c & 1) ^ OTHER)
    k_t = k_smem.index(slot).reshape([BLOCK, HEAD_DIM]).permute((1, 0))
    s = warpgroup_mma(q, k_t, s_zero, use_acc=False, is_async=True)
    o = warpgroup_mma(p, _v_operand(v_smem, prev, BLOCK, HEAD_DIM), acc, is_async=True)
    mbarrier.arrive(turns.index(OTHER), count=1)
    t, w_turn = probe_lap(t, w_turn, PROBE)
    s = warpgroup_mma_wait(1, deps=(s,))
    mbarrier.arrive(k_empty.index(slot), count=1)
    return s, o, prev, t, w_kv, w_turn


@gluon.jit
def _tile_fields(Tiles, i):
    """Row i of the tile table: (head, query block, batch index, kept blocks · 2 + tail). Four
    independent loads of one cache line; the caller issues them a tile ahead."""
    at = Tiles + 4 * gl.num_programs(0) + 4 * i
    return gl.load(at), gl.load(at + 1), gl.load(at + 2), gl.load(at + 3)


@gluon.jit
def _program_range(Tiles):
    """This program's rows of the tile table: (first, first empty, end, kept blocks in all)."""
    at = Tiles + 4 * gl.program_id(0)
    return gl.load(at), gl.load(at + 1), gl.load(at + 2), gl.load(at + 3)


@gluon.jit
def _producer(q_desc, k_desc, v_desc, q_smem, k_smem, v_smem, q_ready, q_empty, k_ready, k_empty, v_ready,
              v_empty, Tiles, Indices, stride_ih, stride_iq, KV_GROUP,
              BLOCK: gl.constexpr, STAGES: gl.constexpr, Q_BUFS: gl.constexpr):
    """One warp: for each of this program's tiles, the Q halves, then K[j], V[j] of every kept key
    block, each as soon as its slot is free: the next tile's loads overlap this tile's tail."""
    it = 0  # kept blocks loaded so far: ring slot and phase run on across tiles
    q_count = 0  # tiles with work so far: the Q buffers' phase
    first, end, _, _ = _program_range(Tiles)  # the tiles with work (empty ones need no loads)
    head_n, qb_n, b_n, kt_n = _tile_fields(Tiles, first)
    for i in range(first, end):
        head, qb, b, kt = head_n, qb_n, b_n, kt_n
        head_n, qb_n, b_n, kt_n = _tile_fields(Tiles, i + 1)  # the table has a spare last row
        n_kept = kt >> 1
        kvh = head // KV_GROUP
        row = Indices + head * stride_ih + qb * stride_iq
        if n_kept > 0:
            qi = (q_count % Q_BUFS) * 2
            for w in gl.static_range(2):
                # A fresh mbarrier counts as having completed phase 1: the first wait is free.
                mbarrier.wait(q_empty.index(qi + w), ((q_count // Q_BUFS) & 1) ^ 1)
                mbarrier.expect(q_ready.index(qi + w), q_desc.block_type.nbytes)
                _tma_load(q_desc, [b, head, qb * BLOCK + w * HALF_M, 0], q_ready.index(qi + w),
                          q_smem.index(qi + w))
            q_count += 1
        for j in range(n_kept):
            slot = (it + j) % STAGES
            phase = ((it + j) // STAGES) & 1
            start = gl.load(row + j) * BLOCK
            mbarrier.wait(k_empty.index(slot), phase ^ 1)
            mbarrier.expect(k_ready.index(slot), k_desc.block_type.nbytes)
            _tma_load(k_desc, [b, kvh, start, 0], k_ready.index(slot), k_smem.index(slot))
            mbarrier.wait(v_empty.index(slot), phase ^ 1)
            mbarrier.expect(v_ready.index(slot), v_desc.block_type.nbytes)
            if v_smem.dtype.is_fp8():  # channel-major V: the box [HEAD_DIM, BLOCK] at column ``start``
                _tma_load(v_desc, [b, kvh, 0, start], v_ready.index(slot), v_smem.index(slot))
            else:
                _tma_load(v_desc, [b, kvh, start, 0], v_ready.index(slot), v_smem.index(slot))
        it += n_kept


@gluon.jit
def _softmax_step(s, m_i, l_i, masked, tail_start, offs_n, qk_scale, N, dtype: gl.constexpr,
                  HEAD_DIM: gl.constexpr):
    """Online-softmax update with one key block's scores; ``masked``: this is block nb - 1 (at
    ``tail_start``) and it runs past N, so keys ≥ N get no weight. P comes back in fp32, in S's
    layout (``_operand`` makes it the PV wgmma's operand in the operands' ``dtype``). The running
    max moves lazily where ``_lazy_rescale`` says; P and the row sum are 2^``_p_shift`` times the
    weights (FP8: P's largest value is then e4m3's largest, so its small values keep e4m3's relative
    precision; the factor cancels in O / l)."""
    LAZY: gl.constexpr = _lazy_rescale(HEAD_DIM, dtype)
    P_SHIFT: gl.constexpr = _p_shift(dtype)
    if masked:
        s = gl.where(gl.expand_dims(tail_start + offs_n < N, 0), s, float("-inf"))
    m_blk = gl.max(s, axis=1) * qk_scale
    if LAZY:
        # The running max moves only when a block's exceeds it by more than RESCALE_ABOVE
        # (FlashAttention-4): P stays ≤ 2^RESCALE_ABOVE, and alpha is exactly 1 in almost every turn,
        # so ``_rescaled`` can skip the rescale of O.
        m_new = gl.where(m_blk > m_i + RESCALE_ABOVE, m_blk, m_i)
        alpha = gl.where(m_new == m_i, 1.0, gl.exp2(m_i - m_new))
    else:
        m_new = gl.maximum(m_i, m_blk)
        alpha = gl.exp2(m_i - m_new)
    if P_SHIFT != 0.0:
        p = gl.exp2(s * qk_scale - gl.expand_dims(m_new - P_SHIFT, 1))
    else:
        p = gl.exp2(s * qk_scale - gl.expand_dims(m_new, 1))
    l_i = l_i * alpha + gl.sum(p, axis=1)
    return p, alpha, m_new, l_i


#: How far (log2 units) a block's row max may exceed the running max before the max moves.
RESCALE_ABOVE = gl.constexpr(8.0)
#: FP8: P = 2^P_SHIFT · exp2(s − m) ≤ E4M3_MAX before its e4m3 cast (``quantize.round_probabilities``).
FP8_P_SHIFT = gl.constexpr(math.log2(E4M3_MAX))


@gluon.constexpr_function
def _lazy_rescale(head_dim, dtype):
    """Whether the consumers skip O's rescale while the running max holds: it pays at head_dim 128
    (+0-8%) and costs at 64 (-1 to -10%, 32 multiplies saved for the same branch). Not in FP8,
    where P must stay ≤ 1 under the running max (``FP8_P_SHIFT``)."""
    return head_dim == 128 and not dtype.is_fp8()


@gluon.constexpr_function
def _p_shift(dtype):
    return FP8_P_SHIFT.value if dtype.is_fp8() else 0.0


@gluon.constexpr_function
def _k_width(dtype):
    """Elements per thread along K of a wgmma register operand: 32 bits' worth."""
    return 32 // dtype.primitive_bitwidth


@gluon.constexpr_function
def rescale_asm(n):
    """PTX for ``_rescaled`` over n elements per thread: operands $0..n-1 out, $n..2n-1 O, $2n..3n-1
    alpha (broadcast along the row; elements 0 and 2 are the thread's two rows, r and r + 8, in the
    wgmma accumulator's register order)."""
    mul = "\n".join(f"mul.f32 ${i}, ${n + i}, ${2 * n + i};" for i in range(n))
    mov = "\n".join(f"mov.b32 ${i}, ${n + i};" for i in range(n))
    return ("{\n.reg .pred %p_rescale;\n"
            f"setp.neu.f32 %p_rescale, ${2 * n}, 0f3F800000;\n"
            f"setp.neu.or.f32 %p_rescale, ${2 * n + 2}, 0f3F800000, %p_rescale;\n"
            "@!%p_rescale bra RESCALE_SKIP;\n" + mul + "\nbra.uni RESCALE_DONE;\nRESCALE_SKIP:\n" + mov
            + "\nRESCALE_DONE:\n}")


@gluon.constexpr_function
def rescale_constraints(n):
    return ",".join(["=f"] * n + ["f"] * (2 * n))


@gluon.constexpr_function
def _two_rows_at_0_and_2(layout):
    """Whether a thread's accumulator elements 0 and 2 sit in rows r and r + 8 of one column (register
    bases: column + 1, then row + 8), which ``rescale_asm`` reads its two alphas from."""
    return layout.reg_bases[0] == [0, 1] and layout.reg_bases[1] == [8, 0]


@gluon.jit
def _rescaled(acc, alpha, row_o: gl.constexpr, HEAD_DIM: gl.constexpr, LAZY: gl.constexpr):
    """O · alpha per row. ``LAZY``: behind a branch, so that a thread whose two rows both have
    alpha = 1 (the running max held, ``_softmax_step``) skips its HEAD_DIM / 2 multiplies; Gluon has
    no per-thread branch, so the branch is PTX."""
    alpha_o = gl.expand_dims(gl.convert_layout(alpha, row_o), 1)
    if LAZY:
        n: gl.constexpr = HEAD_DIM // 2  # accumulator elements per thread (64 rows × HEAD_DIM / 128 threads)
        gl.static_assert(_two_rows_at_0_and_2(gl.to_linear_layout(acc.type.layout, acc.shape)),
                         "the wgmma accumulator's register order is not the one rescale_asm reads")
        acc = gl.inline_asm_elementwise(rescale_asm(n), rescale_constraints(n), [acc, alpha_o],
                                        dtype=gl.float32, is_pure=True, pack=n)
    else:
        acc = acc * alpha_o
    return acc


@gluon.jit
def _fenced(l_i):
    """``l_i`` plus 0 × the SM's cycle counter: the same value, behind a clock read, which ptxas does
    not move instructions across. Placed between the softmax and the wait for the consumer's own PV
    product, it keeps that wait there: otherwise ptxas hoists the wait to the top of the softmax's
    block, and the softmax then starts only once PV is done instead of beside it. Costs a clock read, a conversion and two floating-point operations per turn."""
    return l_i + probe_now(True).to(gl.float32) * 0.0


@gluon.jit
def _carried(p, acc, dtype: gl.constexpr):
    """P as a turn hands it to the next turn's PV product (into ``acc``, operands of ``dtype``). 16
    bits: the operand itself (half the registers of fp32), made after the previous PV product has
    retired, so the new P may take the registers that product reads. FP8: the fp32 values, made the operand where the product is issued
    (``_issued``): an e4m3 operand carried across the loop edge is split into bytes there and packed
    again before the product, ~190 more instructions a turn on the softmax's critical path."""
    if not dtype.is_fp8():
        p_layout: gl.constexpr = gl.DotOperandLayout(operand_index=0, parent=acc.type.layout,
                                                     k_width=_k_width(dtype))
        p = _operand(p, dtype, p_layout)
    return p


@gluon.jit
def _issued(p, acc, dtype: gl.constexpr):
    """The PV product's A operand from what ``_carried`` handed over."""
    if p.dtype == gl.float32:
        p_layout: gl.constexpr = gl.DotOperandLayout(operand_index=0, parent=acc.type.layout,
                                                     k_width=_k_width(dtype))
        p = _operand(p, dtype, p_layout)
    return p


@gluon.jit
def _operand(p, dtype: gl.constexpr, p_layout: gl.constexpr):
    """P (fp32, in S's layout) as the PV wgmma's register operand in the operands' dtype."""
    if dtype.is_fp8():
        # Column c of P goes to the operand's K index of the same thread (``wgmma_key_order``), so the
        # conversion moves no value between threads; V's keys are stored in that order. Then four
        # consecutive K values of a row, which the operand holds in one register, become e4m3 in two
        # paired conversions.
        m: gl.constexpr = p.shape[0]
        n: gl.constexpr = p.shape[1]
        # (``.value``: a constexpr tuple is no permutation to Triton 3.6's ``permute``.)
        p = p.reshape([m, n // 32, 2, 2, 4, 2]).permute(P_COLUMN_ORDER.value).reshape([m, n])
        p = gl.convert_layout(p, p_layout)
        p = gl.inline_asm_elementwise(E4M3X4_ASM, "=r,f,f,f,f", [p], dtype=gl.float8e4nv, is_pure=True, pack=4)
    else:
        p = gl.convert_layout(p.to(dtype), p_layout)
    return p


#: FP8: P's columns, split per group of 32 as (group, h, c, t, e) for column 32·group + 16h + 8c + 2t + e
#: (thread t of a quad holds columns 2t, 2t + 1 of each 8 of the accumulator), are relabelled in this
#: order, (group, h, t, c, e): K index 16h + 4t + 2c + e of the operand, the same thread's
#: (``quantize.wgmma_position`` stores V's keys to match).
P_COLUMN_ORDER = gl.constexpr((0, 1, 2, 4, 3, 5))

#: Four fp32 values ($1 .. $4) to four e4m3 bytes of one register, $1 in the lowest byte
#: (``cvt ... e4m3x2`` puts its first source in the upper byte); round to nearest, saturating.
E4M3X4_ASM = gl.constexpr("{\n.reg .b16 lo, hi;\ncvt.rn.satfinite.e4m3x2.f32 lo, $2, $1;\n"
                          "cvt.rn.satfinite.e4m3x2.f32 hi, $4, $3;\nmov.b32 $0, {lo, hi};\n}")


@gluon.jit
def _tile_scales(Indices, QScale, KScale, head, qb, b, qk_scale, stride_ih, stride_iq, NB, NUM_HEADS, KV_GROUP,
                 FP8: gl.constexpr):
    """A tile's logit scale and where its kept blocks' scales are read: (qk_scale, times the tile's
    q scale in FP8; the tile's row of kept key blocks; its K head's block scales). FP8 scales are
    ``runtime/quantize.py``'s: q per (batch, head, query block), K per (batch, K head, key block)."""
    krow = Indices + head * stride_ih + qb * stride_iq
    kscales = KScale + (b * (NUM_HEADS // KV_GROUP) + head // KV_GROUP) * NB
    if FP8:
        qk_scale = qk_scale * gl.load(QScale + (b * NUM_HEADS + head) * NB + qb)
    return qk_scale, krow, kscales


@gluon.jit
def _block_scale(qk_t, krow, kscales, j, FP8: gl.constexpr):
    """The logit scale of the tile's kept block j: ``qk_t`` (``_tile_scales``), times the block's K
    scale in FP8 (two dependent loads, from cache: the producer read the index row just before)."""
    if FP8:
        qk_t = qk_t * gl.load(kscales + gl.load(krow + j))
    return qk_t


@gluon.jit
def _tile_turns(it, n_kept, tail, q, p, acc, m_i, l_i, k_smem, v_smem, k_ready, k_empty, v_ready, v_empty, turns,
                s_zero, offs_n, tail_start, qk_t, krow, kscales, N, t, w_kv, w_turn, w_s, w_soft, w_pv,
                WG: gl.constexpr, BLOCK: gl.constexpr, HEAD_DIM: gl.constexpr, STAGES: gl.constexpr,
                PROBE: gl.constexpr):
    """Turns 1 .. n_kept - 1 of a tile whose block 0 (kept block ``it``, counted across tiles) has
    been through its softmax (P[0] in ``p``): the steady state, one kept block per turn, both
    schedules alike. ``qk_t``, ``krow``, ``kscales``: the tile's scales (``_tile_scales``). Returns
    the last block's P (its PV product is the caller's), O, m, l and the probe's clock and phase sums."""
    dtype: gl.constexpr = k_smem.dtype
    row_o: gl.constexpr = gl.SliceLayout(1, acc.type.layout)
    LAZY: gl.constexpr = _lazy_rescale(HEAD_DIM, dtype)
    FP8: gl.constexpr = dtype.is_fp8()
    for j in range(1, n_kept):
        t = probe_now(PROBE)  # the probe's turn starts
        qk_scale = _block_scale(qk_t, krow, kscales, j, FP8)
        s, o, prev, t, w_kv, w_turn = _issue_turn(it + j, q, p, acc, k_smem, v_smem, k_ready, k_empty, v_ready,
                                                  turns, s_zero, t, w_kv, w_turn, WG, BLOCK, HEAD_DIM, STAGES, PROBE)
        t, w_s = probe_lap(t, w_s, PROBE)
        p32, alpha, m_i, l_i = _softmax_step(s, m_i, l_i, tail & (j == n_kept - 1), tail_start, offs_n, qk_scale, N,
                                             dtype, HEAD_DIM)
        t, w_soft = probe_lap(t, w_soft, PROBE)
        l_i = _fenced(l_i)
        acc = warpgroup_mma_wait(0, deps=(o,))
        p = _carried(p32, acc, dtype)
        mbarrier.arrive(v_empty.index(prev), count=1)
        acc = _rescaled(acc, alpha, row_o, HEAD_DIM, LAZY)
        t, w_pv = probe_lap(t, w_pv, PROBE)
    return p, acc, m_i, l_i, t, w_kv, w_turn, w_s, w_soft, w_pv


@gluon.jit
def _q_operand(q_smem, q_ready, q_count, s_layout: gl.constexpr, WG: gl.constexpr, HEAD_DIM: gl.constexpr,
               Q_BUFS: gl.constexpr, Q_REGS: gl.constexpr, WAIT: gl.constexpr):
    """This consumer's Q half of its ``q_count``-th tile with kept blocks, as the QK products' A
    operand (registers if ``Q_REGS``, else the shared-memory buffer), and the buffer's index. ``WAIT``:
    wait for the copy to land first."""
    qi = (q_count % Q_BUFS) * 2 + WG
    if WAIT:
        mbarrier.wait(q_ready.index(qi), (q_count // Q_BUFS) & 1)
    q = q_smem.index(qi).reshape([HALF_M, HEAD_DIM])
    if Q_REGS:
        q = q.load(gl.DotOperandLayout(operand_index=0, parent=s_layout, k_width=_k_width(q.dtype)))
    return q, qi


@gluon.jit
def _block_constants(NB, s_layout: gl.constexpr, BLOCK: gl.constexpr):
    """What every consumer turn reads of a key block: its columns' offsets, S's zero accumulator
    (the QK product's unused C operand), and where the last block, the only one that can run past N,
    starts."""
    offs_n = gl.arange(0, BLOCK, layout=gl.SliceLayout(0, s_layout))
    return offs_n, gl.zeros([HALF_M, BLOCK], gl.float32, layout=s_layout), (NB - 1) * BLOCK


@gluon.jit
def _row_start(s_layout: gl.constexpr):
    """A consumer's running row max and row sum before a tile's first block: -inf and 0."""
    row_s: gl.constexpr = gl.SliceLayout(1, s_layout)
    return gl.full([HALF_M], float("-inf"), gl.float32, layout=row_s), gl.zeros([HALF_M], gl.float32, layout=row_s)


@gluon.jit
def _consumer(q_smem, k_smem, v_smem, q_ready, q_empty, k_ready, k_empty, v_ready, v_empty, turns, Out,
              Tiles, Probe, NB, N, qk_scale, stride_oz, stride_oh, stride_on, stride_od,
              Indices, QScale, KScale, VScale, stride_ih, stride_iq, NUM_HEADS, KV_GROUP, WG: gl.constexpr, BLOCK: gl.constexpr, HEAD_DIM: gl.constexpr, STAGES: gl.constexpr,
              Q_BUFS: gl.constexpr, Q_REGS: gl.constexpr, PROBE: gl.constexpr):
    """One warpgroup: rows [64·WG, +64) of each of this program's tiles, over all its kept key blocks.
    ``Q_REGS``: Q is read from shared memory once per tile, into registers that every QK product of
    the tile takes as its A operand (instead of each product reading it from shared memory)."""
    dtype: gl.constexpr = q_smem.dtype
    FP8: gl.constexpr = dtype.is_fp8()
    s_layout: gl.constexpr = _acc_layout(BLOCK, dtype)
    o_layout: gl.constexpr = _acc_layout(HEAD_DIM, dtype)
    offs_n, s_zero, tail_start = _block_constants(NB, s_layout, BLOCK)
    it = 0  # kept blocks consumed so far (ring slot and phase, and the turn count)
    q_count = 0
    probe_start(Probe, WG, PROBE)
    t = probe_now(PROBE)
    w_kv, w_turn, w_s, w_soft, w_pv, w_edges = probe_now(False), probe_now(False), probe_now(False), probe_now(False), probe_now(False), \
        probe_now(False)
    first, _, end, _ = _program_range(Tiles)
    head_n, qb_n, b_n, kt_n = _tile_fields(Tiles, first)
    for i in range(first, end):
        head, qb, b, kt = head_n, qb_n, b_n, kt_n
        head_n, qb_n, b_n, kt_n = _tile_fields(Tiles, i + 1)  # the table has a spare last row
        n_kept = kt >> 1
        tail = (kt & 1) == 1  # block nb - 1 is kept (it is then the last) and runs past N
        acc = gl.zeros([HALF_M, HEAD_DIM], gl.float32, layout=o_layout)
        m_i, l_i = _row_start(s_layout)
        if n_kept > 0:
            t = probe_now(PROBE)  # the probe's tile start
            qk_t, krow, kscales = _tile_scales(Indices, QScale, KScale, head, qb, b, qk_scale, stride_ih, stride_iq,
                                               NB, NUM_HEADS, KV_GROUP, FP8)
            q, qi = _q_operand(q_smem, q_ready, q_count, s_layout, WG, HEAD_DIM, Q_BUFS, Q_REGS, True)

            # Block 0: S only (there is no P yet).
            s = _qk_alone(it, q, k_smem, k_ready, k_empty, turns, s_zero, WG, BLOCK, HEAD_DIM, STAGES)
            p, alpha, m_i, l_i = _softmax_step(s, m_i, l_i, tail & (n_kept == 1), tail_start, offs_n,
                                               _block_scale(qk_t, krow, kscales, 0, FP8), N, dtype, HEAD_DIM)
            p = _carried(p, acc, dtype)

            t, w_edges = probe_lap(t, w_edges, PROBE)
            p, acc, m_i, l_i, t, w_kv, w_turn, w_s, w_soft, w_pv = _tile_turns(
                it, n_kept, tail, q, p, acc, m_i, l_i, k_smem, v_smem, k_ready, k_empty, v_ready, v_empty, turns,
                s_zero, offs_n, tail_start, qk_t, krow, kscales, N, t, w_kv, w_turn, w_s, w_soft, w_pv, WG, BLOCK,
                HEAD_DIM,
                STAGES, PROBE)
            t = probe_now(PROBE)  # the probe's tile end
            # Every QK product of this tile has retired: the producer may load the next tile's Q.
            mbarrier.arrive(q_empty.index(qi), count=1)

            acc = _pv_alone(it + n_kept - 1, p, acc, v_smem, v_ready, v_empty, BLOCK, HEAD_DIM, STAGES)
            q_count += 1
        it += n_kept

        _store_rows(_normalised(acc, l_i, VScale, b, head, NUM_HEADS, KV_GROUP, FP8), Out, head, qb, b, N,
                    stride_oz, stride_oh, stride_on, stride_od, WG, BLOCK, HEAD_DIM)
        if n_kept > 0:
            t, w_edges = probe_lap(t, w_edges, PROBE)
    probe_store(Probe, WG, w_kv, w_turn, w_s, w_soft, w_pv, it - q_count, w_edges, PROBE)


@gluon.jit
def _normalised(acc, l_i, VScale, b, head, NUM_HEADS, KV_GROUP, FP8: gl.constexpr):
    """One consumer's 64 output rows of a tile in fp32: O / l (l = 0 only where no block is kept:
    O = 0 there), times V's channel scales in FP8 (``runtime/quantize.py``: per batch, K head and
    channel)."""
    o_layout: gl.constexpr = acc.type.layout
    l_o = gl.convert_layout(l_i, gl.SliceLayout(1, o_layout))
    l_o = gl.where(l_o > 0.0, l_o, 1.0)
    out = acc / gl.expand_dims(l_o, 1)
    if FP8:
        offs_d = gl.arange(0, acc.shape[1], layout=gl.SliceLayout(0, o_layout))
        v_scales = gl.load(VScale + (b * (NUM_HEADS // KV_GROUP) + head // KV_GROUP) * acc.shape[1] + offs_d)
        out = out * gl.expand_dims(v_scales, 0)
    return out


@gluon.jit
def _store_rows(out, Out, head, qb, b, N, stride_oz, stride_oh, stride_on, stride_od,
                WG: gl.constexpr, BLOCK: gl.constexpr, HEAD_DIM: gl.constexpr):
    """Store one consumer's 64 rows of a tile (``_normalised``), the rows < N."""
    o_layout: gl.constexpr = out.type.layout
    row_o: gl.constexpr = gl.SliceLayout(1, o_layout)
    offs_m = qb * BLOCK + WG * HALF_M + gl.arange(0, HALF_M, layout=row_o)
    offs_d = gl.arange(0, HEAD_DIM, layout=gl.SliceLayout(0, o_layout))
    o_ptrs = (Out + b.to(gl.int64) * stride_oz + head.to(gl.int64) * stride_oh
              + gl.expand_dims(offs_m, 1) * stride_on + gl.expand_dims(offs_d, 0) * stride_od)
    gl.store(o_ptrs, out.to(Out.dtype.element_ty), mask=gl.expand_dims(offs_m < N, 1))


@gluon.jit
def _store_rows_tma(out, o_desc, o_smem, head, qb, b, WG: gl.constexpr, BLOCK: gl.constexpr):
    """As ``_store_rows`` through shared memory and a TMA store (rows ≥ N are clipped by the copy
    engine): no per-element addresses in registers, and the copy runs on while the consumer goes on."""
    out = out.to(o_smem.dtype)
    tma.store_wait(0)  # this consumer's previous store has read its buffer
    o_smem.reshape([HALF_M, out.shape[1]]).store(out)
    fence_async_shared()
    _tma_store(o_desc, [b, head, qb * BLOCK + WG * HALF_M, 0], o_smem)


@gluon.jit
def _consumer_flat(q_smem, k_smem, v_smem, q_ready, q_empty, k_ready, k_empty, v_ready, v_empty, turns, o_desc,
                   o_smem, Tiles, Probe, NB, N, qk_scale, Indices, QScale, KScale, VScale, stride_ih, stride_iq,
                   NUM_HEADS, KV_GROUP, WG: gl.constexpr, BLOCK: gl.constexpr, HEAD_DIM: gl.constexpr, STAGES: gl.constexpr,
                   Q_BUFS: gl.constexpr, Q_REGS: gl.constexpr, PROBE: gl.constexpr):
    """As ``_consumer``, with one pipeline over all of this program's kept blocks: the turn that
    issues a tile's first QK product also issues the previous tile's last PV product, whose rows
    then leave through a TMA store while the other consumer has the tensor cores. Every turn but
    the program's first carries both products, and the steady-state turns are ``_consumer``'s own
    (``_tile_turns``): a tile boundary costs the store and the Q wait, not a pipeline fill and
    drain."""
    dtype: gl.constexpr = q_smem.dtype
    FP8: gl.constexpr = dtype.is_fp8()
    s_layout: gl.constexpr = _acc_layout(BLOCK, dtype)
    o_layout: gl.constexpr = _acc_layout(HEAD_DIM, dtype)
    offs_n, s_zero, tail_start = _block_constants(NB, s_layout, BLOCK)
    first, empty_from, end, total = _program_range(Tiles)
    probe_start(Probe, WG, PROBE)
    t = probe_now(PROBE)
    w_kv, w_turn, w_s, w_soft, w_pv, w_edges = probe_now(False), probe_now(False), probe_now(False), probe_now(False), probe_now(False), \
        probe_now(False)
    if total > 0:
        head, qb, b, kt = _tile_fields(Tiles, first)
        head_n, qb_n, b_n, kt_n = _tile_fields(Tiles, first + 1)  # the table has a spare last row
        acc = gl.zeros([HALF_M, HEAD_DIM], gl.float32, layout=o_layout)
        m_i, l_i = _row_start(s_layout)

        # The program's first block: S only (there is no P yet).
        qk_t, krow, kscales = _tile_scales(Indices, QScale, KScale, head, qb, b, qk_scale, stride_ih, stride_iq, NB,
                                           NUM_HEADS, KV_GROUP, FP8)
        q, qi = _q_operand(q_smem, q_ready, 0, s_layout, WG, HEAD_DIM, Q_BUFS, Q_REGS, True)
        s = _qk_alone(0, q, k_smem, k_ready, k_empty, turns, s_zero, WG, BLOCK, HEAD_DIM, STAGES)
        p, alpha, m_i, l_i = _softmax_step(s, m_i, l_i, ((kt & 1) == 1) & (kt >> 1 == 1), tail_start, offs_n,
                                           _block_scale(qk_t, krow, kscales, 0, FP8), N, dtype, HEAD_DIM)
        p = _carried(p, acc, dtype)
        t, w_edges = probe_lap(t, w_edges, PROBE)

        it = 0  # kept blocks of the tiles before this one
        for i in range(first, empty_from):
            # This tile's blocks 1 .. n - 1 (its block 0 went through the turn before).
            q, qi = _q_operand(q_smem, q_ready, i - first, s_layout, WG, HEAD_DIM, Q_BUFS, Q_REGS, False)
            n_kept = kt >> 1
            p, acc, m_i, l_i, t, w_kv, w_turn, w_s, w_soft, w_pv = _tile_turns(
                it, n_kept, (kt & 1) == 1, q, p, acc, m_i, l_i, k_smem, v_smem, k_ready, k_empty, v_ready, v_empty,
                turns, s_zero, offs_n, tail_start, qk_t, krow, kscales, N, t, w_kv, w_turn, w_s, w_soft, w_pv, WG,
                BLOCK, HEAD_DIM, STAGES, PROBE)
            # Every QK product of this tile has retired: the producer may load a later tile's Q.
            mbarrier.arrive(q_empty.index(qi), count=1)
            it += n_kept
            if i + 1 < empty_from:
                # The next tile's block 0: its S beside this tile's last PV product, then this tile's
                # rows out. The next tile's softmax starts from nothing (alpha is then 0 and unused).
                t = probe_now(PROBE)
                head_p, qb_p, b_p, l_p = head, qb, b, l_i
                head, qb, b, kt = head_n, qb_n, b_n, kt_n
                head_n, qb_n, b_n, kt_n = _tile_fields(Tiles, i + 2)
                qk_t, krow, kscales = _tile_scales(Indices, QScale, KScale, head, qb, b, qk_scale, stride_ih,
                                                   stride_iq, NB, NUM_HEADS, KV_GROUP, FP8)
                q_next, _ = _q_operand(q_smem, q_ready, i + 1 - first, s_layout, WG, HEAD_DIM, Q_BUFS, Q_REGS,
                                       True)
                t, w_edges = probe_lap(t, w_edges, PROBE)
                s, o, prev, t, w_kv, w_turn = _issue_turn(it, q_next, p, acc, k_smem, v_smem, k_ready, k_empty,
                                                          v_ready, turns, s_zero, t, w_kv, w_turn, WG, BLOCK,
                                                          HEAD_DIM, STAGES, PROBE)
                t, w_s = probe_lap(t, w_s, PROBE)
                m_i, l_i = _row_start(s_layout)
                p32, alpha, m_i, l_i = _softmax_step(s, m_i, l_i, ((kt & 1) == 1) & (kt >> 1 == 1), tail_start,
                                                     offs_n, _block_scale(qk_t, krow, kscales, 0, FP8), N, dtype,
                                                     HEAD_DIM)
                t, w_soft = probe_lap(t, w_soft, PROBE)
                l_i = _fenced(l_i)
                acc = warpgroup_mma_wait(0, deps=(o,))
                p = _carried(p32, acc, dtype)
                mbarrier.arrive(v_empty.index(prev), count=1)
                t, w_pv = probe_lap(t, w_pv, PROBE)
                _store_rows_tma(_normalised(acc, l_p, VScale, b_p, head_p, NUM_HEADS, KV_GROUP, FP8), o_desc, o_smem,
                                head_p, qb_p, b_p, WG, BLOCK)
                acc = gl.zeros([HALF_M, HEAD_DIM], gl.float32, layout=o_layout)
                t, w_edges = probe_lap(t, w_edges, PROBE)
            else:
                # The program's last PV product, alone, and its rows. Here rather than after the
                # loop: there, ptxas copies P into the PV operand's registers in every turn
                t = probe_now(PROBE)
                acc = _pv_alone(it - 1, p, acc, v_smem, v_ready, v_empty, BLOCK, HEAD_DIM, STAGES)
                _store_rows_tma(_normalised(acc, l_i, VScale, b, head, NUM_HEADS, KV_GROUP, FP8), o_desc, o_smem,
                                head, qb, b, WG, BLOCK)
                t, w_edges = probe_lap(t, w_edges, PROBE)

    # Tiles with no kept block (last in the program's list) output zeros.
    zeros = gl.zeros([HALF_M, HEAD_DIM], gl.float32, layout=o_layout)
    for i in range(empty_from, end):
        head, qb, b, kt = _tile_fields(Tiles, i)
        _store_rows_tma(zeros, o_desc, o_smem, head, qb, b, WG, BLOCK)
    tma.store_wait(0)  # the program must not end before its stores have read shared memory
    # Every block after the program's first is a full turn here (a tile's first carries the last one's PV).
    probe_store(Probe, WG, w_kv, w_turn, w_s, w_soft, w_pv, gl.maximum(total - 1, 0), w_edges, PROBE)


@gluon.jit
def ws_block_sparse_fwd(
    q_desc, k_desc, v_desc, o_desc, Out, Indices, Tiles, Probe, QScale, KScale, VScale,
    stride_oz, stride_oh, stride_on, stride_od, stride_ih, stride_iq,
    qk_scale, N, NB, KV_GROUP, NUM_HEADS,
    HEAD_DIM: gl.constexpr, BLOCK: gl.constexpr, STAGES: gl.constexpr, Q_BUFS: gl.constexpr,
    CONSUMER_REGS: gl.constexpr, PRODUCER_REGS: gl.constexpr, FLAT: gl.constexpr, Q_REGS: gl.constexpr,
    PROBE: gl.constexpr,
):
    """Program p runs the tiles of its part of ``Tiles`` (``tile_table``); a tile is one plan block
    (BLOCK = 128 query rows) of one head and batch element.

    FP8 (e4m3 descriptors): q, K and V are ``runtime/quantize.py``'s operands, V's descriptor over
    its channel-major storage ([.., D, N], boxes [HEAD_DIM, BLOCK]), and QScale, KScale, VScale
    their float32 scales; the output is in ``o_desc``'s / Out's dtype. Otherwise the scales are
    not read."""
    dtype: gl.constexpr = q_desc.dtype
    # Q_BUFS tiles' Q (two 64-row halves each): the next tile's Q arrives during this one.
    q_smem = gl.allocate_shared_memory(dtype, [2 * Q_BUFS, 1, 1, HALF_M, HEAD_DIM], q_desc.layout)
    k_smem = gl.allocate_shared_memory(dtype, [STAGES, 1, 1, BLOCK, HEAD_DIM], k_desc.layout)
    if dtype.is_fp8():
        v_smem = gl.allocate_shared_memory(dtype, [STAGES, 1, 1, HEAD_DIM, BLOCK], v_desc.layout)
    else:
        v_smem = gl.allocate_shared_memory(dtype, [STAGES, 1, 1, BLOCK, HEAD_DIM], v_desc.layout)
    q_ready = gl.allocate_shared_memory(gl.int64, [2 * Q_BUFS, 1], mbarrier.MBarrierLayout())
    q_empty = gl.allocate_shared_memory(gl.int64, [2 * Q_BUFS, 1], mbarrier.MBarrierLayout())
    turns = gl.allocate_shared_memory(gl.int64, [2, 1], mbarrier.MBarrierLayout())
    k_ready = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
    k_empty = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
    v_ready = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
    v_empty = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
    for i in gl.static_range(2 * Q_BUFS):
        mbarrier.init(q_ready.index(i), count=1)
        mbarrier.init(q_empty.index(i), count=1)
    for i in gl.static_range(2):
        mbarrier.init(turns.index(i), count=1)
    for i in gl.static_range(STAGES):
        mbarrier.init(k_ready.index(i), count=1)
        mbarrier.init(v_ready.index(i), count=1)
        mbarrier.init(k_empty.index(i), count=2)  # both consumers release a slot
        mbarrier.init(v_empty.index(i), count=2)
    fence_async_shared()

    # Integer arguments equal to 1 arrive as constexprs (launch specialisation); partitions take tensors.
    n = gl.to_tensor(N)
    nb = gl.to_tensor(NB)
    s_oz = gl.to_tensor(stride_oz)
    s_oh = gl.to_tensor(stride_oh)
    s_on = gl.to_tensor(stride_on)
    s_od = gl.to_tensor(stride_od)
    s_ih = gl.to_tensor(stride_ih)
    s_iq = gl.to_tensor(stride_iq)
    kv_group = gl.to_tensor(KV_GROUP)
    num_heads = gl.to_tensor(NUM_HEADS)
    # (Argument tuples stay literal: a tuple held in a variable loses its constexprs.)
    if FLAT:
        # One output staging buffer per consumer for its TMA stores.
        o_smem = gl.allocate_shared_memory(o_desc.dtype, [2, 1, 1, HALF_M, HEAD_DIM], o_desc.layout)
        gl.warp_specialize([
            (_consumer_flat, (q_smem, k_smem, v_smem, q_ready, q_empty, k_ready, k_empty, v_ready, v_empty, turns,
                                 o_desc, o_smem.index(0), Tiles, Probe, nb, n, qk_scale, Indices, QScale, KScale,
                                 VScale, s_ih, s_iq, num_heads, kv_group, 0, BLOCK, HEAD_DIM, STAGES, Q_BUFS, Q_REGS,
                                 PROBE)),
            (_consumer_flat, (q_smem, k_smem, v_smem, q_ready, q_empty, k_ready, k_empty, v_ready, v_empty, turns,
                                 o_desc, o_smem.index(1), Tiles, Probe, nb, n, qk_scale, Indices, QScale, KScale,
                                 VScale, s_ih, s_iq, num_heads, kv_group, 1, BLOCK, HEAD_DIM, STAGES, Q_BUFS, Q_REGS,
                                 PROBE)),
            (_producer, (q_desc, k_desc, v_desc, q_smem, k_smem, v_smem, q_ready, q_empty, k_ready, k_empty,
                         v_ready, v_empty, Tiles, Indices, s_ih, s_iq, kv_group, BLOCK, STAGES, Q_BUFS)),
        ], [4, 1], [CONSUMER_REGS, PRODUCER_REGS])
    else:
        gl.warp_specialize([
            (_consumer, (q_smem, k_smem, v_smem, q_ready, q_empty, k_ready, k_empty, v_ready, v_empty, turns, Out,
                         Tiles, Probe, nb, n, qk_scale, s_oz, s_oh, s_on, s_od, Indices, QScale, KScale, VScale,
                         s_ih, s_iq, num_heads, kv_group, 0, BLOCK, HEAD_DIM, STAGES, Q_BUFS, Q_REGS, PROBE)),
            (_consumer, (q_smem, k_smem, v_smem, q_ready, q_empty, k_ready, k_empty, v_ready, v_empty, turns, Out,
                         Tiles, Probe, nb, n, qk_scale, s_oz, s_oh, s_on, s_od, Indices, QScale, KScale, VScale,
                         s_ih, s_iq, num_heads, kv_group, 1, BLOCK, HEAD_DIM, STAGES, Q_BUFS, Q_REGS, PROBE)),
            (_producer, (q_desc, k_desc, v_desc, q_smem, k_smem, v_smem, q_ready, q_empty, k_ready, k_empty,
                         v_ready, v_empty, Tiles, Indices, s_ih, s_iq, kv_group, BLOCK, STAGES, Q_BUFS)),
        ], [4, 1], [CONSUMER_REGS, PRODUCER_REGS])

