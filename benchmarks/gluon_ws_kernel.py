"""Experiment: the block-sparse forward as a warp-specialised Hopper kernel in Gluon, in the schedule
of FlashAttention-3 (Shah et al., 2024, §3.1-3.2): a producer warp feeds K/V through TMA rings, two
consumer warpgroups own 64 query rows each of one 128-row plan block, and the two take turns on the
tensor cores ("ping-pong") so that one's softmax runs while the other's wgmmas do.

Same semantics, tables and work list as ``attnsearch.runtime.triton_kernel`` (block size 128 only:
one program = one plan block of one (batch, head)); timed against it by
``benchmarks/kernel_variants_gpu.py``. Cannot run under the CPU interpreter; compile it for sm_90a on
the CPU machine with ``benchmarks/kernel_compile_probe.py --gluon-ws``.

Partitions (``gl.warp_specialize``; registers move between them with setmaxnreg):

* producer, 1 warp, 24 registers: TMA of the two Q halves, then K[j] and V[j] of every kept key
  block j into ``STAGES``-deep rings (``k_ready``/``v_ready`` signalled by the copy engine,
  ``k_empty``/``v_empty`` by both consumers when their wgmma has read the slot);
* two consumers, 4 warps each (the default partition is consumer 0), per kept block j:

      wait my turn                      (turns[WG], flipped by the other consumer)
      issue S[j] = Q·K[j]ᵀ, O += P[j-1]·V[j-1]
      pass the turn
      wait S[j]                         PV[j-1] still in flight
      softmax(S[j]) → P[j], alpha       beside PV[j-1] and the other consumer's wgmmas
      wait PV[j-1]; O *= alpha

  Both products retire before the loop edge: an accumulator in flight across it makes ptxas
  serialise every wgmma (C7514; reports/kernel/kernel-notes.md, variant 9).
"""

from __future__ import annotations

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
from triton.experimental.gluon.nvidia.hopper import TensorDescriptor

from attnsearch.runtime.block_tables import BlockTables

LOG2E = 1.4426950408889634
HALF_M = gl.constexpr(64)  # query rows per consumer warpgroup (one wgmma M)
_GL_DTYPES = {torch.float16: gl.float16, torch.bfloat16: gl.bfloat16}


@gluon.jit
def _producer(q_desc, k_desc, v_desc, q_smem, k_smem, v_smem, q_bars, k_ready, k_empty, v_ready, v_empty,
              row, n_kept, b, head, kvh, q_row, BLOCK: gl.constexpr, STAGES: gl.constexpr):
    """One warp: Q once, then K[j], V[j] for every kept key block, each as soon as its slot is free."""
    has_work = n_kept > 0  # a CTA must not exit with copies in flight
    for w in gl.static_range(2):
        mbarrier.expect(q_bars.index(w), q_desc.block_type.nbytes, pred=has_work)
        tma.async_copy_global_to_shared(q_desc, [b, head, q_row + w * HALF_M, 0], q_bars.index(w),
                                        q_smem.index(w), pred=has_work)
    for j in range(n_kept):
        slot = j % STAGES
        phase = (j // STAGES) & 1
        start = gl.load(row + j) * BLOCK
        # A fresh mbarrier counts as having completed phase 1: the first pass over the ring is free.
        mbarrier.wait(k_empty.index(slot), phase ^ 1)
        mbarrier.expect(k_ready.index(slot), k_desc.block_type.nbytes)
        tma.async_copy_global_to_shared(k_desc, [b, kvh, start, 0], k_ready.index(slot), k_smem.index(slot))
        mbarrier.wait(v_empty.index(slot), phase ^ 1)
        mbarrier.expect(v_ready.index(slot), v_desc.block_type.nbytes)
        tma.async_copy_global_to_shared(v_desc, [b, kvh, start, 0], v_ready.index(slot), v_smem.index(slot))


@gluon.jit
def _softmax_step(s, m_i, l_i, start, offs_n, qk_scale, N, BLOCK: gl.constexpr):
    """Online-softmax update with one key block's scores (keys ≥ N masked in the last block)."""
    if start + BLOCK > N:
        s = gl.where(gl.expand_dims(start + offs_n < N, 0), s, float("-inf"))
    m_new = gl.maximum(m_i, gl.max(s, axis=1) * qk_scale)
    p = gl.exp2(s * qk_scale - gl.expand_dims(m_new, 1))
    alpha = gl.exp2(m_i - m_new)
    l_i = l_i * alpha + gl.sum(p, axis=1)
    return p, alpha, m_new, l_i


@gluon.jit
def _consumer(q_smem, k_smem, v_smem, q_bars, k_ready, k_empty, v_ready, v_empty, turns, Out,
              row, n_kept, b, head, q_row, N, qk_scale, stride_oz, stride_oh, stride_on, stride_od,
              WG: gl.constexpr, BLOCK: gl.constexpr, HEAD_DIM: gl.constexpr, STAGES: gl.constexpr):
    """One warpgroup: rows [q_row + 64·WG, +64) of the plan block, over all its kept key blocks."""
    dtype: gl.constexpr = q_smem.dtype
    s_layout: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[4, 1],
                                                       instr_shape=[16, BLOCK, 16])
    o_layout: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[4, 1],
                                                       instr_shape=[16, HEAD_DIM, 16])
    p_layout: gl.constexpr = gl.DotOperandLayout(operand_index=0, parent=o_layout, k_width=2)
    row_s: gl.constexpr = gl.SliceLayout(1, s_layout)
    row_o: gl.constexpr = gl.SliceLayout(1, o_layout)
    # Turn t of this consumer waits on parity (t & 1) ^ (1 - WG): consumer 0 goes first.
    OTHER: gl.constexpr = 1 - WG

    offs_n = gl.arange(0, BLOCK, layout=gl.SliceLayout(0, s_layout))
    s_zero = gl.zeros([HALF_M, BLOCK], gl.float32, layout=s_layout)
    acc = gl.zeros([HALF_M, HEAD_DIM], gl.float32, layout=o_layout)
    m_i = gl.full([HALF_M], float("-inf"), gl.float32, layout=row_s)
    l_i = gl.zeros([HALF_M], gl.float32, layout=row_s)

    if n_kept > 0:
        mbarrier.wait(q_bars.index(WG), 0)
        q = q_smem.index(WG).reshape([HALF_M, HEAD_DIM])

        # Block 0: S only (there is no P yet).
        start = gl.load(row) * BLOCK
        mbarrier.wait(k_ready.index(0), 0)
        mbarrier.wait(turns.index(WG), OTHER)
        k_t = k_smem.index(0).reshape([BLOCK, HEAD_DIM]).permute((1, 0))
        s = warpgroup_mma(q, k_t, s_zero, use_acc=False, is_async=True)
        mbarrier.arrive(turns.index(OTHER), count=1)
        s = warpgroup_mma_wait(0, deps=(s,))
        mbarrier.arrive(k_empty.index(0), count=1)
        p, alpha, m_i, l_i = _softmax_step(s, m_i, l_i, start, offs_n, qk_scale, N, BLOCK)

        for j in range(1, n_kept):
            slot = j % STAGES
            prev = (j - 1) % STAGES
            start = gl.load(row + j) * BLOCK
            mbarrier.wait(k_ready.index(slot), (j // STAGES) & 1)
            mbarrier.wait(v_ready.index(prev), ((j - 1) // STAGES) & 1)
            mbarrier.wait(turns.index(WG), (j & 1) ^ OTHER)
            k_t = k_smem.index(slot).reshape([BLOCK, HEAD_DIM]).permute((1, 0))
            s = warpgroup_mma(q, k_t, s_zero, use_acc=False, is_async=True)
            v = v_smem.index(prev).reshape([BLOCK, HEAD_DIM])
            o = warpgroup_mma(gl.convert_layout(p.to(dtype), p_layout), v, acc, is_async=True)
            mbarrier.arrive(turns.index(OTHER), count=1)
            # wgmma groups retire in order: S[j] (issued first) is done, PV[j-1] may still run.
            s = warpgroup_mma_wait(1, deps=(s,))
            mbarrier.arrive(k_empty.index(slot), count=1)
            p, alpha, m_i, l_i = _softmax_step(s, m_i, l_i, start, offs_n, qk_scale, N, BLOCK)
            acc = warpgroup_mma_wait(0, deps=(o,))
            mbarrier.arrive(v_empty.index(prev), count=1)
            acc = acc * gl.expand_dims(gl.convert_layout(alpha, row_o), 1)

        last = (n_kept - 1) % STAGES
        mbarrier.wait(v_ready.index(last), ((n_kept - 1) // STAGES) & 1)
        v = v_smem.index(last).reshape([BLOCK, HEAD_DIM])
        o = warpgroup_mma(gl.convert_layout(p.to(dtype), p_layout), v, acc, is_async=True)
        acc = warpgroup_mma_wait(0, deps=(o,))
        mbarrier.arrive(v_empty.index(last), count=1)

    # Normalise (l = 0 only where no block is kept: acc = 0 there) and store the rows < N.
    l_o = gl.convert_layout(l_i, row_o)
    l_o = gl.where(l_o > 0.0, l_o, 1.0)
    out = acc / gl.expand_dims(l_o, 1)
    offs_m = q_row + WG * HALF_M + gl.arange(0, HALF_M, layout=row_o)
    offs_d = gl.arange(0, HEAD_DIM, layout=gl.SliceLayout(0, o_layout))
    o_ptrs = (Out + b.to(gl.int64) * stride_oz + head.to(gl.int64) * stride_oh
              + gl.expand_dims(offs_m, 1) * stride_on + gl.expand_dims(offs_d, 0) * stride_od)
    gl.store(o_ptrs, out.to(dtype), mask=gl.expand_dims(offs_m < N, 1))


@gluon.jit
def _ws_block_sparse_fwd(
    q_desc, k_desc, v_desc, Out, Counts, Indices, Work,
    stride_oz, stride_oh, stride_on, stride_od,
    stride_ch, stride_ih, stride_iq,
    qk_scale, N, NB, BATCH, KV_GROUP,
    HEAD_DIM: gl.constexpr, BLOCK: gl.constexpr, STAGES: gl.constexpr,
    CONSUMER_REGS: gl.constexpr, PRODUCER_REGS: gl.constexpr,
):
    """One program = one plan block (BLOCK = 128 query rows) of one work item and batch."""
    dtype: gl.constexpr = q_desc.dtype
    pid = gl.program_id(0)
    b = pid % BATCH
    item = gl.load(Work + pid // BATCH)
    head = item // NB
    qb = item % NB
    kvh = head // KV_GROUP
    q_row = qb * BLOCK
    row = Indices + head * stride_ih + qb * stride_iq
    n_kept = gl.load(Counts + head * stride_ch + qb)

    q_smem = gl.allocate_shared_memory(dtype, [2, 1, 1, HALF_M, HEAD_DIM], q_desc.layout)
    k_smem = gl.allocate_shared_memory(dtype, [STAGES, 1, 1, BLOCK, HEAD_DIM], k_desc.layout)
    v_smem = gl.allocate_shared_memory(dtype, [STAGES, 1, 1, BLOCK, HEAD_DIM], v_desc.layout)
    q_bars = gl.allocate_shared_memory(gl.int64, [2, 1], mbarrier.MBarrierLayout())
    turns = gl.allocate_shared_memory(gl.int64, [2, 1], mbarrier.MBarrierLayout())
    k_ready = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
    k_empty = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
    v_ready = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
    v_empty = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
    for i in gl.static_range(2):
        mbarrier.init(q_bars.index(i), count=1)
        mbarrier.init(turns.index(i), count=1)
    for i in gl.static_range(STAGES):
        mbarrier.init(k_ready.index(i), count=1)
        mbarrier.init(v_ready.index(i), count=1)
        mbarrier.init(k_empty.index(i), count=2)  # both consumers release a slot
        mbarrier.init(v_empty.index(i), count=2)
    fence_async_shared()

    # Integer arguments equal to 1 arrive as constexprs (launch specialisation); partitions take tensors.
    n = gl.to_tensor(N)
    s_oz = gl.to_tensor(stride_oz)
    s_oh = gl.to_tensor(stride_oh)
    s_on = gl.to_tensor(stride_on)
    s_od = gl.to_tensor(stride_od)
    gl.warp_specialize([
        (_consumer, (q_smem, k_smem, v_smem, q_bars, k_ready, k_empty, v_ready, v_empty, turns, Out, row, n_kept,
                     b, head, q_row, n, qk_scale, s_oz, s_oh, s_on, s_od, 0, BLOCK, HEAD_DIM, STAGES)),
        (_consumer, (q_smem, k_smem, v_smem, q_bars, k_ready, k_empty, v_ready, v_empty, turns, Out, row, n_kept,
                     b, head, q_row, n, qk_scale, s_oz, s_oh, s_on, s_od, 1, BLOCK, HEAD_DIM, STAGES)),
        (_producer, (q_desc, k_desc, v_desc, q_smem, k_smem, v_smem, q_bars, k_ready, k_empty, v_ready, v_empty,
                     row, n_kept, b, head, kvh, q_row, BLOCK, STAGES)),
    ], [4, 1], [CONSUMER_REGS, PRODUCER_REGS])


# --- launcher -----------------------------------------------------------------------------------

#: 12 warps (two consumer warpgroups and the producer's, rounded up) at 168 registers fill the
#: 65,536-register file; setmaxnreg then moves them to the consumers.
MAXNREG = 168


def supported_reasons(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, block_size: int) -> list[str]:
    """Why this kernel cannot run the call (empty: it can)."""
    reasons = []
    if not q.is_cuda or torch.cuda.get_device_capability(q.device)[0] != 9:
        reasons.append("the warp-specialised Gluon kernel is built for Hopper (sm_90)")
    if q.dtype not in _GL_DTYPES:
        reasons.append(f"dtype {q.dtype} is not fp16 or bf16")
    if q.shape[-1] not in (64, 128):
        reasons.append(f"head_dim {q.shape[-1]} is not 64 or 128")
    if block_size != 128:
        reasons.append(f"block size {block_size} is not 128 (two 64-row consumer warpgroups per block)")
    for name, t in (("q", q), ("k", k), ("v", v)):
        item = t.element_size()
        if t.stride(-1) != 1 or t.data_ptr() % 16 or any((s * item) % 16 for s in t.stride()[:-1]):
            reasons.append(f"{name}: TMA needs a unit last stride and 16-byte aligned base and strides")
    return reasons


def descriptor(t: torch.Tensor, rows: int) -> TensorDescriptor:
    box = [1, 1, rows, t.shape[-1]]
    layout = gl.NVMMASharedLayout.get_default_for(box, _GL_DTYPES[t.dtype])
    return TensorDescriptor(t, list(t.shape), list(t.stride()), box, layout)


def launch(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, out: torch.Tensor, tables: BlockTables,
           work: torch.Tensor, scale: float, stages: int = 2, consumer_regs: int = 240,
           producer_regs: int = 24) -> None:
    """One launch over ``work``; arguments as ``triton_kernel.launch``."""
    batch, num_heads, n, d = q.shape
    bs = tables.block_size
    _ws_block_sparse_fwd[(work.numel() * batch,)](
        descriptor(q, HALF_M.value), descriptor(k, bs), descriptor(v, bs), out,
        tables.counts, tables.indices, work,
        *out.stride(), tables.counts.stride(0), tables.indices.stride(0), tables.indices.stride(1),
        scale * LOG2E, n, tables.num_blocks, batch, num_heads // k.shape[1],
        HEAD_DIM=d, BLOCK=bs, STAGES=stages, CONSUMER_REGS=consumer_regs, PRODUCER_REGS=producer_regs,
        num_warps=4, maxnreg=MAXNREG,
    )


def forward(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, tables: BlockTables, scale: float,
            out: torch.Tensor | None = None, stages: int = 2, consumer_regs: int = 240,
            producer_regs: int = 24) -> torch.Tensor:
    """As ``triton_kernel.forward``, on Hopper, block size 128."""
    reasons = supported_reasons(q, k, v, tables.block_size)
    if reasons:
        raise ValueError("; ".join(reasons))
    if out is None:
        out = torch.empty_like(q)
    if tables.skip_heads:
        out[:, list(tables.skip_heads)] = 0
    for item in tables.launches:
        launch(q, k, v, out, tables, item.work, scale, stages, consumer_regs, producer_regs)
    return out


__all__ = ["forward", "launch", "supported_reasons"]
