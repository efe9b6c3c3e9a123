"""Runtime on CPU: block tables, their cache, dispatch, and the torch backend against SDPA.

The reference is float64 SDPA with the layer plan's block masks expanded to tokens
(docs/design.md: softmax over the keys of the kept blocks); rows with no kept key are zero.
The Triton kernel runs the same checks under the interpreter in test_runtime_triton.py.
"""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F

from attnsearch import Geometry
from attnsearch.patterns import expand_block_mask
from attnsearch.plan import LayerPlan, PlanError
from attnsearch.runtime import block_tables, schedule, sparse_attention, torch_backend
from attnsearch.runtime.block_tables import build_block_tables, get_block_tables
from attnsearch.runtime.backends import get_backend, select_backend

# N not a multiple of either block size; text before and after the video. The B = 128 geometries
# are longer so that their masks stay sparse (nb ≥ 4).
GEOMS = {
    "prefix": Geometry(frames=4, height=6, width=16, text_tokens=13, text_position="prefix"),   # N = 397
    "suffix": Geometry(frames=3, height=8, width=16, text_tokens=29, text_position="suffix"),   # N = 413
}
GEOMS_128 = {
    "prefix": Geometry(frames=4, height=8, width=16, text_tokens=13, text_position="prefix"),   # N = 525
    "suffix": Geometry(frames=4, height=8, width=16, text_tokens=9, text_position="suffix"),    # N = 521
}


def geometry(where: str, block_size: int) -> Geometry:
    return (GEOMS if block_size == 64 else GEOMS_128)[where]


def all_patterns(geom: Geometry, block_size: int) -> LayerPlan:
    """Six heads, one per family (skip included), every sparse head really sparse."""
    lp = LayerPlan.from_heads([
        ("diagonal", {"rows": 0.5}),
        ("skip", {}),
        ("energy_decay", {"decay": 0.25, "sink": True}),
        ("vertical_stripe", {"key_blocks": [1], "rows": 0.5}),
        ("multi_diagonal", {"rows": 0.5, "frames": 1}),
        ("dense", {}),
    ], geom, block_size)
    masks = lp.block_masks()
    assert all(not masks[h].all() for h in (0, 2, 3, 4)), f"test plan not sparse on {geom}, B={block_size}"
    return lp


def qkv(batch: int, heads: int, n: int, d: int, dtype=torch.float32, kv_heads: int | None = None,
        layout: str = "bnhd", seed: int = 0):
    """Fresh random inputs; ``bnhd`` gives diffusers' [B, N, H, D].transpose(1, 2) views."""
    g = torch.Generator().manual_seed(seed)
    shapes = [(batch, heads, n, d)] + [(batch, kv_heads or heads, n, d)] * 2
    out = []
    for (b, h, nn, dd) in shapes:
        if layout == "bnhd":
            t = torch.randn(b, nn, h, dd, generator=g).transpose(1, 2)
        elif layout == "bhdn":  # head_dim not contiguous
            t = torch.randn(b, h, dd, nn, generator=g).transpose(2, 3)
        else:
            t = torch.randn(b, h, nn, dd, generator=g)
        out.append(t.to(dtype))
    return out


def reference(q, k, v, lp: LayerPlan, scale=None, enable_gqa=False) -> torch.Tensor:
    n = q.shape[2]
    mask = expand_block_mask(lp.block_masks(), n, lp.block_size)  # [H, N, N]
    ref = F.scaled_dot_product_attention(q.double(), k.double(), v.double(), attn_mask=mask, scale=scale,
                                         enable_gqa=enable_gqa)
    return torch.nan_to_num(ref, nan=0.0)  # rows with no kept key: zero


def rel_err(out, ref) -> float:
    assert not torch.isnan(out).any(), "unwritten (poisoned) or NaN output"
    return ((out.double() - ref).norm() / ref.norm()).item()


def poisoned(q) -> torch.Tensor:
    return torch.full(q.shape, float("nan"), dtype=q.dtype)


# --- block tables ---------------------------------------------------------------------------------


@pytest.mark.parametrize("block_size", [64, 128])
def test_tables_list_exactly_the_kept_blocks(block_size):
    lp = all_patterns(geometry("suffix", block_size), block_size)
    masks = lp.block_masks()
    t = build_block_tables(lp, "cpu")
    H, nb, _ = masks.shape
    assert t.counts.dtype == t.indices.dtype == torch.int32
    assert torch.equal(t.counts, masks.sum(-1).int())
    for h in range(H):
        for qb in range(nb):
            c = int(t.counts[h, qb])
            kept = t.indices[h, qb, :c].tolist()
            assert kept == torch.nonzero(masks[h, qb]).flatten().tolist()  # ascending, exact
            assert all(0 <= i < nb for i in t.indices[h, qb].tolist())     # padding stays in range
    # One launch over the computed heads, every (head, qb) once; skip heads nowhere.
    assert t.skip_heads == (1,) and len(t.launches) == 1
    assert t.kept_blocks == int(masks[[0, 2, 3, 4, 5]].sum())
    for order in ("head", "lpt"):
        work = build_block_tables(lp, "cpu", order=order).launches[0].work.long()
        assert sorted(work.tolist()) == [h * nb + qb for h in (0, 2, 3, 4, 5) for qb in range(nb)]
        heads, qbs = work // nb, work % nb
        cnt = t.counts[heads, qbs]
        if order == "lpt":  # longest first over all items
            assert bool((cnt[:-1] >= cnt[1:]).all())
        else:
            # Items longer than BIG_ITEM × the mean first, longest first; then head-major, heaviest
            # head first, query blocks in order inside a head.
            big = cnt > schedule.BIG_ITEM * cnt.double().mean()
            n_big = int(big.sum())
            assert bool(big[:n_big].all()) and not bool(big[n_big:].any())
            assert bool((cnt[:n_big][:-1] >= cnt[:n_big][1:]).all())
            heads, qbs = heads[n_big:], qbs[n_big:]
            runs = torch.unique_consecutive(heads)
            assert len(runs) == len(set(runs.tolist()))  # each head's items in one run
            totals = t.counts[runs].sum(1)
            assert bool((totals[:-1] >= totals[1:]).all())
            for h in runs.tolist():
                assert bool((qbs[heads == h].diff() > 0).all())


def test_head_order_starts_long_items_first_and_balances_the_list_schedule():
    """Planted text rows (a text suffix): the last query block of every head keeps all 40 key blocks,
    the others 4. Plain head order hands the last head's long item out last, and list scheduling over 8 programs then
    ends one program most of a long item late; longest first, the schedule is balanced (makespan
    within one short item of the mean load)."""
    heads, nb, programs = 6, 40, 8
    counts = torch.full((heads, nb), 4, dtype=torch.int32)
    counts[:, -1] = nb
    counts[2, 5] = 9  # above the mean, not above twice it: stays in head order
    work = block_tables.launch_work(tuple(range(heads)), counts, "head")
    plain = block_tables.launch_work(tuple(range(heads)), counts, "head", big_item=float("inf"))
    assert plain[0] == 2 * nb  # head 2, the heaviest, leads the plain head order
    # The long items first (equal lengths: in head order), then the rest in head order.
    long = [w for w in plain.tolist() if w % nb == nb - 1]
    assert work.tolist() == long + [w for w in plain.tolist() if w not in long]

    def makespan(order):
        lengths = counts.flatten()[order].tolist()
        return schedule.list_schedule(lengths, programs), sum(lengths) / programs

    (late, mean), (balanced, _) = makespan(plain), makespan(work)
    assert late >= mean + nb - 8 and balanced <= mean + 4


def test_group_fusion_gives_one_launch_per_computed_group():
    lp = LayerPlan(GEOMS["prefix"], 64, 5, (
        {"pattern": "diagonal", "heads": [0, 3], "params": [{"rows": 1}, {"rows": 2}]},
        {"pattern": "skip", "heads": [4], "params": [{}]},
        {"pattern": "dense", "heads": [1, 2], "params": [{}, {}]},
    ))
    t = build_block_tables(lp, "cpu", fusion="group")
    assert [launch.heads for launch in t.launches] == [(0, 3), (1, 2)]
    nb = t.num_blocks
    assert {int(w) // nb for w in t.launches[0].work} == {0, 3}
    with pytest.raises(ValueError, match="fusion"):
        build_block_tables(lp, "cpu", fusion="head")
    with pytest.raises(ValueError, match="order"):
        build_block_tables(lp, "cpu", order="random")


def test_table_cache_hits_for_equal_plans_and_does_not_rebuild():
    block_tables.clear_cache()
    geom = GEOMS["prefix"]
    a = LayerPlan.single("diagonal", {"rows": 1}, geom, 3, 64)
    b = LayerPlan.single("diagonal", {"rows": 1.0}, geom, 3, 64)  # same content, another object
    t1 = get_block_tables(a, "cpu")
    t2 = get_block_tables(b, torch.device("cpu"))
    assert t1 is t2
    assert block_tables.cache_info() == {"hits": 1, "builds": 1, "size": 1}
    q, k, v = qkv(1, 3, geom.num_tokens, 64)
    for _ in range(3):
        sparse_attention(q, k, v, a, backend="torch")
    info = block_tables.cache_info()
    assert info["builds"] == 2 and info["hits"] == 3  # torch backend's "group" tables: built once
    get_block_tables(LayerPlan.single("diagonal", {"rows": 2}, geom, 3, 64), "cpu")
    assert block_tables.cache_info()["builds"] == 3


# --- torch backend vs reference -------------------------------------------------------------------


@pytest.mark.parametrize("where", ["prefix", "suffix"])
@pytest.mark.parametrize("block_size", [64, 128])
def test_torch_backend_matches_reference(where, block_size):
    geom = geometry(where, block_size)
    lp = all_patterns(geom, block_size)
    q, k, v = qkv(2, 6, geom.num_tokens, 64, seed=block_size)
    out = sparse_attention(q, k, v, lp, backend="torch", out=poisoned(q))
    assert rel_err(out, reference(q, k, v, lp)) <= 1e-3
    assert torch.equal(out[:, 1], torch.zeros_like(out[:, 1]))  # skip head: exactly zero
    # Allocated output: q's memory layout (a [B, N, H, D] view here, as diffusers passes), dtype
    # and numbers; a contiguous q gets a contiguous output.
    out2 = sparse_attention(q, k, v, lp)  # auto on CPU → torch
    assert not q.is_contiguous() and out2.stride() == q.stride()
    assert out2.dtype == q.dtype and torch.equal(out, out2)
    out3 = sparse_attention(q.contiguous(), k, v, lp)
    assert out3.is_contiguous() and torch.equal(out3, out)


def test_torch_backend_small_chunks_scale_gqa_and_strides():
    geom = GEOMS["suffix"]
    lp = all_patterns(geom, 64)
    q, k, v = qkv(2, 6, geom.num_tokens, 32, kv_heads=3, layout="bhdn", seed=3)  # any head_dim here
    tables = get_block_tables(lp, "cpu", "group")
    out = torch_backend.forward(q, k, v, tables, 0.3, chunk_bytes=1)  # one query block per chunk
    ref = reference(q, k, v, lp, scale=0.3, enable_gqa=True)
    assert rel_err(out, ref) <= 1e-3
    assert torch.equal(out, sparse_attention(q, k, v, lp, scale=0.3, enable_gqa=True))


def test_bf16_on_cpu_goes_through_fp32_math():
    geom = GEOMS["prefix"]
    lp = all_patterns(geom, 64)
    q, k, v = qkv(1, 6, geom.num_tokens, 64, dtype=torch.bfloat16, seed=5)
    out = sparse_attention(q, k, v, lp)
    assert out.dtype == torch.bfloat16
    assert rel_err(out, reference(q, k, v, lp)) <= 1e-2


# --- dispatch and argument errors -----------------------------------------------------------------


def test_dispatch_reasons(monkeypatch):
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    geom = GEOMS["prefix"]
    lp = all_patterns(geom, 64)
    q, k, v = qkv(1, 6, geom.num_tokens, 96)
    assert select_backend(q, k, v, lp).name == "torch"
    with pytest.raises(ValueError, match=r"backend='triton' cannot run this call: tensors are on cpu.*"
                                         r"head_dim 96 is not one of \(64, 128\)"):
        sparse_attention(q, k, v, lp, backend="triton")
    with pytest.raises(ValueError, match="backend: must be 'auto' or one of"):
        sparse_attention(q, k, v, lp, backend="cuda")


def test_hopper_backend_says_why_not_here(monkeypatch):
    """The Hopper kernel needs a CUDA GPU (and no interpreter): on the CPU "auto" passes over it and
    naming it is an error with that reason."""
    geom = GEOMS["prefix"]
    lp = all_patterns(geom, 128)
    q, k, v = qkv(1, 6, geom.num_tokens, 128, dtype=torch.bfloat16)
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    assert select_backend(q, k, v, lp).name == "torch"
    with pytest.raises(ValueError, match=r"backend='hopper' cannot run this call: tensors are on cpu; the Hopper "
                                         r"kernel needs a CUDA GPU"):
        sparse_attention(q, k, v, lp, backend="hopper")
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    assert "on cpu" in " ".join(get_backend("hopper").call_reasons(q, k, v, lp.block_size))


@pytest.mark.parametrize("change,match,exc", [
    (lambda q, k, v: (q[0], k, v), r"^q: expected a \[batch, heads, N, head_dim\]", ValueError),
    (lambda q, k, v: (q, k.double(), v.double()), "^k, v: dtypes", ValueError),
    (lambda q, k, v: (q, k[:, :, :100], v[:, :, :100]), "^k: 100 keys for 397 queries", ValueError),
    (lambda q, k, v: (q, k[:, :3], v[:, :3]), "^k: 3 heads for 6 query heads", ValueError),
    (lambda q, k, v: (q, k, v[..., :32]), "^v: shape", ValueError),
    (lambda q, k, v: (q[:, :, :200], k[:, :, :200], v[:, :, :200]), "^geometry: sequence length 200",
     PlanError),
    (lambda q, k, v: (q[:, :4], k[:, :4], v[:, :4]), "^num_heads: the call has 4 query heads, the plan 6",
     PlanError),
])
def test_call_errors_name_the_argument(change, match, exc):
    geom = GEOMS["prefix"]
    lp = all_patterns(geom, 64)
    q, k, v = change(*qkv(1, 6, geom.num_tokens, 64))
    with pytest.raises(exc, match=match):
        sparse_attention(q, k, v, lp)


def test_out_argument_is_checked():
    geom = GEOMS["prefix"]
    lp = all_patterns(geom, 64)
    q, k, v = qkv(1, 6, geom.num_tokens, 64)
    with pytest.raises(ValueError, match="^out: expected"):
        sparse_attention(q, k, v, lp, out=torch.empty(1, 6, geom.num_tokens, 64, dtype=torch.float16))
    with pytest.raises(TypeError, match="layer_plan"):
        sparse_attention(q, k, v, dataclasses.asdict(GEOMS["prefix"]))


def test_zero_skip_heads_clears_exactly_the_skip_heads_of_a_strided_output():
    # A device-side index (no host list per call, so CUDA graphs can capture the call); on the
    # diffusers layout, a [B, N, H, D] buffer seen as [B, H, N, D].
    heads = [("dense", {}), ("skip", {}), ("dense", {}), ("skip", {})]
    lp = LayerPlan.from_heads(heads, GEOMS_128["prefix"], 128)
    t = build_block_tables(lp, "cpu")
    assert t.skip_heads == (1, 3) and t.skip_index.tolist() == [1, 3] and t.skip_index.dtype == torch.long
    n = lp.geometry.num_tokens
    out = torch.randn(2, n, 4, 8).transpose(1, 2)
    before = out.clone()
    t.zero_skip_heads(out)
    assert torch.equal(out[:, [1, 3]], torch.zeros_like(out[:, [1, 3]]))
    assert torch.equal(out[:, [0, 2]], before[:, [0, 2]])
    none = build_block_tables(LayerPlan.from_heads([("dense", {})], GEOMS_128["prefix"], 128), "cpu")
    kept = torch.randn(1, 1, n, 8)
    copy = kept.clone()
    none.zero_skip_heads(kept)  # no skip heads: untouched
    assert torch.equal(kept, copy)


# --- precision ------------------------------------------------------------------------------------


def test_each_backend_declares_the_precisions_it_runs():
    from attnsearch.runtime.backends import HopperBackend, TorchBackend, TritonBackend

    common = dict(device="cuda", dtype=torch.bfloat16, head_dim=128, block_size=128)
    assert TritonBackend.not_supported_reasons(**common, capability=(9, 0), precision="fp8") == []
    assert any("8.9" in r for r in TritonBackend.not_supported_reasons(**common, capability=(8, 0), precision="fp8"))
    assert HopperBackend.not_supported_reasons(**common, capability=(9, 0), precision="fp8") == []
    assert HopperBackend.fp8_key_order == "wgmma" and TritonBackend.fp8_key_order == "natural"
    assert TorchBackend.not_supported_reasons(**dict(common, device="cpu"), precision="fp8") == []   # emulated
    assert TorchBackend.not_supported_reasons(**common, capability=(8, 0), precision="fp8") == []
    with pytest.raises(ValueError, match="precision: must be one of"):
        TritonBackend.not_supported_reasons(**common, capability=(9, 0), precision="int8")


def test_auto_leaves_a_call_a_backend_yields_to_the_next_and_says_why(monkeypatch):
    """As on an H100, where both kernels run FP8: "auto" takes the Hopper kernel except for FP8 at
    head_dim 64, which it declares the Triton kernel faster at; naming it still runs it there."""
    from attnsearch.runtime.backends import HopperBackend, TritonBackend, backend_for
    from attnsearch.runtime.support import call_support

    for b in (HopperBackend, TritonBackend):
        monkeypatch.setattr(b, "call_reasons", classmethod(lambda cls, *a, **kw: []))
    assert set(HopperBackend.auto_yields) == {("fp8", 64)}
    picked = {(d, p): backend_for(*(torch.zeros(1, 1, 128, d),) * 3, 128, "auto", p)
              for d in (64, 128) for p in ("native", "fp8")}
    assert picked == {(64, "native"): HopperBackend, (128, "native"): HopperBackend,
                      (64, "fp8"): TritonBackend, (128, "fp8"): HopperBackend}
    assert backend_for(*(torch.zeros(1, 1, 128, 64),) * 3, 128, "hopper", "fp8") is HopperBackend
    rows = {(r.head_dim, r.precision): r for r in call_support("cpu", head_dims=(64,), block_sizes=(128,))}
    assert rows[(64, "fp8")].backend == "triton" and rows[(64, "native")].backend == "hopper"
    assert "Triton kernel's FP8 build is 5-11% faster" in rows[(64, "fp8")].reasons["hopper"][0]
    assert rows[(64, "native")].reasons["hopper"] == []


def test_a_backend_that_cannot_run_a_heads_precision_names_why(monkeypatch):
    from attnsearch.runtime.backends import TorchBackend

    monkeypatch.setattr(TorchBackend, "precisions", ("native",))   # as a native-only backend declares
    geom = geometry("prefix", 64)
    lp = all_patterns(geom, 64)
    q, k, v = qkv(1, 6, geom.num_tokens, 64)
    mixed = LayerPlan(geom, 64, lp.num_heads, tuple({**g.to_dict(), "precision": "fp8"} if i == 0 else g
                                                    for i, g in enumerate(lp.groups)))
    with pytest.raises(ValueError, match="backend='torch' cannot run this call: precision 'fp8'"):
        sparse_attention(q, k, v, mixed, backend="torch")
    sparse_attention(q, k, v, lp, backend="torch")                  # the same layer, all native: runs


def test_torch_backend_fp8_is_the_kernel_arithmetic_on_the_quantized_operands():
    """Every head in FP8 on the torch backend: per head, masked attention over the dequantized
    operands with P rounded as the FP8 kernel rounds it (``fp8_attention_rows``, an independent
    per-row computation on the token mask); skip head zero; GQA."""
    from attnsearch.runtime.quantize import fp8_attention_rows, fp8_operands

    geom = geometry("suffix", 64)
    lp = all_patterns(geom, 64).with_precision("fp8")
    q, k, v = qkv(2, 6, geom.num_tokens, 64, kv_heads=3, seed=4)
    out = sparse_attention(q, k, v, lp, backend="torch", scale=0.2, enable_gqa=True)
    qd, kd, vd = fp8_operands(q, k, v, 64)
    mask = expand_block_mask(lp.block_masks(), geom.num_tokens, 64)        # [H, N, N]
    kv = torch.arange(6) // 2
    s = torch.einsum("bhqd,bhkd->bhqk", qd, kd[:, kv]) * 0.2
    ref = fp8_attention_rows(s.masked_fill(~mask, float("-inf")), vd[:, kv])
    assert torch.allclose(out, ref, atol=1e-5)
    assert not torch.allclose(out, sparse_attention(q, k, v, lp.with_precision("native"), backend="torch", scale=0.2,
                                                    enable_gqa=True), atol=1e-3)   # FP8 really rounds


def test_a_layer_of_native_and_fp8_heads_runs_each_head_in_its_precision():
    geom = geometry("prefix", 64)
    lp = all_patterns(geom, 64)
    fp8_heads = {0, 3}
    mixed = LayerPlan.from_heads(lp.head_specs, geom, 64,
                                 precisions=["fp8" if h in fp8_heads else "native" for h in range(lp.num_heads)])
    q, k, v = qkv(1, 6, geom.num_tokens, 64, seed=2)
    out = sparse_attention(q, k, v, mixed, backend="torch")
    all_fp8 = sparse_attention(q, k, v, lp.with_precision("fp8"), backend="torch")
    native = sparse_attention(q, k, v, lp, backend="torch")
    for h in range(lp.num_heads):
        assert torch.equal(out[:, h], (all_fp8 if h in fp8_heads else native)[:, h]), h
    tables = get_block_tables(mixed, "cpu")
    assert [(la.precision, la.heads) for la in tables.launches] == [("native", mixed.precision_heads("native")),
                                                                    ("fp8", (0, 3))]
