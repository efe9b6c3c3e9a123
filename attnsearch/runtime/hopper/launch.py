"""Host side of the Hopper kernel: its persistent tile schedule and tile table, TMA descriptors, and
the launch. ``forward`` is what ``backends.HopperBackend`` calls once it has checked the call.
"""

from __future__ import annotations

import functools
import weakref

import torch
from triton.experimental.gluon import language as gl
from triton.experimental.gluon.nvidia.hopper import TensorDescriptor

from ..block_tables import BlockTables
from ..device_caps import num_sms, tma_compatible
from ..quantize import FP8, Fp8Scales, quantize_fp8
from ..schedule import assign
from . import kernel
from .kernel import GL_DTYPES
from .probe import PROBE_FIELDS

#: 12 warps (two consumer warpgroups and the producer's, rounded up) at 168 registers fill the
#: 65,536-register file; setmaxnreg then moves them to the consumers.
MAXNREG = 168


@functools.lru_cache(maxsize=None)
def _smem_layout(rows: int, cols: int, dtype: torch.dtype) -> gl.NVMMASharedLayout:
    """Shared-memory layout of one TMA box [1, 1, rows, cols] (a pure function of its arguments,
    cached: building it is a third of a descriptor's host time)."""
    return gl.NVMMASharedLayout.get_default_for([1, 1, rows, cols], GL_DTYPES[dtype])


def descriptor(t: torch.Tensor, rows: int) -> TensorDescriptor:
    """TMA descriptor of a [batch, H, N, D] tensor, boxes of ``rows`` × D; for FP8's V (channel-major,
    ``quantize_fp8(key_order="wgmma")``) a descriptor of its [batch, H, D, N] storage, boxes of D × ``rows``."""
    if t.dtype == FP8 and t.stride(-2) == 1:
        t = t.transpose(-1, -2)
        return TensorDescriptor(t, list(t.shape), list(t.stride()), [1, 1, t.shape[-2], rows],
                                _smem_layout(t.shape[-2], rows, t.dtype))
    return TensorDescriptor(t, list(t.shape), list(t.stride()), [1, 1, rows, t.shape[-1]],
                            _smem_layout(rows, t.shape[-1], t.dtype))


#: Mean kept key blocks per query block under which the flat schedule runs at head_dim 64 (H100,
#: sustained: +2% at 26, -1 to -2% at 65 and 130; at head_dim 128 it runs everywhere).
FLAT_BELOW_KEPT = 48
#: Per-tile cost beyond its kept blocks, in block-iterations (decode, Q, pipeline fill and drain).
TILE_OVERHEAD = 2.0
#: Tile tables per block tables (which die with them): {(id(work), batch, programs, N, D): (table, flat)}.
_TILE_TABLES: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def prefers_flat(counts: torch.Tensor, work: torch.Tensor, head_dim: int) -> bool:
    """Whether the flat schedule runs this work list: at head_dim 128 always, at 64 where its query
    blocks that keep any key block keep fewer than ``FLAT_BELOW_KEPT`` on average (nothing kept: the
    tile schedule, which only stores zeros then)."""
    kept = counts.flatten()[work.long()]
    kept = kept[kept > 0]
    return bool(kept.numel()) and (head_dim == 128 or float(kept.float().mean()) < FLAT_BELOW_KEPT)


def q_in_registers(head_dim: int) -> bool:
    """Whether the consumers read a tile's Q from shared memory once, into registers that every QK
    product of the tile takes as its A operand: at head_dim 64 the products then read a seventh less
    from shared memory per turn, +3-5% (H100); at 128 the 32 more registers spill, -4 to -8%."""
    return head_dim == 64


def schedule(counts: torch.Tensor, work: torch.Tensor, batch: int, programs: int) -> list[list[int]]:
    """Which tiles (t = work-list position · batch + batch index) each of ``programs`` persistent
    programs runs, in order: ``schedule.assign`` over the tiles in work-list order, a tile costing its
    kept blocks + TILE_OVERHEAD. Tiles still start in the head-major order (L2 reuse of K/V); a static
    stride p, p + 132, ... leaves 4-7% max/mean imbalance on the 12-head layers, this 1.4-2.1%."""
    per_item = counts.flatten()[work.long()].double().cpu() + TILE_OVERHEAD
    return assign(per_item.repeat_interleave(batch).numpy(), programs)


def tile_table(tables: BlockTables, work: torch.Tensor, batch: int, programs: int, n_tokens: int) -> torch.Tensor:
    """The kernel's ``Tiles`` argument, int32 on the tables' device. A header of four numbers per
    program p: (first row, first row with no kept block, end row, kept blocks in all); then one row
    per tile, (head, query block, batch index, kept blocks · 2 + tail), each program's rows in its
    schedule order with the tiles that keep no block moved last (they only store zeros); then a
    spare row (the kernel reads a tile ahead). ``tail``: the tile keeps key block nb - 1 (then its
    last) and that block runs past N. Decoding on the host spares each tile a chain of dependent
    loads (work → counts → indices) in the kernel."""
    nb, bs = tables.num_blocks, tables.block_size
    per_tile = work.long().cpu().repeat_interleave(batch)  # tile t = work-list position · batch + b
    counts_all = tables.counts.long().cpu()
    kept_of = counts_all.flatten()[per_tile]
    order, header = [], []
    for tiles in schedule(tables.counts, work, batch, programs):
        busy = [t for t in tiles if kept_of[t] > 0]
        idle = [t for t in tiles if kept_of[t] == 0]
        header += [len(order), len(order) + len(busy), len(order) + len(tiles), int(sum(kept_of[busy]))]
        order += busy + idle
    order_t = torch.tensor(order + [0], dtype=torch.long)
    items = per_tile[order_t]
    head, qb = items // nb, items % nb
    counts = counts_all[head, qb]
    last = tables.indices.long().cpu()[head, qb, (counts - 1).clamp(min=0)]
    tail = (counts > 0) & (last == nb - 1) & (nb * bs > n_tokens)
    rows = torch.stack([head, qb, order_t % batch, counts * 2 + tail.long()], dim=1)
    return torch.cat([torch.tensor(header, dtype=torch.long), rows.flatten()]).to(torch.int32).to(
        tables.counts.device)


def launch_grid(num_tiles: int, device: torch.device, persistent: bool = True) -> int:
    """Programs of a launch over ``num_tiles`` tiles: one per SM (at most one per tile) when persistent."""
    return min(num_tiles, num_sms(device)) if persistent else num_tiles


def launch(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, out: torch.Tensor, tables: BlockTables,
           work: torch.Tensor, scale: float, stages: int = 2, consumer_regs: int = 240,
           producer_regs: int = 24, persistent: bool = True, q_bufs: int = 2, flat: bool | None = None,
           probe: torch.Tensor | None = None, q_regs: bool | None = None,
           fp8_scales: Fp8Scales | None = None) -> None:
    """One launch over ``work``; arguments as ``triton.launch.launch``. ``fp8_scales``: q, k, v are
    ``quantize_fp8(..., key_order="wgmma")``'s e4m3 operands and these their scales; ``out`` is
    fp16 or bf16. ``persistent``: one program
    per SM, each running its share of the tiles (``tile_table``); else one program per tile.
    ``flat``: the consumers' schedule (``_consumer_flat`` or ``_consumer``); None: ``prefers_flat``.
    ``probe``: int32 [programs (``launch_grid``), 2, len(PROBE_FIELDS)], filled with each program's and consumer's
    ``PROBE_FIELDS``: a build with cycle-counter reads in the consumers' loops, a diagnostic
    (same output, its own timing). ``q_regs``: the consumers hold
    Q in registers (None: ``q_in_registers``)."""
    batch, num_heads, n, d = q.shape
    bs = tables.block_size
    if (fp8_scales is not None) != (q.dtype == FP8) or not all(t.dtype == q.dtype for t in (k, v)):
        raise ValueError(f"operands {q.dtype} / {k.dtype} / {v.dtype} with{'' if fp8_scales is not None else 'out'} "
                         f"fp8_scales: FP8 operands come with their scales, and only they")
    if fp8_scales is not None and (v.shape[-2] % 32 or v.stride(-2) != 1):
        raise ValueError("v: FP8's V must be quantize_fp8(..., key_order='wgmma')'s channel-major storage")
    num_tiles = work.numel() * batch
    programs = launch_grid(num_tiles, q.device, persistent)
    if probe is not None and (probe.dtype != torch.int32 or probe.device != q.device
                              or tuple(probe.shape) != (programs, 2, len(PROBE_FIELDS))):
        raise ValueError(f"probe: needs int32 [{programs}, 2, {len(PROBE_FIELDS)}] on {q.device}, got "
                         f"{probe.dtype} {list(probe.shape)} on {probe.device}")
    known = _TILE_TABLES.setdefault(tables, {})  # BlockTables compare by identity
    key = (id(work), batch, programs, n, d)  # work lives as long as its tables
    if key not in known:
        known[key] = (tile_table(tables, work, batch, programs, n), prefers_flat(tables.counts, work, d))
    table, flat_pays = known[key]
    if flat is None:
        flat = flat_pays
    if q_regs is None:
        q_regs = q_in_registers(d)
    if flat and not tma_compatible(out):
        raise ValueError("out: the flat schedule stores through TMA and needs a unit last stride and 16-byte "
                         "aligned base and strides")
    q_desc = descriptor(q, kernel.HALF_M.value)
    qs, ks, vs = fp8_scales if fp8_scales is not None else (table,) * 3  # unread unless FP8
    kernel.ws_block_sparse_fwd[(programs,)](
        # The tile schedule stores with pointers: q's descriptor only fills the unused argument.
        q_desc, descriptor(k, bs), descriptor(v, bs), descriptor(out, kernel.HALF_M.value) if flat else q_desc, out,
        tables.indices, table, table if probe is None else probe, qs, ks, vs,
        *out.stride(), tables.indices.stride(0), tables.indices.stride(1),
        scale * kernel.LOG2E, n, tables.num_blocks, num_heads // k.shape[1], num_heads,
        HEAD_DIM=d, BLOCK=bs, STAGES=stages, Q_BUFS=q_bufs, CONSUMER_REGS=consumer_regs,
        PRODUCER_REGS=producer_regs, FLAT=flat, Q_REGS=q_regs, PROBE=probe is not None, num_warps=4,
        maxnreg=MAXNREG,
    )


def forward(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, tables: BlockTables, scale: float,
            out: torch.Tensor | None = None, stages: int = 2, consumer_regs: int = 240,
            producer_regs: int = 24, persistent: bool = True, q_bufs: int = 2,
            flat: bool | None = None, precision: str = "native") -> torch.Tensor:
    """Block-sparse attention of one precision's heads of a layer plan (the tables, block size 128)
    on a Hopper GPU; the skip heads are zeroed when it is the tables' first precision.

    Args:
        q: [batch, H, N, D]; k, v: [batch, H_kv, N, D] (H % H_kv == 0); fp16 or bf16, D 64 or 128,
            strides TMA can read (unit last stride, 16-byte aligned base and strides).
        out: [batch, H, N, D] output, any strides (allocated in q's layout when None).
        stages, q_bufs: depth of the K/V ring and number of tiles' Q buffers in shared memory.
        consumer_regs, producer_regs: registers per thread after setmaxnreg.
        persistent: one program per SM (else one per tile).
        flat: the consumers' schedule (see ``launch``); an ``out`` TMA cannot write gets the tile
            schedule.
        precision: "native" (the products in q's dtype) or "fp8" (the launches' heads quantized by
            ``quantize_fp8`` first, V in the "wgmma" key order; the output in q's dtype).
    Returns:
        ``out``.
    """
    if precision not in ("native", "fp8"):
        raise ValueError(f"precision: the Hopper kernel runs 'native' or 'fp8', got {precision!r}")
    if out is None:
        out = torch.empty_like(q)
    tables.prepare_output(out, precision)
    scales = None
    if tables.launches_of(precision) and precision == "fp8":
        q, k, v, scales = quantize_fp8(q, k, v, tables.block_size, heads=tables.head_index("fp8"),
                                       key_order="wgmma")
    launch_all(q, k, v, out, tables, scale, precision, stages, consumer_regs, producer_regs, persistent, q_bufs,
               flat, fp8_scales=scales)
    return out


def launch_all(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, out: torch.Tensor, tables: BlockTables,
               scale: float, precision: str, stages: int = 2, consumer_regs: int = 240, producer_regs: int = 24,
               persistent: bool = True, q_bufs: int = 2, flat: bool | None = None,
               fp8_scales: Fp8Scales | None = None) -> None:
    """Every launch of the tables' ``precision`` (skip heads not zeroed); FP8 on ``quantize_fp8``'s
    operands (``fp8_scales``: theirs). An ``out`` TMA cannot write gets the tile schedule."""
    if not tma_compatible(out):
        flat = False
    for item in tables.launches_of(precision):
        launch(q, k, v, out, tables, item.work, scale, stages, consumer_regs, producer_regs, persistent, q_bufs,
               flat, fp8_scales=fp8_scales)

