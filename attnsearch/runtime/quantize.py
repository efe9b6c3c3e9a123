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


def wgmma_key(p):
    """The key at column p of its group of 32 in the "wgmma" order: ``wgmma_position``'s inverse."""
    return (p & 0b10001) | ((p & 0b01100) >> 1) | ((p & 0b00010) << 2)


def _in_wgmma_order(v8: torch.Tensor) -> torch.Tensor:
    """A natural-order V ([B, H, N, D] view of channel-major storage) in the "wgmma" order: a
    [B, H, N32, D] view (N32 = N rounded up to 32) of new [B, H, D, N32] storage, the columns of
    keys ≥ N zero."""
    batch, heads, n, d = v8.shape
    n32 = -(-n // 32) * 32
    columns = torch.arange(n32, device=v8.device)
    keys = columns - columns % 32 + wgmma_key(columns % 32)
    storage = torch.zeros(batch, heads, d, n32 + 1, dtype=torch.uint8, device=v8.device)
    storage[..., :n] = v8.transpose(-1, -2).view(torch.uint8)     # column n32: the zero keys ≥ N read
    return storage[..., torch.where(keys < n, keys, n32)].view(FP8).transpose(-1, -2)


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
    """e4m3 q, k (row-major, per block) and v (channel-major, per channel, its keys in
    ``key_order``, one of ``KEY_ORDERS``) and their scales.

    ``heads``: int32 query heads, distinct, on q's device, whose operands are needed (the heads of
    a layer that run FP8: ``Launch.head_index``); K and V heads follow (``enable_gqa``'s grouping;
    the kernels write a K/V head shared by several listed heads once). The outputs keep every
    head's place, and entries of other heads are unspecified (the kernels leave them unwritten).
    None: every head. Nothing is copied from the host, so a call can be captured in a CUDA graph.
    ``kernels``: compute them with the Triton kernels (``triton/quantize_kernel.py``: the same
    values in two launches, only the listed heads); None: on CUDA tensors. Under
    TRITON_INTERPRET=1 the kernels run, but the interpreter's fp32 → e4m3 cast loses the carry of
    some round-ups into the next power of two (124 → 64, 1.95 → 1.0 with Triton 3.9), where PyTorch
    and the GPU give 128 and 2: there only the scales and layouts are the definition's exactly
    (``tests/runtime/test_quantize_kernels.py`` checks the bytes against the interpreter's own cast
    of the definition's quotients)."""
    if key_order not in KEY_ORDERS:
        raise ValueError(f"key_order: must be one of {KEY_ORDERS}, got {key_order!r}")
    if kernels is None:
        kernels = q.is_cuda
    if kernels:
        return _quantize_triton(q, k, v, block_size, heads, key_order == "wgmma")
    q8, qs = _per_block(q, block_size)
    k8, ks = _per_block(k, block_size)
    v8, vs = _per_channel_transposed(v)
    if key_order == "wgmma":
        v8 = _in_wgmma_order(v8)
    return q8, k8, v8, Fp8Scales(qs, ks, vs)


#: Tokens per program of ``quantize_channels``: each channel's bytes of a tile are one 128-byte line
#: of V's channel-major storage.
CHANNEL_ROWS = 128
#: float32 elements (256 bytes) each part of ``_quantize_triton``'s float32 buffer starts on: the
#: attention kernel is specialised for 16-byte-aligned scale pointers.
_ALIGN = 64


def _warps(rows: int, head_dim: int) -> int:
    """Warps of a program over a [rows, head_dim] tile: 8 from 128 × 128 up (64 fp32 values a thread)."""
    return 8 if rows * head_dim >= 128 * 128 else 4


def _quantize_triton(q, k, v, block_size, heads, wgmma_order: bool):
    """``quantize_fp8`` in two launches (``quantize_rows``: q's and K's blocks and V's channel amax;
    ``quantize_channels``: V channel-major, its scales from that amax) and four allocations: the
    three e4m3 outputs and one zero-filled float32 buffer holding the three scale tensors and the
    amax workspace. The atomic max needs the zeros; the scales need none, but one buffer is one
    allocation and one memset where separate tensors would be four allocations and the memset.
    No other torch op runs on the device; the K/V head of a listed head (head // group) is taken
    in the kernels."""
    from .triton import quantize_kernel as qk

    batch, num_heads, n, d = q.shape
    kv_heads = k.shape[1]
    nb = -(-n // block_size)
    n_pad = -(-n // 32) * 32 if wgmma_order else -(-n // 16) * 16
    device = q.device
    q8 = torch.empty(batch, num_heads, n, d, dtype=FP8, device=device)
    k8 = torch.empty(batch, kv_heads, n, d, dtype=FP8, device=device)
    v8 = torch.empty(batch, kv_heads, d, n_pad, dtype=FP8, device=device)
    q_at = 0
    k_at = q_at + -(-batch * num_heads * nb // _ALIGN) * _ALIGN
    v_at = k_at + -(-batch * kv_heads * nb // _ALIGN) * _ALIGN
    amax_at = v_at + -(-batch * kv_heads * d // _ALIGN) * _ALIGN
    f32 = torch.zeros(amax_at + batch * kv_heads * d, dtype=torch.float32, device=device)
    scales = Fp8Scales(f32.as_strided((batch, num_heads, nb), (num_heads * nb, nb, 1), q_at),
                       f32.as_strided((batch, kv_heads, nb), (kv_heads * nb, nb, 1), k_at),
                       f32.as_strided((batch, kv_heads, d), (kv_heads * d, d, 1), v_at))
    amax = f32[amax_at:]
    nh = num_heads if heads is None else heads.numel()
    if batch * nh and n:
        # HEADS_PAD: a listed head's earlier entries are read as one vector of this power of two
        const = dict(HEAD_DIM=d, GROUP=num_heads // kv_heads, LISTED=heads is not None,
                     HEADS_PAD=1 << (num_heads - 1).bit_length())
        qk.quantize_rows[(nb, batch * nh, 3)](
            q, k, v, q8, k8, scales.q, scales.k, amax, heads, *q.stride(), *k.stride(), *v.stride(),
            n, nb, num_heads, kv_heads, nh, BLOCK=block_size, num_warps=_warps(block_size, d), **const)
        qk.quantize_channels[(-(-n_pad // CHANNEL_ROWS), batch * nh)](
            v, v8, scales.v, amax, heads, *v.stride(), n, n_pad, kv_heads, nh,
            ROWS=CHANNEL_ROWS, WGMMA_ORDER=wgmma_order, num_warps=_warps(CHANNEL_ROWS, d), **const)
    return q8, k8, (v8 if wgmma_order else v8[..., :n]).transpose(-1, -2), scales


def dequantize(x8: torch.Tensor, scale: torch.Tensor, block_size: int | None) -> torch.Tensor:
    """float32 values of a quantized operand: per block of rows (``block_size``) or per channel (None)."""
    x = x8.float()
    if block_size is None:
        return x * scale[..., None, :]
    return x * scale.repeat_interleave(block_size, dim=-1)[..., : x.shape[-2], None]


def quantize_rows(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``x`` in e4m3 with one float32 scale per row of its last dimension (amax / E4M3_MAX, 1 for an
    all-zero row): (x8 of x's shape, scale [..., 1]). What a residual kept in FP8 stores."""
    scale = _scale(x.float().abs().amax(dim=-1, keepdim=True))
    return (x.float() / scale).to(FP8), scale


def dequantize_rows(x8: torch.Tensor, scale: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """:func:`quantize_rows`' values back in ``dtype``."""
    return (x8.float() * scale).to(dtype)


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
           "quantize_fp8", "round_probabilities", "wgmma_key", "wgmma_position"]
