"""FP8 (e4m3) operands of a block-sparse attention call: the one definition of their scales.

    q8, k8, v8, scales = quantize_fp8(q, k, v, block_size)

* q: one scale per (batch, head, query block of ``block_size`` rows), so a kernel program (one
  query block) multiplies its products by one number;
* K: one scale per (batch, K head, key block): a kept key block's products take its scale;
* V: one scale per (batch, K head, channel), applied once to the output row.

Each scale is amax / E4M3_MAX over what it covers (an all-zero group gets scale 1), so every value
maps into e4m3's range without clipping. V is stored channel-major ([batch, heads, D, N] in
memory, returned as its [batch, heads, N, D] transpose): FP8 tensor-core products need both
operands K-major, and V's reduction dimension is N. Values whose magnitude is below the group's
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


def _per_block(x: torch.Tensor, block_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    batch, heads, n, d = x.shape
    nb = math.ceil(n / block_size)
    padded = torch.nn.functional.pad(x.float(), (0, 0, 0, nb * block_size - n))
    blocks = padded.view(batch, heads, nb, block_size, d)
    amax = blocks.abs().amax(dim=(-2, -1))
    scale = torch.where(amax > 0, amax / E4M3_MAX, torch.ones_like(amax))
    x8 = (blocks / scale[..., None, None]).to(FP8).view(batch, heads, nb * block_size, d)[:, :, :n]
    return x8, scale.contiguous()


def _per_channel_transposed(v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    amax = v.float().abs().amax(dim=-2)                                   # [B, H, D]
    scale = torch.where(amax > 0, amax / E4M3_MAX, torch.ones_like(amax))
    v8t = (v.float().transpose(-1, -2) / scale[..., None]).to(FP8).contiguous()   # [B, H, D, N]
    return v8t.transpose(-1, -2), scale.contiguous()


def quantize_fp8(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                 block_size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, Fp8Scales]:
    """e4m3 q, k (row-major, per block) and v (channel-major, per channel) and their scales."""
    q8, qs = _per_block(q, block_size)
    k8, ks = _per_block(k, block_size)
    v8, vs = _per_channel_transposed(v)
    return q8, k8, v8, Fp8Scales(qs, ks, vs)


def dequantize(x8: torch.Tensor, scale: torch.Tensor, block_size: int | None) -> torch.Tensor:
    """float32 values of a quantized operand: per block of rows (``block_size``) or per channel (None)."""
    x = x8.float()
    if block_size is None:
        return x * scale[..., None, :]
    return x * scale.repeat_interleave(block_size, dim=-1)[..., : x.shape[-2], None]


__all__ = ["E4M3_MAX", "FP8", "Fp8Scales", "dequantize", "quantize_fp8"]
