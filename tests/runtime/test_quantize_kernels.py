"""``quantize_fp8``'s Triton kernels under TRITON_INTERPRET=1 on CPU, against the PyTorch definition.

The interpreter's fp32 → e4m3 cast drops the carry of some round-ups (``quantize_fp8``'s
docstring), so the kernels' bytes are compared with that same cast applied to the definition's
fp32 quotients (value / scale, IEEE division on both sides): equal bytes then mean the kernels
read, scale and place every value as the definition does (the cast's errors are not a bounded
distance from PyTorch's: a lost carry halves a value, 124 → 64, and subnormals go one or more steps
astray, so a tolerance on the values would hide misplaced ones). Scales, shapes and strides are
compared with the definition's exactly, and the entries the kernels must leave alone (heads not
listed, K/V heads of no listed head) are poisoned before the call. The GPU tests
(``test_gpu_kernels.py``) compare the bytes themselves. Checks run in a Python started with
TRITON_INTERPRET=1 (``test_runtime_triton.Interpreter``).
"""

from __future__ import annotations

import math
from unittest import mock

import pytest
import torch
import triton
import triton.language as tl

from attnsearch.runtime.triton.quantize_kernel import _head, _writes_kv
from test_runtime_triton import Interpreter, serve

FP8 = torch.float8_e4m3fn
POISON = 0x7F  # e4m3fn NaN


@pytest.fixture(scope="module")
def interpreter():
    python = Interpreter(__file__)
    yield python.run
    python.close()


#: (batch, heads, kv_heads, tokens, head_dim, block size, listed heads or None, dtype)
CASES = {
    # every head, N a multiple of neither 16 nor the block, [B, N, H, D] views
    "all_heads": (2, 3, 3, 200, 32, 64, None, "bfloat16"),
    # GQA: heads 0 and 1 share K/V head 0 (written once), K/V head 1 has no listed head
    "gqa_subset": (2, 6, 3, 150, 64, 128, [5, 0, 1], "float16"),
    # GQA, every head: K/V heads written by the first head of each group
    "gqa_all_heads": (1, 4, 2, 128, 32, 64, None, "float32"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_quantization_kernels_place_and_scale_every_value_as_the_definition(interpreter, case):
    interpreter("check_kernels_against_definition", case)


def test_the_wgmma_key_order_holds_the_natural_bytes_at_their_columns(interpreter):
    """``key_order="wgmma"`` (the Hopper kernel's V): the same bytes as the natural order, key r of
    each 32 at column ``wgmma_position(r)``, storage N rounded up to 32 with zero columns, the same
    scales; a subset of GQA heads."""
    interpreter("check_wgmma_order")


def test_listed_heads_equal_every_head_on_those_heads(interpreter):
    """The listed-head path (``Heads``) and the every-head path give the same bytes and scales."""
    interpreter("check_listed_equals_all")


@pytest.mark.parametrize("heads,group,want", [([5, 0, 1, 4], 2, [1, 1, 0, 0]), (None, 2, [1, 0, 1, 0]),
                                              ([2, 0, 1], 3, [1, 0, 0]), ([3, 1], 1, [1, 1])])
def test_each_kv_head_is_written_by_one_program(interpreter, heads, group, want):
    """Under GQA only the first listed head of each K/V head reads and writes it (the outputs cannot
    show a second writer: it writes the same bytes)."""
    interpreter("check_writes_kv", heads, group, want)


# --- checks (in the interpreter Python) -------------------------------------------------------------


def inputs(batch, heads, kv_heads, n, d, block_size, dtype, seed=0):
    """[B, N, H, D]-strided q, k, v with magnitudes spread over heads, an all-zero q block, an
    all-zero V channel and blocks whose largest magnitude is negative."""
    g = torch.Generator().manual_seed(seed)
    dtype = getattr(torch, dtype)

    def one(h):
        x = torch.randn(batch, n, h, d, generator=g) * torch.logspace(-3, 2, h)[None, None, :, None]
        return x.to(dtype).transpose(1, 2)

    q, k, v = one(heads), one(kv_heads), one(kv_heads)
    q[:, heads - 1, :block_size] = 0
    v[:, 0, :, 3] = 0
    k[:, :, 5, 1] = -4 * k.float().abs().amax().to(dtype)
    return q, k, v


@triton.jit
def to_e4m3(X, Y, n, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    tl.store(Y + offs, tl.load(X + offs, mask=offs < n).to(Y.dtype.element_ty), mask=offs < n)


@triton.jit
def writes_kv(Heads, Out, GROUP: tl.constexpr, LISTED: tl.constexpr, HEADS_PAD: tl.constexpr):
    i = tl.program_id(0)
    writes = _writes_kv(Heads, i, _head(Heads, i, LISTED), GROUP, LISTED, HEADS_PAD)
    tl.store(Out + i, tl.zeros((), tl.int32) + writes)


def interpreter_e4m3(x: torch.Tensor) -> torch.Tensor:
    """float32 ``x`` cast to e4m3 by the interpreter (as the kernels' cast runs there), as bytes."""
    x = x.contiguous()
    y = torch.empty(x.shape, dtype=FP8)
    to_e4m3[(math.ceil(x.numel() / 1024),)](x, y, x.numel(), BLOCK=1024)
    return y.view(torch.uint8)


def definition_quotients(q, k, v, block_size):
    """The definition's fp32 values before its e4m3 cast: x / scale per block (q, k), per channel (v)."""
    from attnsearch.runtime.quantize import _per_block, _per_channel_transposed

    def blocks(x):
        scale = _per_block(x, block_size)[1]
        return x.float() / scale.repeat_interleave(block_size, -1)[..., : x.shape[2], None]

    return blocks(q), blocks(k), v.float() / _per_channel_transposed(v)[1][..., None, :]


def poisoned_empty(real=torch.empty):
    def empty(*size, dtype=None, device=None, **kw):
        t = real(*size, dtype=dtype, device=device, **kw)
        if dtype == FP8:
            t.view(torch.uint8).fill_(POISON)
        return t
    return empty


def check_kernels_against_definition(tk, case):
    from attnsearch.runtime.quantize import quantize_fp8

    batch, heads, kv_heads, n, d, block_size, listed, dtype = CASES[case]
    q, k, v = inputs(batch, heads, kv_heads, n, d, block_size, dtype)
    assert not q.is_contiguous()
    group = heads // kv_heads
    q_heads = list(range(heads)) if listed is None else listed
    kv = sorted({h // group for h in q_heads})
    index = None if listed is None else torch.tensor(listed, dtype=torch.int32)
    with mock.patch.object(torch, "empty", poisoned_empty()):
        fast = quantize_fp8(q, k, v, block_size, heads=index, kernels=True)
    slow = quantize_fp8(q, k, v, block_size, kernels=False)
    quotients = definition_quotients(q, k, v, block_size)
    for name, a, b, x, rows in zip("qkv", fast[:3], slow[:3], quotients, (q_heads, kv, kv)):
        assert a.dtype == FP8 and a.shape == b.shape and a.stride() == b.stride(), name
        got = a.view(torch.uint8)
        assert torch.equal(got[:, rows], interpreter_e4m3(x)[:, rows]), name
        others = [h for h in range(a.shape[1]) if h not in rows]
        assert bool((got[:, others] == POISON).all()), f"{name}: a head not listed was written"
    # V's storage: [B, H_kv, D, N_pad], padding columns of written heads are e4m3 zero
    n_pad = -(-n // 16) * 16
    storage = fast[2].transpose(-1, -2).as_strided((batch, kv_heads, d, n_pad),
                                                   (kv_heads * d * n_pad, d * n_pad, n_pad, 1))
    assert bool((storage[:, kv, :, n:].view(torch.uint8) == 0).all())
    for name, a, b, rows in zip("qkv", fast[3], slow[3], (q_heads, kv, kv)):
        assert a.dtype == torch.float32 and a.shape == b.shape and a.is_contiguous(), name
        assert torch.equal(a[:, rows].view(torch.int32), b[:, rows].view(torch.int32)), name
        others = [h for h in range(a.shape[1]) if h not in rows]
        assert bool((a[:, others] == 0).all()), f"{name}: a scale of a head not listed was written"
    assert bool((fast[3].q[:, heads - 1, 0] == 1).all()) and bool((fast[3].v[:, 0, 3] == 1).all())


def check_writes_kv(tk, heads, group, want):
    out = torch.full((len(want),), -1, dtype=torch.int32)
    listed = None if heads is None else torch.tensor(heads, dtype=torch.int32)
    writes_kv[(len(want),)](listed, out, GROUP=group, LISTED=heads is not None, HEADS_PAD=8)
    assert out.tolist() == want, out.tolist()


def check_wgmma_order(tk):
    from attnsearch.runtime.quantize import quantize_fp8, wgmma_position

    q, k, v = inputs(2, 4, 2, 150, 32, 64, "float16", seed=5)
    heads = torch.tensor([3, 0], dtype=torch.int32)
    natural = quantize_fp8(q, k, v, 64, heads=heads, kernels=True)
    wgmma = quantize_fp8(q, k, v, 64, heads=heads, kernels=True, key_order="wgmma")
    n32 = 160
    assert wgmma[2].shape == (2, 2, n32, 32) and wgmma[2].stride() == (2 * 32 * n32, 32 * n32, 1, n32)
    keys = torch.arange(150)
    columns = keys - keys % 32 + wgmma_position(keys % 32)
    assert torch.equal(wgmma[2][:, :, columns].view(torch.uint8), natural[2].view(torch.uint8))
    missing = sorted(set(range(n32)) - set(columns.tolist()))
    assert len(missing) == 10 and bool((wgmma[2][:, :, missing].view(torch.uint8) == 0).all())
    assert torch.equal(wgmma[0][:, [3, 0]].view(torch.uint8), natural[0][:, [3, 0]].view(torch.uint8))
    for a, b in zip(wgmma[3], natural[3]):
        assert torch.equal(a, b)


def check_listed_equals_all(tk):
    from attnsearch.runtime.quantize import quantize_fp8

    q, k, v = inputs(2, 4, 2, 100, 32, 64, "float16", seed=3)
    every = quantize_fp8(q, k, v, 64, kernels=True)
    listed = quantize_fp8(q, k, v, 64, heads=torch.tensor([3, 2, 1, 0], dtype=torch.int32), kernels=True)
    for a, b in zip(every[:3], listed[:3]):
        assert torch.equal(a.view(torch.uint8), b.view(torch.uint8))
    for a, b in zip(every[3], listed[3]):
        assert torch.equal(a, b)


if __name__ == "__main__":  # in a Python started with TRITON_INTERPRET=1
    serve(globals())
