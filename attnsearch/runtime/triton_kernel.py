"""Block-sparse flash-attention forward in Triton.

Layering follows Triton's fused-attention tutorial: ``_attn_fwd_tile`` (one key tile of the online
softmax), ``_block_sparse_attn_fwd`` (one program = one query tile of one (batch, head): walks the
kept key blocks of its query block), ``launch`` (strides, grid, descriptors), ``forward`` (what the
backend calls: allocates the output, zero-fills skip heads, one launch per ``Launch``).

Semantics (DESIGN.md): softmax over the keys of the kept blocks only; keys ≥ N are masked; rows
≥ N are not stored; a row with no kept block outputs zero. fp32 accumulation, exp2 softmax with
the scale folded into log2(e). Inputs are [batch, heads, N, D] with any strides (no copies).

Work decomposition: a program handles BLOCK_M query rows (a sub-tile of plan block ``BLOCK``) and
walks the kept key blocks in BLOCK_N sub-tiles. Programs are numbered
``pid = (item · SUB_M + sub_m) · BATCH + b`` over the launch's ordered work list (block_tables:
head-major by default), so the sub-tiles and batch copies of one item run side by side. With
``KernelConfig.persistent = k`` the grid is k × #SMs programs instead, each taking the next tile
(same numbering) from an atomic counter until all are done (``_attn_fwd_program`` is one tile).

On Hopper the K/V tiles may come through the bulk tensor copy engine (TMA, 4-D host descriptors
over the strided tensors, out-of-range rows zero-filled) instead of pointer loads.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
import triton
import triton.language as tl

from . import tuning_cache
from .block_tables import BlockTables
from .device_caps import num_sms, tma_compatible

from .dispatch import HEAD_DIMS  # noqa: F401  (re-exported)
DTYPES = (torch.float16, torch.bfloat16, torch.float32)
LOG2E = 1.4426950408889634


def interpreter_active() -> bool:
    """Kernels were decorated under TRITON_INTERPRET=1 (they then run on CPU tensors)."""
    return _INTERPRETED


@triton.jit
def _load_kv_tile(src, b, kvh, start_n, offs_kv, offs_d, stride_n, stride_d, N, BLOCK_N: tl.constexpr,
                  HEAD_DIM: tl.constexpr, MASK_KEYS: tl.constexpr, USE_TMA: tl.constexpr):
    """The [BLOCK_N, HEAD_DIM] K or V tile at key ``start_n`` (a TMA descriptor, or a base pointer)."""
    if USE_TMA:
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
                   stride_kn, stride_kd, stride_vn, stride_vd, qk_scale, offs_n, offs_d,
                   BLOCK_N: tl.constexpr, HEAD_DIM: tl.constexpr, MASK_KEYS: tl.constexpr,
                   USE_TMA: tl.constexpr, INPUT_PRECISION: tl.constexpr):
    """One BLOCK_N key tile starting at ``start_n``: update the running max, sum and output."""
    offs_kv = start_n + offs_n
    k = _load_kv_tile(k_src, b, kvh, start_n, offs_kv, offs_d, stride_kn, stride_kd, N, BLOCK_N, HEAD_DIM,
                      MASK_KEYS, USE_TMA)
    qk = tl.dot(q, tl.trans(k), input_precision=INPUT_PRECISION)
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
                      MASK_KEYS, USE_TMA)
    acc = tl.dot(p.to(v.dtype), v, acc, input_precision=INPUT_PRECISION)
    return acc, l_i, m_ij


@triton.jit
def _attn_fwd_program(
    pid, Q, K, V, Out, Counts, Indices, Work,
    stride_qz, stride_qh, stride_qn, stride_qd,
    stride_kz, stride_kh, stride_kn, stride_kd,
    stride_vz, stride_vh, stride_vn, stride_vd,
    stride_oz, stride_oh, stride_on, stride_od,
    stride_ch, stride_ih, stride_iq,
    qk_scale, N, NB, BATCH, KV_GROUP,
    HEAD_DIM: tl.constexpr, BLOCK: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
    USE_TMA: tl.constexpr, INPUT_PRECISION: tl.constexpr, WARP_SPECIALIZE: tl.constexpr,
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
    if WARP_SPECIALIZE:  # producer/consumer warp groups (Triton's automatic warp specialization)
        for j in tl.range(0, n_full * SUB_N, warp_specialize=True):
            kb = tl.load(row + j // SUB_N)
            start_n = kb * BLOCK + (j % SUB_N) * BLOCK_N
            acc, l_i, m_i = _attn_fwd_tile(acc, l_i, m_i, q, k_src, v_src, b, kvh, start_n, N,
                                           stride_kn, stride_kd, stride_vn, stride_vd, qk_scale,
                                           offs_n, offs_d, BLOCK_N, HEAD_DIM, False, USE_TMA, INPUT_PRECISION)
    else:
        for j in range(0, n_full * SUB_N):
            kb = tl.load(row + j // SUB_N)
            start_n = kb * BLOCK + (j % SUB_N) * BLOCK_N
            acc, l_i, m_i = _attn_fwd_tile(acc, l_i, m_i, q, k_src, v_src, b, kvh, start_n, N,
                                           stride_kn, stride_kd, stride_vn, stride_vd, qk_scale,
                                           offs_n, offs_d, BLOCK_N, HEAD_DIM, False, USE_TMA, INPUT_PRECISION)
    # Masked stage: the sub-tiles of block nb − 1 that start below N (none if it is not kept).
    tail_lo = (NB - 1) * BLOCK
    tail_hi = tl.where(has_tail, N, tail_lo)
    for start_n in range(tail_lo, tail_hi, BLOCK_N):
        acc, l_i, m_i = _attn_fwd_tile(acc, l_i, m_i, q, k_src, v_src, b, kvh, start_n, N,
                                       stride_kn, stride_kd, stride_vn, stride_vd, qk_scale, offs_n, offs_d,
                                       BLOCK_N, HEAD_DIM, True, USE_TMA, INPUT_PRECISION)

    # Epilogue: normalise; a row with no kept key (l = 0) has acc = 0 and outputs zero.
    l_i = tl.where(l_i > 0.0, l_i, 1.0)
    acc = acc / l_i[:, None]
    o_base = Out + b64 * stride_oz + head.to(tl.int64) * stride_oh
    tl.store(o_base + offs_m[:, None] * stride_on + offs_d[None, :] * stride_od,
             acc.to(Out.dtype.element_ty), mask=offs_m[:, None] < N)


@triton.jit
def _block_sparse_attn_fwd(
    Q, K, V, Out, Counts, Indices, Work,
    stride_qz, stride_qh, stride_qn, stride_qd,
    stride_kz, stride_kh, stride_kn, stride_kd,
    stride_vz, stride_vh, stride_vn, stride_vd,
    stride_oz, stride_oh, stride_on, stride_od,
    stride_ch, stride_ih, stride_iq,
    qk_scale, N, NB, BATCH, KV_GROUP, NUM_TILES, Counter,
    HEAD_DIM: tl.constexpr, BLOCK: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
    USE_TMA: tl.constexpr, INPUT_PRECISION: tl.constexpr, WARP_SPECIALIZE: tl.constexpr,
    PERSISTENT: tl.constexpr,
):
    """Not PERSISTENT: program pid runs tile pid. PERSISTENT: a few programs per SM, each taking
    the next tile from the zeroed int32 ``Counter`` until NUM_TILES are taken: tiles start in
    work-list order (head-major L2 reuse as before) and the load stays balanced."""
    if PERSISTENT:
        tile = tl.atomic_add(Counter, 1)  # scalar: one thread, result shared by the program
        while tile < NUM_TILES:
            _attn_fwd_program(
                tile, Q, K, V, Out, Counts, Indices, Work,
                stride_qz, stride_qh, stride_qn, stride_qd, stride_kz, stride_kh, stride_kn, stride_kd,
                stride_vz, stride_vh, stride_vn, stride_vd, stride_oz, stride_oh, stride_on, stride_od,
                stride_ch, stride_ih, stride_iq, qk_scale, N, NB, BATCH, KV_GROUP,
                HEAD_DIM, BLOCK, BLOCK_M, BLOCK_N, USE_TMA, INPUT_PRECISION, WARP_SPECIALIZE)
            tile = tl.atomic_add(Counter, 1)
    else:
        _attn_fwd_program(
            tl.program_id(0), Q, K, V, Out, Counts, Indices, Work,
            stride_qz, stride_qh, stride_qn, stride_qd, stride_kz, stride_kh, stride_kn, stride_kd,
            stride_vz, stride_vh, stride_vn, stride_vd, stride_oz, stride_oh, stride_on, stride_od,
            stride_ch, stride_ih, stride_iq, qk_scale, N, NB, BATCH, KV_GROUP,
            HEAD_DIM, BLOCK, BLOCK_M, BLOCK_N, USE_TMA, INPUT_PRECISION, WARP_SPECIALIZE)


_INTERPRETED = not isinstance(_block_sparse_attn_fwd, triton.runtime.JITFunction)


# --- configurations -----------------------------------------------------------------------------


@dataclass(frozen=True)
class KernelConfig:
    """Tile shape and schedule of one launch. BLOCK_M and BLOCK_N must divide the plan's block size."""

    block_m: int
    block_n: int
    num_warps: int = 8
    num_stages: int = 3
    use_tma: bool | None = None  # None: TMA when the device and strides allow it
    warp_specialize: bool = False
    #: 0: one program per tile. k > 0: a persistent grid of k × #SMs programs taking tiles from an
    #: atomic counter (reports/kernel/kernel-notes.md, "Variants tried").
    persistent: int = 0

    def check(self, block_size: int) -> None:
        for name in ("block_m", "block_n"):
            v = getattr(self, name)
            if v not in (16, 32, 64, 128) or block_size % v:
                raise ValueError(f"KernelConfig.{name}: must be 16..128 and divide block_size {block_size}, "
                                 f"got {v}")
        if self.persistent < 0:
            raise ValueError(f"KernelConfig.persistent: must be ≥ 0, got {self.persistent}")


#: Fixed config of the CPU interpreter (speed there does not matter; small tiles keep it quick).
INTERPRETER_CONFIG = KernelConfig(64, 64, num_warps=4, num_stages=1, use_tma=False)

#: Per (head_dim, block_size) the configs autotuning tries on CUDA, best-measured first. The key of
#: the tuning cache adds dtype and TMA use.
#:
#: 64-row tiles with one warpgroup and a single K/V buffer lead on Hopper (H100,
#: reports/kernel/kernel_variants_gpu_h100_run{1,2}.md): 168 registers and 50 KB of shared memory
#: let 3 programs share an SM, and the warp schedulers overlap one program's softmax with another's
#: wgmma — the overlap Triton 3.6 does not build inside one program (it waits on each QK wgmma
#: before the softmax). +4-22% over 128×128 / 8 warps at head_dim 128, +33-45% at head_dim 64.
#: 128×128 / 8 warps (one program per SM; the earlier default, 2-3 stages), its persistent grid
#: (atomic tile counter) and 128×64 stay as candidates for other GPUs.
TUNING_CONFIGS: dict[tuple[int, int], tuple[KernelConfig, ...]] = {
    (128, 128): (KernelConfig(64, 128, 4, 1), KernelConfig(128, 128, 8, 2), KernelConfig(128, 128, 8, 3),
                 KernelConfig(128, 64, 8, 3), KernelConfig(128, 128, 8, 2, persistent=1)),
    (128, 64): (KernelConfig(64, 64, 4, 1), KernelConfig(64, 64, 4, 3), KernelConfig(64, 64, 4, 4),
                KernelConfig(64, 64, 8, 3)),
    (64, 128): (KernelConfig(64, 128, 4, 1), KernelConfig(128, 128, 8, 3), KernelConfig(128, 128, 8, 2),
                KernelConfig(128, 64, 4, 3), KernelConfig(128, 128, 4, 3)),
    (64, 64): (KernelConfig(64, 64, 4, 1), KernelConfig(64, 64, 4, 3), KernelConfig(64, 64, 4, 4),
               KernelConfig(64, 64, 8, 3)),
}

_TUNED: dict[tuple, KernelConfig] = {}


def tma_supported(*tensors: torch.Tensor) -> bool:
    """TMA needs Hopper or newer, a contiguous last dim, 16-byte-aligned base and strides."""
    if _INTERPRETED or not all(t.is_cuda for t in tensors):
        return False
    if torch.cuda.get_device_capability(tensors[0].device)[0] < 9:
        return False
    try:
        from triton.tools.tensor_descriptor import TensorDescriptor  # noqa: F401
    except ImportError:
        return False
    return all(tma_compatible(t) for t in tensors)


# --- launcher -----------------------------------------------------------------------------------


def launch(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, out: torch.Tensor, tables: BlockTables,
           work: torch.Tensor, scale: float, config: KernelConfig) -> None:
    """Run one kernel launch over ``work`` (int32 items ``head * nb + qb``).

    Args:
        q: [batch, H, N, D]; k, v: [batch, H_kv, N, D] (H % H_kv == 0), any strides, one dtype.
        out: [batch, H, N, D] output (written for the launch's heads, rows < N).
        tables: block tables of the layer plan, on q's device.
        work: the launch's ordered work items.
    """
    batch, num_heads, n, d = q.shape
    bs = tables.block_size
    config.check(bs)
    use_tma = tma_supported(q, k, v) if config.use_tma is None else config.use_tma
    k_arg, v_arg = k, v
    if use_tma:
        from triton.tools.tensor_descriptor import TensorDescriptor

        box = [1, 1, config.block_n, d]
        k_arg = TensorDescriptor(k, list(k.shape), list(k.stride()), box)
        v_arg = TensorDescriptor(v, list(v.shape), list(v.stride()), box)
    num_tiles = work.numel() * (bs // config.block_m) * batch
    num_programs, counter = num_tiles, tables.counts  # counter: unused unless persistent
    if config.persistent:
        num_programs = min(num_tiles, config.persistent * num_sms(q.device))
        counter = torch.zeros(1, dtype=torch.int32, device=q.device)
    _block_sparse_attn_fwd[(num_programs,)](
        q, k_arg, v_arg, out, tables.counts, tables.indices, work,
        *q.stride(), *k.stride(), *v.stride(), *out.stride(),
        tables.counts.stride(0), tables.indices.stride(0), tables.indices.stride(1),
        scale * LOG2E, n, tables.num_blocks, batch, num_heads // k.shape[1], num_tiles, counter,
        HEAD_DIM=d, BLOCK=bs, BLOCK_M=config.block_m, BLOCK_N=config.block_n,
        USE_TMA=use_tma, INPUT_PRECISION="ieee" if q.dtype == torch.float32 else "tf32",
        WARP_SPECIALIZE=config.warp_specialize, PERSISTENT=config.persistent > 0,
        num_warps=config.num_warps, num_stages=config.num_stages,
    )


def choose_config(disk_key: str, candidates: Sequence[KernelConfig],
                  time_ms: Callable[[KernelConfig], float]) -> KernelConfig:
    """The config stored for ``disk_key`` in the tuning cache if it is still one of ``candidates``;
    else time every candidate (``time_ms``; out-of-resources ones are skipped), store the fastest
    and return it."""
    cached = tuning_cache.lookup(disk_key)
    if cached is not None:
        for cfg in candidates:
            if vars(cfg) == cached:
                return cfg
    best, best_ms = None, float("inf")
    for cfg in candidates:
        try:
            ms = time_ms(cfg)
        except triton.runtime.errors.OutOfResources:
            continue
        if ms < best_ms:
            best, best_ms = cfg, ms
    if best is None:
        raise RuntimeError(f"no Triton config fits ({disk_key}) on this device")
    tuning_cache.store(disk_key, vars(best))
    return best


def _source_hash() -> str:
    """Identifies this kernel's code in tuning-cache keys (a changed kernel is tuned again)."""
    global _SOURCE_HASH
    if _SOURCE_HASH is None:
        _SOURCE_HASH = hashlib.sha256(Path(__file__).read_bytes()).hexdigest()[:16]
    return _SOURCE_HASH


_SOURCE_HASH: str | None = None


def _tune(q, k, v, out, tables, scale, use_tma) -> KernelConfig:
    """The config for this call's (device, head_dim, block size, dtype, TMA): from this process's
    picks, else the on-disk tuning cache, else timed on this call's data."""
    d, bs = q.shape[-1], tables.block_size
    key = (d, bs, q.dtype, use_tma, q.device.index)
    if key in _TUNED:
        return _TUNED[key]
    candidates = [dataclasses.replace(base, use_tma=use_tma)
                  for base in TUNING_CONFIGS.get((d, bs), (KernelConfig(min(bs, 128), 64, 4, 2),))]
    disk_key = tuning_cache.make_key(torch.cuda.get_device_name(q.device), torch.cuda.get_device_capability(q.device),
                                     triton.__version__, _source_hash(), d, bs, str(q.dtype).removeprefix("torch."),
                                     use_tma)

    def time_ms(cfg: KernelConfig) -> float:
        def run() -> None:
            for item in tables.launches:
                launch(q, k, v, out, tables, item.work, scale, cfg)
        return triton.testing.do_bench(run, warmup=10, rep=40, return_mode="median")

    _TUNED[key] = choose_config(disk_key, candidates, time_ms)
    return _TUNED[key]


def forward(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, tables: BlockTables, scale: float,
            out: torch.Tensor | None = None, config: KernelConfig | None = None) -> torch.Tensor:
    """Block-sparse attention of one layer plan (the tables) → [batch, H, N, D] (``out``, or contiguous).

    ``config`` None: the interpreter's fixed config on CPU, else the tuned config for this
    (head_dim, block size, dtype, TMA): from the on-disk tuning cache (``tuning_cache``) or timed
    on the first call that needs it.
    """
    batch, num_heads, n, d = q.shape
    if out is None:
        out = torch.empty(batch, num_heads, n, d, dtype=q.dtype, device=q.device)
    tables.zero_skip_heads(out)
    if not tables.launches:
        return out
    if config is None:
        if _INTERPRETED:
            config = INTERPRETER_CONFIG
        else:
            config = _tune(q, k, v, out, tables, scale, tma_supported(q, k, v))
    for item in tables.launches:
        launch(q, k, v, out, tables, item.work, scale, config)
    return out
