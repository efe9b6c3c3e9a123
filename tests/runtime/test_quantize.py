"""``runtime.quantize``: e4m3 operands and their scales, against the values they stand for."""

from __future__ import annotations

import pytest
import torch

from attnsearch.runtime.quantize import E4M3_MAX, FP8, dequantize, quantize_fp8

#: e4m3 keeps 3 mantissa bits: round-to-nearest errs by at most 2^-4 of a normal value; below
#: 2^-6 (× scale) values are subnormal, spaced 2^-9 apart.
REL, SUB = 2.0 ** -4, 2.0 ** -10


def exact_fp8_inputs(n: int, heads: int, kv_heads: int, seed: int, device: str = "cpu", batch: int = 1,
                     head_dim: int = 64):
    """fp16 q, k whose e4m3 forms are exact and whose scaled products are integers (entries 0, ±1 or
    ±2, the magnitude per 64 rows, so blocks get different scales), so under scale ln 2 every softmax
    weight is a power of two that e4m3 holds down to 2^-15 of the row's largest; v random. An FP8
    kernel must then equal attention on the dequantized operands up to fp32 accumulation."""
    g = torch.Generator(device=device).manual_seed(seed)

    def ternary(h):
        shape = (batch, h, n, head_dim)
        t = torch.randint(-1, 2, shape, generator=g, device=device) * (torch.rand(shape, generator=g, device=device) < 0.3)
        per_64_rows = torch.randint(1, 3, (batch, h, -(-n // 64), 1), generator=g, device=device)
        return (t * per_64_rows.repeat_interleave(64, 2)[:, :, :n]).half()

    return ternary(heads), ternary(kv_heads), torch.randn(batch, kv_heads, n, head_dim, generator=g, device=device).half()


def _inputs(n=200, d=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    q, k, v = (torch.randn(2, 3, n, d, generator=g) * torch.logspace(-2, 2, 3)[None, :, None, None] for _ in range(3))
    return q, k, v


@pytest.mark.parametrize("block_size", [64, 128])
def test_each_value_is_within_e4m3_rounding_of_its_quantized_value(block_size):
    q, k, v = _inputs()
    q8, k8, v8, s = quantize_fp8(q, k, v, block_size)
    assert q8.dtype == k8.dtype == v8.dtype == FP8 and q8.shape == q.shape and v8.shape == v.shape
    nb = -(-q.shape[2] // block_size)
    assert s.q.shape == (2, 3, nb) and s.k.shape == (2, 3, nb) and s.v.shape == (2, 3, 64)
    for x, x8, scale, bs in ((q, q8, s.q, block_size), (k, k8, s.k, block_size), (v, v8, s.v, None)):
        back = dequantize(x8, scale, bs)
        unit = scale.repeat_interleave(bs, -1)[..., : x.shape[2], None] if bs else scale[..., None, :]
        assert ((back - x).abs() <= REL * x.abs() + SUB * unit).all()
        # each group's largest magnitude maps to e4m3's largest value: the full range is used, none clipped
        if bs is None:
            assert (x8.float().abs().amax(-2) == E4M3_MAX).all()
        else:
            assert all((x8[:, :, i:i + bs].float().abs().amax((-2, -1)) == E4M3_MAX).all()
                       for i in range(0, x.shape[2], bs))


def test_v_is_stored_channel_major_and_zero_groups_take_scale_one():
    q, k, v = _inputs(n=130)
    q[:, :, :64] = 0
    q8, _, v8, s = quantize_fp8(q, k, v, 64)
    assert v8.stride(-2) == 1 and v8.stride(-1) == 144        # [B, H, D, N] in memory, rows of 16 bytes
    assert (s.q[:, :, 0] == 1).all() and (q8[:, :, :64].float() == 0).all()
