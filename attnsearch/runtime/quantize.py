"""FP8 (e4m3) operands of a block-sparse attention call: the one definition of their scales.

    q8, k8, v8, scales = quantize_fp8(q, k, v, block_size)

* q: one scale per (batch, head, query block of ``block_size`` rows), so a kernel program (one
  query block) multiplies its products by one number;
* K: one scale per (batch, K head, key block): a kept key block's products take its scale;
* V: one scale per (batch, K head, channel), applied once to the output row.

Each scale is amax / E4M3_MAX over what it covers (an all-zero group gets scale 1), so every value
maps into e4m3's range without clipping. V is stored channel-major ([batch, heads, D, N] in
memory, rows padded to 16 bytes, returned as its [batch, heads, N, D] transpose): FP8 tensor-core
products need both operands K-major, and V's reduction dimension is N. Values whose magnitude is below the group's
amax / 2^15 land in e4m3's subnormals or flush to zero.

V's keys are stored in one of ``KEY_ORDERS``: "natural" (key j in column j; the Triton kernel), or
"wgmma" (the Hopper kernel): within each group of 32 keys, key r in column ``wgmma_position(r)``,
N rounded up to 32 with zero columns. In that order the P·V product takes its A operand straight
from the registers in which the Q·Kᵀ accumulator left P: no value moves between threads.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch

#: e4m3's largest finite magnitude (float8_e4m3fn).
E4M3_MAX = 448.0
FP8 = torch.float8_e4m3fn


KEY_ORDERS = ("natural", "wgmma")


def wgmma_position(r):
    """Column, within its group of 32, of key r (0 ≤ r < 32; an int or an integer tensor) in the
    "wgmma" order. An FP8 wgmma A operand gives thread t of a quad keys 4t .. 4t + 3 and 16 + 4t ..
    16 + 4t + 3 of each 32; an fp32 accumulator gives it columns 2t, 2t + 1 of each 8. Key r =
    16h + 8c + 2t + e (h, c, e ∈ {0, 1}) sits in column 16h + 4t + 2c + e."""
    return (r & 0b10001) | ((r & 0b00110) << 1) | ((r & 0b01000) >> 2)


def in_wgmma_order(v8: torch.Tensor) -> torch.Tensor:
    """A natural-order FP8 V ([B, H, N, D] view of channel-major storage) in the "wgmma" order: a
    [B, H, N32, D] view (N32 = N rounded up to 32) of new [B, H, D, N32] storage, the columns of
    keys ≥ N zero."""
    batch, heads, n, d = v8.shape
    n32 = -(-n // 32) * 32
    keys = torch.arange(n, device=v8.device)
    columns = keys - keys % 32 + wgmma_position(keys % 32)
    storage = torch.zeros(batch, heads, d, n32, dtype=torch.uint8, device=v8.device)
    storage.index_copy_(-1, columns, v8.transpose(-1, -2).view(torch.uint8))
    return storage.view(FP8).transpose(-1, -2)


class Fp8Scales(NamedTuple):
    """float32 scales, contiguous: q [B, H, nb], k [B, H_kv, nb], v [B, H_kv, D]."""

    q: torch.Tensor
    k: torch.Tensor
    v: torch.Tensor


def _scale(amax: torch.Tensor) -> torch.Tensor:
    """amax / E4M3_MAX rounded as IEEE division, 1 where amax is 0. The divisor is a tensor: with a
    Python-scalar divisor PyTorch on CUDA gave scales one ulp off the IEEE quotient (H100)."""
    return torch.where(amax > 0, amax / torch.full_like(amax, E4M3_MAX), torch.ones_like(amax))


def _per_block(x: torch.Tensor, block_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    batch, heads, n, d = x.shape
    nb = math.ceil(n / block_size)
    padded = torch.nn.functional.pad(x.float(), (0, 0, 0, nb * block_size - n))
    blocks = padded.view(batch, heads, nb, block_size, d)
    amax = blocks.abs().amax(dim=(-2, -1))
    scale = _scale(amax)
    x8 = (blocks / scale[..., None, None]).to(FP8).view(batch, heads, nb * block_size, d)[:, :, :n].contiguous()
    return x8, scale.contiguous()


def _per_channel_transposed(v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    batch, heads, n, d = v.shape
    amax = v.float().abs().amax(dim=-2)                                   # [B, H, D]
    scale = _scale(amax)
    # [B, H, D, N] storage, rows padded to 16 bytes (what a TMA descriptor over it needs)
    storage = torch.empty(batch, heads, d, -(-n // 16) * 16, dtype=FP8, device=v.device)
    storage[..., :n] = (v.float().transpose(-1, -2) / scale[..., None]).to(FP8)
    return storage[..., :n].transpose(-1, -2), scale.contiguous()


def quantize_fp8(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, block_size: int, *,
                 heads: torch.Tensor | None = None, kernels: bool | None = None,
                 key_order: str = "natural") -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, Fp8Scales]:
    """e4m3 q, k (row-major, per block) and v (channel-major, per channel, keys in ``key_order``:
    ``KEY_ORDERS``) and their scales.

    ``heads``: int32 query heads, distinct, on q's device, whose operands are needed (the heads of
    a layer that run FP8: ``Launch.head_index``); K and V heads follow (``enable_gqa``'s grouping:
    a K/V head shared by several listed heads is written once per head, the same bytes). The
    outputs keep every head's place, and entries of other heads are unspecified (the kernels leave
    them unwritten). None: every head. Nothing is copied from the host, so a call can be captured
    in a CUDA graph.
    ``kernels``: compute them with the Triton kernels (``triton/quantize_kernel.py``: the same
    values in fewer passes, only the listed heads); None: on CUDA tensors. Not under
    TRITON_INTERPRET=1: the interpreter's fp32 → e4m3 cast loses the carry of some round-ups into
    the next power of two (124 → 64, 1.95 → 1.0 with Triton 3.9), where PyTorch and the GPU give 128
    and 2."""
    if key_order not in KEY_ORDERS:
        raise ValueError(f"key_order: must be one of {KEY_ORDERS}, got {key_order!r}")
    if kernels is None:
        kernels = q.is_cuda
    if kernels:
        if heads is None:
            heads = torch.arange(q.shape[1], dtype=torch.int32, device=q.device)
        q8, k8, v8, scales = _quantize_triton(q, k, v, block_size, heads)
    else:
        q8, qs = _per_block(q, block_size)
        k8, ks = _per_block(k, block_size)
        v8, vs = _per_channel_transposed(v)
        scales = Fp8Scales(qs, ks, vs)
    if key_order == "wgmma":
        v8 = in_wgmma_order(v8)
    return q8, k8, v8, scales


def _quantize_triton(q, k, v, block_size, heads):
    from .triton import quantize_kernel as qk

    q_heads = heads
    kv_heads = heads // (q.shape[1] // k.shape[1])

    def blocks(x, listed):
        batch, num, n, d = x.shape
        nb = math.ceil(n / block_size)
        x8 = torch.empty(batch, num, n, d, dtype=FP8, device=x.device)
        scale = torch.empty(batch, num, nb, dtype=torch.float32, device=x.device)
        qk.quantize_blocks[(batch * listed.numel(), nb)](x, x8, scale, listed, *x.stride(), n, nb, num, listed.numel(),
                                                         BLOCK=block_size, HEAD_DIM=d)
        return x8, scale

    q8, qs = blocks(q, q_heads)
    k8, ks = blocks(k, kv_heads)
    batch, num, n, d = v.shape
    grid = (batch * kv_heads.numel(), math.ceil(n / block_size))
    amax = torch.zeros(batch, num, d, dtype=torch.float32, device=v.device)
    qk.channel_amax[grid](v, amax, kv_heads, *v.stride(), n, num, kv_heads.numel(), BLOCK=block_size, HEAD_DIM=d)
    vs = _scale(amax)
    n_pad = -(-n // 16) * 16
    storage = torch.empty(batch, num, d, n_pad, dtype=FP8, device=v.device)
    qk.quantize_channels[grid](v, storage, vs, kv_heads, *v.stride(), n, n_pad, num, kv_heads.numel(),
                               BLOCK=block_size, HEAD_DIM=d)
    return q8, k8, storage[..., :n].transpose(-1, -2), Fp8Scales(qs, ks, vs)


def dequantize(x8: torch.Tensor, scale: torch.Tensor, block_size: int | None) -> torch.Tensor:
    """float32 values of a quantized operand: per block of rows (``block_size``) or per channel (None)."""
    x = x8.float()
    if block_size is None:
        return x * scale[..., None, :]
    return x * scale.repeat_interleave(block_size, dim=-1)[..., : x.shape[-2], None]


def fp8_operands(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                 block_size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """float32 q, k, v as the FP8 kernel's products see them: quantized by :func:`quantize_fp8`
    (the PyTorch definition) and dequantized."""
    q8, k8, v8, s = quantize_fp8(q, k, v, block_size, kernels=False)
    return dequantize(q8, s.q, block_size), dequantize(k8, s.k, block_size), dequantize(v8, s.v, None)


def round_probabilities(p: torch.Tensor) -> torch.Tensor:
    """Unnormalised softmax weights p = exp(s − m) ∈ [0, 1] as the FP8 kernel's P·V product sees them:
    ``e4m3(p · E4M3_MAX) / E4M3_MAX`` in float32 (the row sum stays unrounded)."""
    return (p.float() * E4M3_MAX).to(FP8).float() / E4M3_MAX


def fp8_attention_rows(s: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """The FP8 kernel's output for rows of scaled logits ``s`` [..., keys] (−inf: not kept) over
    dequantized values ``v`` [..., keys, D], in float32: P = exp(s − max) rounded by
    :func:`round_probabilities`, divided by the unrounded row sum. A row with no kept key is zero.

    The kernel rounds P against its running maximum and rescales the sum afterwards by factors
    that are not powers of two, so its roundings differ from these value by value; both are
    round-to-nearest e4m3 of the same weights at the same relative precision, so their errors are
    alike in size, not equal (the GPU test compares them so)."""
    m = s.amax(-1, keepdim=True)
    m = torch.where(torch.isfinite(m), m, torch.zeros_like(m))
    p = torch.exp(s - m)
    l = p.sum(-1, keepdim=True)
    o = torch.matmul(round_probabilities(p), v.float())
    return torch.where(l > 0, o / l.clamp_min(1e-30), torch.zeros_like(o))


__all__ = ["E4M3_MAX", "FP8", "Fp8Scales", "KEY_ORDERS", "dequantize", "fp8_attention_rows", "fp8_operands",
           "in_wgmma_order", "quantize_fp8", "round_probabilities", "wgmma_position"]
