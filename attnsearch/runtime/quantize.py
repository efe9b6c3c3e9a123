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
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch

#: e4m3's largest finite magnitude (float8_e4m3fn).
E4M3_MAX = 448.0
FP8 = torch.float8_e4m3fn


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
                 heads: torch.Tensor | None = None,
                 kernels: bool | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, Fp8Scales]:
    """e4m3 q, k (row-major, per block) and v (channel-major, per channel) and their scales.

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
    if kernels is None:
        kernels = q.is_cuda
    if kernels:
        if heads is None:
            heads = torch.arange(q.shape[1], dtype=torch.int32, device=q.device)
        return _quantize_triton(q, k, v, block_size, heads)
    q8, qs = _per_block(q, block_size)
    k8, ks = _per_block(k, block_size)
    v8, vs = _per_channel_transposed(v)
    return q8, k8, v8, Fp8Scales(qs, ks, vs)


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


__all__ = ["E4M3_MAX", "FP8", "Fp8Scales", "dequantize", "fp8_attention_rows", "fp8_operands",
           "quantize_fp8", "round_probabilities"]
