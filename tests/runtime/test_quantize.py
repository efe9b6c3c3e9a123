"""``runtime.quantize``: e4m3 operands and their scales, against the values they stand for."""

from __future__ import annotations

import math

import pytest
import torch

from attnsearch.runtime.quantize import (E4M3_MAX, FP8, dequantize, fp8_attention_rows, quantize_fp8,
                                         round_probabilities)

#: e4m3 keeps 3 mantissa bits: round-to-nearest errs by at most 2^-4 of a normal value; below
#: 2^-6 (× scale) values are subnormal, spaced 2^-9 apart.
REL, SUB = 2.0 ** -4, 2.0 ** -10


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


def test_the_wgmma_key_order_is_the_qk_accumulators_register_order():
    """``wgmma_position``: key r = 16h + 8c + 2t + e of a group of 32 (thread t of a quad holds it in
    the fp32 accumulator) sits where that thread's FP8 A operand reads it, 16h + 4t + 2c + e;
    ``wgmma_key`` inverts it. The definition's "wgmma" V holds the natural bytes at those columns,
    N rounded up to 32 with zero columns."""
    from attnsearch.runtime.quantize import wgmma_key, wgmma_position

    for h, c, t, e in ((h, c, t, e) for h in (0, 1) for c in (0, 1) for t in range(4) for e in (0, 1)):
        assert wgmma_position(16 * h + 8 * c + 2 * t + e) == 16 * h + 4 * t + 2 * c + e
    r = torch.arange(32)
    assert torch.equal(wgmma_key(wgmma_position(r)), r)
    q, k, v = _inputs(n=70)
    natural = quantize_fp8(q, k, v, 64)[2]
    wgmma = quantize_fp8(q, k, v, 64, key_order="wgmma")[2]
    keys = torch.arange(70)
    assert wgmma.shape[-2] == 96 and wgmma.stride(-2) == 1
    assert torch.equal(wgmma[:, :, keys - keys % 32 + wgmma_position(keys % 32)].view(torch.uint8),
                       natural.view(torch.uint8))
    assert int(wgmma.view(torch.uint8).count_nonzero()) == int(natural.view(torch.uint8).count_nonzero())
    with pytest.raises(ValueError, match="key_order"):
        quantize_fp8(q, k, v, 64, key_order="transposed")


def test_round_probabilities_is_e4m3_of_the_scaled_weight():
    p = torch.tensor([1.0, 0.5, 0.3, 1e-3, 1e-6, 0.0])
    got = round_probabilities(p)
    assert got[0] == 1.0 and got[1] == 0.5 and got[-1] == 0.0      # powers of two and 0 are exact
    assert abs(got[2] - 0.3) <= 0.3 * 2 ** -4                        # 3 mantissa bits: half an ulp
    assert got[4] == 0.0                                             # below e4m3's smallest subnormal / 448
    assert torch.equal(got, (p * 448).to(torch.float8_e4m3fn).float() / 448)


def test_fp8_attention_rows_equals_softmax_where_the_weights_are_exact():
    # Logits whose exp(s − max) are powers of two ≥ 2^-6: e4m3 holds P·448 exactly, so the rows are softmax's.
    g = torch.Generator().manual_seed(0)
    s = -torch.randint(0, 7, (3, 5, 40), generator=g).double() * math.log(2)
    s[0, 0, 10:] = float("-inf")                                     # a row with few kept keys
    s[1, 2] = float("-inf")                                          # a row with none: zero
    v = torch.randn(3, 40, 8, generator=g)
    got = fp8_attention_rows(s.float(), v)
    ref = torch.softmax(s, -1).nan_to_num(0.0) @ v.double()
    assert torch.allclose(got.double(), ref, atol=1e-5)
    assert torch.equal(got[1, 2], torch.zeros(8))


def test_fp8_attention_rows_error_is_bounded_by_the_rounding_of_p():
    g = torch.Generator().manual_seed(1)
    s = torch.randn(4, 16, 300, generator=g) * 3
    v = torch.randn(4, 300, 32, generator=g)
    got = fp8_attention_rows(s, v).double()
    ref = torch.softmax(s.double(), -1) @ v.double()
    # Each weight moves by at most 2^-4 of itself (or 2^-9/448 absolutely, near zero).
    bound = (torch.softmax(s.double(), -1) * 2 ** -4 + 2 ** -9 / 448) @ v.double().abs()
    assert ((got - ref).abs() <= bound + 1e-6).all()
    assert not torch.allclose(got, ref, atol=1e-4)                   # the rounding is there
