"""The baselines a sparse layer is timed against: dense cuDNN SDPA and FlexAttention on the same
kept blocks (built from the block tables with ``BlockMask.from_kv_blocks``, all kept blocks "full":
no mask_mod, so it does the same work as our kernels)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..geometry import Geometry
from ..runtime.block_tables import BlockTables
from .timing import fresh_inputs, time_ms


def flops(batch: int, heads: int, n: int, d: int, dens: float) -> float:
    """4·B·H·N²·D·density: QKᵀ and PV over the kept blocks."""
    return 4.0 * batch * heads * n * n * d * dens


def flex_block_mask(tables: BlockTables, n: int):
    """FlexAttention BlockMask with exactly the tables' kept blocks, all marked full (no mask_mod)."""
    from torch.nn.attention.flex_attention import BlockMask

    H, nb = tables.counts.shape
    idx = torch.zeros(1, H, nb, nb, dtype=torch.int32, device=tables.counts.device)
    idx[..., : tables.max_count] = tables.indices
    counts = tables.counts[None].contiguous()
    kwargs = dict(full_kv_num_blocks=counts, full_kv_indices=idx, BLOCK_SIZE=tables.block_size,
                  seq_lengths=(n, n))
    partial = (torch.zeros_like(counts), idx.clone())  # no partial blocks: nothing runs a mask_mod
    try:
        return BlockMask.from_kv_blocks(*partial, compute_q_blocks=False, **kwargs)
    except TypeError:  # older torch: no compute_q_blocks
        return BlockMask.from_kv_blocks(*partial, **kwargs)


_FLEX = None


def _flex():
    global _FLEX
    if _FLEX is None:
        from torch.nn.attention.flex_attention import flex_attention

        _FLEX = torch.compile(flex_attention, dynamic=False)
    return _FLEX


def flex_kernel_options(block_size: int) -> dict[str, int] | None:
    """Flex's tiles must divide the mask's block size (its default BLOCK_M is 128)."""
    return {"BLOCK_M": block_size, "BLOCK_N": block_size} if block_size < 128 else None


def cudnn_sdpa(q, k, v):
    from torch.nn.attention import SDPBackend, sdpa_kernel

    with sdpa_kernel(SDPBackend.CUDNN_ATTENTION):
        return F.scaled_dot_product_attention(q, k, v)


def dense_cudnn_ms(geometry: Geometry, num_heads: int, *, batch: int = 1, head_dim: int = 128,
                   dtype: torch.dtype = torch.bfloat16, warmup: int = 3, reps: int = 20,
                   timing: str = "queued") -> float:
    """Median ms of dense cuDNN SDPA for this shape (fresh random inputs; ``timing``: ``time_ms``'s mode)."""
    inputs = fresh_inputs((batch, num_heads, geometry.num_tokens, head_dim), dtype, 2)
    return time_ms(lambda x: cudnn_sdpa(*x), inputs, warmup, reps, mode=timing)["median"]


def flex_attention_fn(tables: BlockTables, n: int, scale: float):
    """``fn((q, k, v))``: compiled FlexAttention over exactly the tables' kept blocks."""
    bm = flex_block_mask(tables, n)
    fx = _flex()
    opts = flex_kernel_options(tables.block_size)
    return lambda x: fx(*x, block_mask=bm, scale=scale, kernel_options=opts)


__all__ = ["cudnn_sdpa", "dense_cudnn_ms", "flex_attention_fn", "flex_block_mask", "flex_kernel_options", "flops"]
