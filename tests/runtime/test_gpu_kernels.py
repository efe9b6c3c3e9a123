"""GPU correctness of the block-sparse kernels (``pytest -m gpu``; skipped without CUDA): the Hopper
kernel (both consumer schedules, where it runs) and the Triton kernel (its first tuning config, with
and without TMA) and "auto" dispatch against SDPA in fp32 on the token-expanded block mask; mixed
families with a skip head, batch 2, N % B ≠ 0, text prefix and suffix, [B, N, H, D].transpose(1, 2)
inputs, NaN-poisoned outputs; and "auto" captured in a CUDA graph, replayed on new inputs (native, and native with FP8 heads);
FP8 heads against the torch backend's emulation; the quantization kernels against their definition
(eager and captured in a CUDA graph)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
import triton

from attnsearch import Geometry
from attnsearch.patterns import expand_block_mask
from attnsearch.plan import LayerPlan
from attnsearch.runtime import get_block_tables, sparse_attention
from attnsearch.runtime.backends import HopperBackend

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="GPU correctness: needs CUDA")]

GEOMS = {"prefix": Geometry(7, 24, 30, 77, "prefix"),    # N = 5117
         "suffix": Geometry(6, 20, 36, 51, "suffix")}    # N = 4371


def mixed_plan(geom: Geometry, block_size: int) -> LayerPlan:
    """Every family, a skip head (head 1) and a dense one, as the search emits them mixed."""
    return LayerPlan.from_heads([
        ("diagonal", {"rows": 2}), ("skip", {}), ("energy_decay", {"decay": 0.25, "sink": True}),
        ("vertical_stripe", {"key_blocks": [0, 5, 9], "rows": 1}), ("multi_diagonal", {"rows": 1, "frames": 2}),
        ("dense", {}), ("diagonal", {"rows": 6}), ("energy_decay", {"decay": 0.5}),
    ], geom, block_size)


def inputs(geom, heads, d, dtype, gqa=1, seed=0):
    g = torch.Generator(device="cuda").manual_seed(seed)
    n = geom.num_tokens
    q = torch.randn(2, n, heads, d, device="cuda", dtype=dtype, generator=g).transpose(1, 2)
    k, v = (torch.randn(2, n, heads // gqa, d, device="cuda", dtype=dtype, generator=g).transpose(1, 2)
            for _ in range(2))
    return q, k, v


def reference(q, k, v, lp, gqa):
    mask = expand_block_mask(lp.block_masks().to(q.device), q.shape[2], lp.block_size)
    ref = F.scaled_dot_product_attention(q.float(), k.float(), v.float(), attn_mask=mask, enable_gqa=gqa > 1)
    return torch.nan_to_num(ref, nan=0.0)


def runs(q, k, v, lp, gqa):
    """name → fn(out) of every way the call can run here."""
    from attnsearch.runtime.triton.launch import TUNING_CONFIGS, KernelConfig, forward, tma_supported

    d, bs = q.shape[-1], lp.block_size
    tables = get_block_tables(lp, "cuda")
    first = TUNING_CONFIGS[(d, bs)][0]
    out = {"auto": lambda o: sparse_attention(q, k, v, lp, out=o, enable_gqa=gqa > 1),
           "triton": lambda o: sparse_attention(q, k, v, lp, backend="triton", out=o, enable_gqa=gqa > 1)}
    for tma in (False, True) if tma_supported(q, k, v) else (False,):
        cfg = KernelConfig(first.block_m, first.block_n, first.num_warps, first.num_stages, tma)
        out[f"triton-tma{int(tma)}"] = lambda o, cfg=cfg: forward(q, k, v, tables, d ** -0.5, out=o, config=cfg)
    if not HopperBackend.call_reasons(q, k, v, bs):
        from attnsearch.runtime.hopper.launch import forward as hopper_forward

        for flat in (False, True):
            out[f"hopper-flat{int(flat)}"] = lambda o, flat=flat: hopper_forward(q, k, v, tables, d ** -0.5, out=o,
                                                                                  flat=flat)
    return out


CASES = [(w, bs, d, torch.bfloat16, 1) for w in GEOMS for bs in (64, 128) for d in (64, 128)]
CASES += [("suffix", 128, 128, torch.float16, 1), ("prefix", 128, 128, torch.bfloat16, 4)]  # fp16; GQA


@pytest.mark.parametrize("where,block_size,head_dim,dtype,gqa", CASES)
def test_kernels_match_masked_sdpa_in_fp32(where, block_size, head_dim, dtype, gqa):
    geom = GEOMS[where]
    lp = mixed_plan(geom, block_size)
    q, k, v = inputs(geom, lp.num_heads, head_dim, dtype, gqa, seed=block_size + head_dim)
    ref = reference(q, k, v, lp, gqa)
    for name, run in runs(q, k, v, lp, gqa).items():
        out = run(torch.full_like(q, float("nan")))
        torch.cuda.synchronize()
        assert not torch.isnan(out).any(), f"{name}: unwritten or NaN output"
        assert float(((out.float() - ref).norm() / ref.norm())) <= 1e-2, name
        assert bool((out[:, 1] == 0).all()), f"{name}: the skip head is not zero"


@pytest.mark.parametrize("head_dim,fp8", [(128, False), (64, False), (128, True)])
def test_cuda_graph_replay_equals_eager(head_dim, fp8):
    """``sparse_attention`` captured in a CUDA graph after one eager call (which builds the cached
    tables), replayed on new inputs copied into the captured buffers: bit for bit the eager result;
    also with FP8 heads beside native ones (their quantization pass is in the graph)."""
    if fp8 and torch.cuda.get_device_capability() < (8, 9):
        pytest.skip("FP8 tensor cores need compute capability 8.9 or newer")
    geom = GEOMS["suffix"]
    lp = mixed_plan(geom, 128)
    if fp8:
        lp = LayerPlan.from_heads(lp.head_specs, geom, 128, precisions=["fp8", "native"] * (lp.num_heads // 2))
    q, k, v = (x.contiguous() for x in inputs(geom, lp.num_heads, head_dim, torch.bfloat16, seed=head_dim))
    out = torch.empty_like(q)
    sparse_attention(q, k, v, lp, out=out)
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        sparse_attention(q, k, v, lp, out=out)
    for t, new in zip((q, k, v), inputs(geom, lp.num_heads, head_dim, torch.bfloat16, seed=head_dim + 1)):
        t.copy_(new)
    out.fill_(float("nan"))
    graph.replay()
    eager = sparse_attention(q, k, v, lp)
    torch.cuda.synchronize()
    assert torch.equal(out, eager)


@pytest.mark.parametrize("block_size,head_dim", [(64, 64), (128, 64), (128, 128)])
def test_fp8_kernel_is_attention_on_its_quantized_operands(block_size, head_dim):
    """precision="fp8" in every FP8 tuning config, TMA where the device has it (FP8 tensor cores:
    compute capability ≥ 8.9), quantized by the Triton kernels, on
    inputs whose e4m3 forms are exact but V's (``exact_fp8_inputs``): masked SDPA in fp32 on the
    dequantized operands, within fp32 accumulation; mixed families, skip head zero, N % B ≠ 0."""
    import math

    from attnsearch.runtime.quantize import dequantize, quantize_fp8
    from attnsearch.runtime.triton.launch import FP8_TUNING_CONFIGS, forward
    from reference import exact_fp8_inputs

    if torch.cuda.get_device_capability() < (8, 9):
        pytest.skip("FP8 tensor cores need compute capability 8.9 or newer")
    geom = GEOMS["suffix"]
    lp = mixed_plan(geom, block_size).with_precision("fp8")
    q, k, v = exact_fp8_inputs(geom.num_tokens, lp.num_heads, lp.num_heads, seed=block_size, device="cuda",
                               batch=2, head_dim=head_dim)
    q8, k8, v8, s = quantize_fp8(q, k, v, block_size)
    deq = (dequantize(q8, s.q, block_size), dequantize(k8, s.k, block_size), dequantize(v8, s.v, None))
    mask = expand_block_mask(lp.block_masks().cuda(), geom.num_tokens, block_size)
    ref = torch.nan_to_num(F.scaled_dot_product_attention(*deq, attn_mask=mask, scale=math.log(2)), nan=0.0)
    tables = get_block_tables(lp, "cuda")
    ran = 0
    for cfg in FP8_TUNING_CONFIGS[(head_dim, block_size)]:
        out = torch.full_like(q, float("nan"))
        try:
            forward(q, k, v, tables, math.log(2), out=out, config=cfg, precision="fp8")
        except triton.runtime.errors.OutOfResources:
            continue
        torch.cuda.synchronize()
        ran += 1
        assert float(((out.float() - ref).norm() / ref.norm())) <= 2e-3, cfg
        assert bool((out[:, 1] == 0).all()), f"{cfg}: the skip head is not zero"
    assert ran


HOPPER_FP8_CASES = [("suffix", 128, 1, flat) for flat in (True, False)] + [("prefix", 64, 2, True),
                                                                           ("suffix", 64, 1, False)]


@pytest.mark.parametrize("where,head_dim,gqa,flat", HOPPER_FP8_CASES)
def test_hopper_fp8_kernel_is_attention_on_its_quantized_operands(where, head_dim, gqa, flat):
    """The Hopper kernel with precision="fp8" (both consumer schedules, both head dims, GQA, batch 2,
    N % 32 ≠ 0) on inputs whose q and k e4m3 forms are exact (``exact_fp8_inputs``): masked SDPA in
    fp32 on the dequantized operands within P's e4m3 rounding (as the Triton FP8 kernel's bound),
    the skip head zero, every row written; and the "wgmma" key order it reads V in is what makes it
    right: V in natural order through the same kernel is wrong."""
    import math

    from attnsearch.runtime.hopper.launch import forward, launch_all
    from attnsearch.runtime.quantize import dequantize, quantize_fp8
    from reference import exact_fp8_inputs

    geom = GEOMS[where]
    lp = mixed_plan(geom, 128).with_precision("fp8")
    if HopperBackend.call_reasons(*inputs(geom, 2, head_dim, torch.bfloat16), 128, "fp8"):
        pytest.skip("the Hopper kernel does not run here")
    q, k, v = exact_fp8_inputs(geom.num_tokens, lp.num_heads, lp.num_heads // gqa, seed=head_dim + gqa,
                               device="cuda", batch=2, head_dim=head_dim)
    q8, k8, v8, s = quantize_fp8(q, k, v, 128)
    deq = (dequantize(q8, s.q, 128), dequantize(k8, s.k, 128), dequantize(v8, s.v, None))
    mask = expand_block_mask(lp.block_masks().cuda(), geom.num_tokens, 128)
    ref = torch.nan_to_num(F.scaled_dot_product_attention(*deq, attn_mask=mask, scale=math.log(2),
                                                          enable_gqa=gqa > 1), nan=0.0)
    tables = get_block_tables(lp, "cuda")
    out = forward(q, k, v, tables, math.log(2), out=torch.full_like(q, float("nan")), flat=flat, precision="fp8")
    torch.cuda.synchronize()
    assert not torch.isnan(out).any()
    assert float(((out.float() - ref).norm() / ref.norm())) <= 2e-3
    assert bool((out[:, 1] == 0).all())
    # The same bytes with V's keys in natural order (storage padded to 32 keys as the kernel takes it).
    q8, k8, v8, s = quantize_fp8(q, k, v, 128, key_order="natural")
    n32 = -(-geom.num_tokens // 32) * 32
    storage = torch.zeros(*v8.shape[:2], head_dim, n32, dtype=torch.uint8, device="cuda")
    storage[..., : geom.num_tokens] = v8.transpose(-1, -2).view(torch.uint8)
    wrong = torch.zeros_like(out)
    launch_all(q8, k8, storage.view(v8.dtype).transpose(-1, -2), wrong, tables, math.log(2), "fp8", flat=flat,
               fp8_scales=s)
    assert float(((wrong.float() - ref).norm() / ref.norm())) > 0.05


@pytest.mark.parametrize("block_size,head_dim,dtype", [(64, 128, torch.bfloat16), (128, 128, torch.bfloat16),
                                                      (128, 64, torch.float16)])
def test_quantization_kernels_equal_the_definition(block_size, head_dim, dtype):
    """``quantize_fp8``'s Triton kernels give the PyTorch definition's e4m3 bytes, layouts and scales
    exactly: batch 2, [B, N, H, D] views, N % 16 ≠ 0 and N % B ≠ 0, an all-zero block and V
    channel, fewer K/V heads (each written once)."""
    from attnsearch.runtime.quantize import quantize_fp8

    geom = GEOMS["prefix"]
    q, k, v = inputs(geom, 4, head_dim, dtype, gqa=2, seed=block_size)
    assert geom.num_tokens % 16 and not q.is_contiguous()
    q[:, 1, :block_size] = 0
    v[:, 0, :, 3] = 0
    fast = quantize_fp8(q, k, v, block_size, kernels=True)
    slow = quantize_fp8(q, k, v, block_size, kernels=False)
    for a, b in zip(fast[:3], slow[:3]):
        assert a.shape == b.shape and a.stride() == b.stride()
        assert torch.equal(a.view(torch.uint8), b.view(torch.uint8))
    for a, b in zip(fast[3], slow[3]):
        assert torch.equal(a, b)


@pytest.mark.parametrize("gqa", [1, 2])
def test_quantization_kernels_of_a_head_subset_equal_the_definition_on_those_heads(gqa):
    """``quantize_fp8(..., heads=...)`` (the FP8 heads of a mixed layer): the listed query heads and
    their K/V heads get the definition's bytes and scales exactly; other heads are not read by the
    kernel and may hold anything."""
    from attnsearch.runtime.quantize import quantize_fp8

    geom = GEOMS["suffix"]
    q, k, v = inputs(geom, 8, 64, torch.bfloat16, gqa=gqa, seed=7)
    heads = (1, 4, 5)
    kv = sorted({h // gqa for h in heads})
    fast = quantize_fp8(q, k, v, 128, heads=torch.tensor(heads, dtype=torch.int32, device="cuda"), kernels=True)
    slow = quantize_fp8(q, k, v, 128, kernels=False)
    for i, listed in enumerate((list(heads), kv, kv)):
        assert torch.equal(fast[i][:, listed].view(torch.uint8), slow[i][:, listed].view(torch.uint8)), i
    for a, b, listed in zip(fast[3], slow[3], (list(heads), kv, kv)):
        assert torch.equal(a[:, listed], b[:, listed])


def test_quantization_is_captured_in_a_cuda_graph():
    """``quantize_fp8(..., heads=...)`` captured in a CUDA graph and replayed on new, smaller inputs
    gives the definition's bytes and scales on them: nothing is read from the host, and the amax
    workspace starts from zero at every replay."""
    from attnsearch.runtime.quantize import quantize_fp8

    geom = GEOMS["suffix"]
    q, k, v = (x.contiguous() for x in inputs(geom, 8, 128, torch.bfloat16, gqa=2, seed=11))
    heads = torch.tensor([6, 1, 0, 3], dtype=torch.int32, device="cuda")
    kv = [0, 1, 3]
    quantize_fp8(q, k, v, 128, heads=heads)
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        fast = quantize_fp8(q, k, v, 128, heads=heads)
    for t, new in zip((q, k, v), inputs(geom, 8, 128, torch.bfloat16, gqa=2, seed=12)):
        t.copy_(new * 0.01)
    graph.replay()
    torch.cuda.synchronize()
    slow = quantize_fp8(q, k, v, 128, kernels=False)
    for i, listed in enumerate(([6, 1, 0, 3], kv, kv)):
        assert torch.equal(fast[i][:, listed].view(torch.uint8), slow[i][:, listed].view(torch.uint8)), i
    for a, b, listed in zip(fast[3], slow[3], ([6, 1, 0, 3], kv, kv)):
        assert torch.equal(a[:, listed], b[:, listed])


@pytest.mark.parametrize("block_size,head_dim", [(128, 128), (64, 64)])
def test_a_layer_of_native_and_fp8_heads_runs_each_on_its_backend(block_size, head_dim):
    """"auto" on a layer whose heads run native and FP8 (native on the Hopper kernel where it runs,
    FP8 on the Triton kernel): the native heads equal masked SDPA in fp32; each FP8 head's error
    against it is FP8's (within 8%, and within a factor 2 of the torch backend's emulation on the
    same quantized operands: the kernel rounds P against its running maximum, the emulation
    against the row's, so the two round differently but alike in size); the skip head is zero."""
    if torch.cuda.get_device_capability() < (8, 9):
        pytest.skip("FP8 tensor cores need compute capability 8.9 or newer")
    geom = GEOMS["prefix"]
    lp = mixed_plan(geom, block_size)
    fp8_heads = {0, 2, 5}
    mixed = LayerPlan.from_heads(lp.head_specs, geom, block_size,
                                 precisions=["fp8" if h in fp8_heads else "native" for h in range(lp.num_heads)])
    q, k, v = inputs(geom, lp.num_heads, head_dim, torch.bfloat16, seed=3)
    out = sparse_attention(q, k, v, mixed, out=torch.full_like(q, float("nan")))
    ref = reference(q, k, v, lp, 1)
    emulated = sparse_attention(q, k, v, mixed, backend="torch")

    def err(x, h):
        return float((x[:, h].float() - ref[:, h]).norm() / ref[:, h].norm().clamp_min(1e-30))

    for h in range(lp.num_heads):
        if h == 1:
            continue
        if h in fp8_heads:
            assert err(out, h) <= 0.08 and 0.5 * err(emulated, h) <= err(out, h) <= 2 * err(emulated, h), \
                (h, err(out, h), err(emulated, h))
        else:
            assert err(out, h) <= 8e-3, (h, err(out, h))
    assert bool((out[:, 1] == 0).all())
