"""Experiment: block-sparse flash-attention forward for Hopper in Gluon (Triton's explicit-layout
dialect), timed against the runtime's Triton kernel by ``benchmarks/kernel_variants_gpu.py``.
Not part of the package: it did not beat the Triton kernel (reports/kernel/kernel-notes.md,
variant 9), and it cannot run under the CPU interpreter.

Same semantics, tables and work decomposition as ``attnsearch.runtime.triton_kernel``; what differs
is the schedule inside a program, which Gluon lets us write down and Triton 3.6 does not build on
its own (its pipeliner waits on every QK wgmma before the softmax that reads it):

* the QK product of the *next* kept key block is issued (async wgmma) before the softmax of the
  current one, so the tensor cores work while the softmax runs (FlashAttention-3's
  intra-warpgroup overlap);
* K and V arrive through TMA into rings of ``K_STAGES`` / ``V_STAGES`` shared-memory slots, each
  with its own mbarrier, refilled as soon as the wgmma reading a slot has retired.

Per iteration j (S = QK scores, P = softmax numerators, O = output accumulator):

    refill K[j+K_STAGES], V[j-1+V_STAGES]   (S[j] and PV[j-1] retired last iteration)
    issue S[j+1] = Q·K[j+1]ᵀ                in flight: S[j+1]
    softmax(S[j]) → P[j], alpha             tensor cores busy with S[j+1]
    O = O·alpha; issue O += P[j]·V[j]       in flight: S[j+1], PV[j]
    wait(0)

Keeping PV[j] in flight across the loop edge (retiring it with a ``wait(1)`` in the next
iteration) made ptxas serialise every wgmma (warning C7514: the loop's register copies read an
in-flight accumulator), which cost 20-40% (run 4); both retire before the edge instead.
64-row tiles, 4 warps, 2 K slots, 1 V slot: 255 registers and 112 KB, two programs per SM.
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

from attnsearch.runtime.block_tables import BlockTables
from attnsearch.runtime.device_caps import tma_compatible
from attnsearch.runtime.hopper_kernel import _GL_DTYPES, descriptor  # the TMA descriptors both kernels use

LOG2E = 1.4426950408889634


@gluon.jit
def _tile_start(row, idx, BLOCK: gl.constexpr, BLOCK_N: gl.constexpr):
    """First key of sub-tile ``idx`` (BLOCK_N keys) of this query block's kept key blocks."""
    SUB_N: gl.constexpr = BLOCK // BLOCK_N
    return gl.load(row + idx // SUB_N) * BLOCK + (idx % SUB_N) * BLOCK_N


@gluon.jit
def _load_kv(desc, bars, smem, slot, row, idx, n_tiles, b, kvh, BLOCK: gl.constexpr, BLOCK_N: gl.constexpr):
    """TMA of key sub-tile ``idx`` into ring slot ``slot`` (nothing when idx ≥ n_tiles)."""
    pred = idx < n_tiles
    start = _tile_start(row, gl.minimum(idx, n_tiles - 1), BLOCK, BLOCK_N)
    mbarrier.expect(bars.index(slot), desc.block_type.nbytes, pred=pred)
    tma.async_copy_global_to_shared(desc, [b, kvh, start, 0], bars.index(slot), smem.index(slot), pred=pred)


@gluon.jit
def _softmax_step(s, m_i, l_i, start, offs_n, qk_scale, N, BLOCK_N: gl.constexpr):
    """Online-softmax update of one key tile's scores ``s`` (keys ≥ N masked in the last tile)."""
    if start + BLOCK_N > N:
        s = gl.where(gl.expand_dims(start + offs_n < N, 0), s, float("-inf"))
    m_new = gl.maximum(m_i, gl.max(s, axis=1) * qk_scale)
    p = gl.exp2(s * qk_scale - gl.expand_dims(m_new, 1))
    alpha = gl.exp2(m_i - m_new)
    l_i = l_i * alpha + gl.sum(p, axis=1)
    return p, alpha, m_new, l_i


@gluon.jit
def _attend(q, k_smem, v_smem, k_bars, v_bars, k_desc, v_desc, row, n_tiles, b, kvh, qk_scale, N,
            acc, s_layout: gl.constexpr, o_layout: gl.constexpr, p_layout: gl.constexpr,
            BLOCK_M: gl.constexpr, BLOCK: gl.constexpr, BLOCK_N: gl.constexpr, HEAD_DIM: gl.constexpr,
            K_STAGES: gl.constexpr, V_STAGES: gl.constexpr):
    """The pipelined loop over this query tile's ``n_tiles ≥ 1`` key sub-tiles → (O, l)."""
    row_s: gl.constexpr = gl.SliceLayout(1, s_layout)
    row_o: gl.constexpr = gl.SliceLayout(1, o_layout)
    offs_n = gl.arange(0, BLOCK_N, layout=gl.SliceLayout(0, s_layout))
    s_zero = gl.zeros([BLOCK_M, BLOCK_N], gl.float32, layout=s_layout)
    m_i = gl.full([BLOCK_M], float("-inf"), gl.float32, layout=row_s)
    l_i = gl.zeros([BLOCK_M], gl.float32, layout=row_s)

    mbarrier.wait(k_bars.index(0), 0)
    k0 = k_smem.index(0).reshape([BLOCK_N, HEAD_DIM]).permute((1, 0))
    s = warpgroup_mma_wait(0, deps=(warpgroup_mma(q, k0, s_zero, use_acc=False, is_async=True),))
    start = _tile_start(row, 0, BLOCK, BLOCK_N)
    for j in range(n_tiles - 1):
        nxt = j + 1
        # S[j] and PV[j-1] retired at the end of the last iteration: their K and V slots are free.
        _load_kv(k_desc, k_bars, k_smem, j % K_STAGES, row, j + K_STAGES, n_tiles, b, kvh, BLOCK, BLOCK_N)
        if j > 0:
            _load_kv(v_desc, v_bars, v_smem, (j - 1) % V_STAGES, row, j - 1 + V_STAGES, n_tiles, b, kvh, BLOCK,
                     BLOCK_N)
        mbarrier.wait(k_bars.index(nxt % K_STAGES), (nxt // K_STAGES) & 1)
        k_next = k_smem.index(nxt % K_STAGES).reshape([BLOCK_N, HEAD_DIM]).permute((1, 0))
        s_next = warpgroup_mma(q, k_next, s_zero, use_acc=False, is_async=True)

        p, alpha, m_i, l_i = _softmax_step(s, m_i, l_i, start, offs_n, qk_scale, N, BLOCK_N)  # beside S[j+1]

        acc = acc * gl.expand_dims(gl.convert_layout(alpha, row_o), 1)
        mbarrier.wait(v_bars.index(j % V_STAGES), (j // V_STAGES) & 1)
        v = v_smem.index(j % V_STAGES).reshape([BLOCK_N, HEAD_DIM])
        o = warpgroup_mma(gl.convert_layout(p.to(q.dtype), p_layout), v, acc, is_async=True)
        # Retire both before the loop edge: an accumulator in flight across it makes ptxas serialise
        # every wgmma (C7514: the loop's register copies read in-flight accumulators).
        s, acc = warpgroup_mma_wait(0, deps=(s_next, o))
        start = _tile_start(row, nxt, BLOCK, BLOCK_N)

    last = n_tiles - 1
    p, alpha, m_i, l_i = _softmax_step(s, m_i, l_i, start, offs_n, qk_scale, N, BLOCK_N)
    acc = acc * gl.expand_dims(gl.convert_layout(alpha, row_o), 1)
    if last > 0:  # with one V slot, V[last] is loaded only now
        _load_kv(v_desc, v_bars, v_smem, (last - 1) % V_STAGES, row, last - 1 + V_STAGES, n_tiles, b, kvh, BLOCK,
                 BLOCK_N)
    mbarrier.wait(v_bars.index(last % V_STAGES), (last // V_STAGES) & 1)
    v = v_smem.index(last % V_STAGES).reshape([BLOCK_N, HEAD_DIM])
    o = warpgroup_mma(gl.convert_layout(p.to(q.dtype), p_layout), v, acc, is_async=True)
    acc = warpgroup_mma_wait(0, deps=(o,))
    return acc, l_i


@gluon.jit
def _gluon_block_sparse_fwd(
    q_desc, k_desc, v_desc, Out, Counts, Indices, Work,
    stride_oz, stride_oh, stride_on, stride_od,
    stride_ch, stride_ih, stride_iq,
    qk_scale, N, NB, BATCH, KV_GROUP,
    HEAD_DIM: gl.constexpr, BLOCK: gl.constexpr, BLOCK_M: gl.constexpr, BLOCK_N: gl.constexpr,
    K_STAGES: gl.constexpr, V_STAGES: gl.constexpr, num_warps: gl.constexpr,
):
    """One program = one BLOCK_M query sub-tile of one work item and batch (as ``triton_kernel``)."""
    SUB_M: gl.constexpr = BLOCK // BLOCK_M
    dtype: gl.constexpr = q_desc.dtype
    # wgmma layouts: warps stacked along M (each warpgroup owns 64 rows), one instruction spans N.
    s_layout: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[num_warps, 1],
                                                       instr_shape=[16, BLOCK_N, 16])
    o_layout: gl.constexpr = gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[num_warps, 1],
                                                       instr_shape=[16, HEAD_DIM, 16])
    p_layout: gl.constexpr = gl.DotOperandLayout(operand_index=0, parent=o_layout, k_width=2)

    pid = gl.program_id(0)
    b = pid % BATCH
    rest = pid // BATCH
    sub_m = rest % SUB_M
    item = gl.load(Work + rest // SUB_M)
    head = item // NB
    qb = item % NB
    kvh = head // KV_GROUP
    q_row = qb * BLOCK + sub_m * BLOCK_M
    row = Indices + head * stride_ih + qb * stride_iq
    n_kept = gl.load(Counts + head * stride_ch + qb)
    n_tiles = n_kept * (BLOCK // BLOCK_N)

    q_smem = gl.allocate_shared_memory(dtype, [1, 1, BLOCK_M, HEAD_DIM], q_desc.layout)
    k_smem = gl.allocate_shared_memory(dtype, [K_STAGES, 1, 1, BLOCK_N, HEAD_DIM], k_desc.layout)
    v_smem = gl.allocate_shared_memory(dtype, [V_STAGES, 1, 1, BLOCK_N, HEAD_DIM], v_desc.layout)
    q_bar = gl.allocate_shared_memory(gl.int64, [1], mbarrier.MBarrierLayout())
    k_bars = gl.allocate_shared_memory(gl.int64, [K_STAGES, 1], mbarrier.MBarrierLayout())
    v_bars = gl.allocate_shared_memory(gl.int64, [V_STAGES, 1], mbarrier.MBarrierLayout())
    mbarrier.init(q_bar, count=1)
    for i in gl.static_range(K_STAGES):
        mbarrier.init(k_bars.index(i), count=1)
    for i in gl.static_range(V_STAGES):
        mbarrier.init(v_bars.index(i), count=1)
    fence_async_shared()

    # Rows ≥ N of the Q box and keys ≥ N of the last K/V box arrive as zeros (TMA bounds).
    mbarrier.expect(q_bar, q_desc.block_type.nbytes)
    tma.async_copy_global_to_shared(q_desc, [b, head, q_row, 0], q_bar, q_smem)
    for i in gl.static_range(K_STAGES):
        _load_kv(k_desc, k_bars, k_smem, i, row, i, n_tiles, b, kvh, BLOCK, BLOCK_N)
    for i in gl.static_range(V_STAGES):
        _load_kv(v_desc, v_bars, v_smem, i, row, i, n_tiles, b, kvh, BLOCK, BLOCK_N)

    acc = gl.zeros([BLOCK_M, HEAD_DIM], gl.float32, layout=o_layout)
    l_i = gl.zeros([BLOCK_M], gl.float32, layout=gl.SliceLayout(1, s_layout))
    mbarrier.wait(q_bar, 0)
    if n_kept > 0:  # a query block with no kept key block outputs zeros
        q = q_smem.reshape([BLOCK_M, HEAD_DIM])
        acc, l_i = _attend(q, k_smem, v_smem, k_bars, v_bars, k_desc, v_desc, row, n_tiles, b, kvh, qk_scale,
                           N, acc, s_layout, o_layout, p_layout, BLOCK_M, BLOCK, BLOCK_N, HEAD_DIM, K_STAGES,
                           V_STAGES)

    mbarrier.invalidate(q_bar)
    for i in gl.static_range(K_STAGES):
        mbarrier.invalidate(k_bars.index(i))
    for i in gl.static_range(V_STAGES):
        mbarrier.invalidate(v_bars.index(i))

    # Epilogue: normalise (l = 0 only for rows with no kept key: acc = 0 there) and store rows < N.
    row_o: gl.constexpr = gl.SliceLayout(1, o_layout)
    l_o = gl.convert_layout(l_i, row_o)
    l_o = gl.where(l_o > 0.0, l_o, 1.0)
    out = acc / gl.expand_dims(l_o, 1)
    offs_m = q_row + gl.arange(0, BLOCK_M, layout=row_o)
    offs_d = gl.arange(0, HEAD_DIM, layout=gl.SliceLayout(0, o_layout))
    o_ptrs = (Out + b.to(gl.int64) * stride_oz + head.to(gl.int64) * stride_oh
              + gl.expand_dims(offs_m, 1) * stride_on + gl.expand_dims(offs_d, 0) * stride_od)
    gl.store(o_ptrs, out.to(dtype), mask=gl.expand_dims(offs_m < N, 1))


# --- launcher -----------------------------------------------------------------------------------


def supported_reasons(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, block_size: int) -> list[str]:
    """Why this kernel cannot run the call (empty: it can)."""
    reasons = []
    if not q.is_cuda or torch.cuda.get_device_capability(q.device)[0] != 9:
        reasons.append("the Gluon kernel is built for Hopper (sm_90)")
    if q.dtype not in _GL_DTYPES:
        reasons.append(f"dtype {q.dtype} is not fp16 or bf16")
    if q.shape[-1] not in (64, 128):
        reasons.append(f"head_dim {q.shape[-1]} is not 64 or 128")
    if block_size not in (64, 128):
        reasons.append(f"block size {block_size} is not 64 or 128")
    for name, t in (("q", q), ("k", k), ("v", v)):
        if not tma_compatible(t):
            reasons.append(f"{name}: TMA needs a unit last stride and 16-byte aligned base and strides")
    return reasons


def launch(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, out: torch.Tensor, tables: BlockTables,
           work: torch.Tensor, scale: float, block_m: int = 64, num_warps: int = 4, k_stages: int = 2,
           v_stages: int = 1, block_n: int | None = None) -> None:
    """One launch over ``work``; arguments as ``triton_kernel.launch`` (block_n None: the block size)."""
    batch, num_heads, n, d = q.shape
    bs = tables.block_size
    block_n = bs if block_n is None else block_n
    if bs % block_m or block_m != 16 * num_warps or bs % block_n:
        raise ValueError(f"block_m {block_m} / block_n {block_n} must divide the block size {bs}, and block_m "
                         f"equal 16 × num_warps ({num_warps}): each warpgroup owns 64 rows")
    num_tiles = work.numel() * (bs // block_m) * batch
    _gluon_block_sparse_fwd[(num_tiles,)](
        descriptor(q, block_m), descriptor(k, block_n), descriptor(v, block_n), out,
        tables.counts, tables.indices, work,
        *out.stride(), tables.counts.stride(0), tables.indices.stride(0), tables.indices.stride(1),
        scale * LOG2E, n, tables.num_blocks, batch, num_heads // k.shape[1],
        HEAD_DIM=d, BLOCK=bs, BLOCK_M=block_m, BLOCK_N=block_n, K_STAGES=k_stages, V_STAGES=v_stages,
        num_warps=num_warps,
    )


def forward(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, tables: BlockTables, scale: float,
            out: torch.Tensor | None = None, block_m: int = 64, num_warps: int = 4, k_stages: int = 2,
            v_stages: int = 1, block_n: int | None = None) -> torch.Tensor:
    """As ``triton_kernel.forward``, on Hopper."""
    if out is None:
        out = torch.empty_like(q)
    if tables.skip_heads:
        out[:, list(tables.skip_heads)] = 0
    for item in tables.launches:
        launch(q, k, v, out, tables, item.work, scale, block_m, num_warps, k_stages, v_stages, block_n)
    return out


__all__ = ["forward", "launch", "supported_reasons"]
