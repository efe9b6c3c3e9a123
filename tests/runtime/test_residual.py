"""Residual reuse under apply: an entry's first step runs exactly and keeps exact − planned per call;
its later steps return planned + that residual (docs/design.md, "Residual reuse")."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from attnsearch import Geometry
from attnsearch.plan import Plan, PlanError, ScheduleEntry
from attnsearch.runtime import apply
from test_runtime import all_patterns, reference

GEOM = Geometry(frames=4, height=6, width=16, text_tokens=13, text_position="prefix")  # N = 397
HEADS, D = 6, 16


class Attend(torch.nn.Module):
    """One self-attention call per forward on the given q, k, v; records nothing."""

    def forward(self, q, k, v):
        return F.scaled_dot_product_attention(q, k, v)


def residual_plan(steps: int = 4, exact: tuple[int, ...] = (0,)) -> Plan:
    lp = all_patterns(GEOM, 64)
    return Plan(GEOM, 64, steps, 1, HEADS, (ScheduleEntry(0, steps, (lp,)),)).with_residual(exact)


def inputs(seed: int, batch: int = 2):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(batch, HEADS, GEOM.num_tokens, D, generator=g, dtype=torch.float64) for _ in range(3)]


def exact(q, k, v):
    return F.scaled_dot_product_attention(q, k, v)


@torch.no_grad()
def test_unchanged_inputs_give_exact_attention_at_every_step():
    """Where a call's inputs do not change across steps, its residual is exactly what the mask
    misses, so every later step returns exact attention, which the plan alone does not."""
    plan = residual_plan()
    lp = plan.layer_plan(0, 0)
    q, k, v = inputs(0)
    want = exact(q, k, v)
    assert (reference(q, k, v, lp) - want).abs().max() > 0.1  # the mask alone is far from exact
    net = Attend()
    with apply(net, plan, backend="torch") as ap:
        outs = [net(q, k, v) for _ in range(4)]
    for out in outs:  # the dense head (5) is the backend's own exact attention: its fp32 softmax
        torch.testing.assert_close(out, want, rtol=0, atol=1e-5)
    assert ap.stats["sparse"] == 4 and len(ap.residuals) == 0  # freed on exit


class AttendGQA(torch.nn.Module):
    def forward(self, q, k, v):
        return F.scaled_dot_product_attention(q, k, v, enable_gqa=True)


@torch.no_grad()
def test_grouped_query_heads_reuse_with_their_own_key_value_heads():
    plan = residual_plan(steps=3)
    q, k, v = inputs(3)
    k, v = k[:, :3].contiguous(), v[:, :3].contiguous()  # 6 query heads over 3 key/value heads
    want = F.scaled_dot_product_attention(q, k, v, enable_gqa=True)
    net = AttendGQA()
    with apply(net, plan, backend="torch"):
        outs = [net(q, k, v) for _ in range(3)]
    for out in outs:
        torch.testing.assert_close(out, want, rtol=0, atol=1e-5)


@torch.no_grad()
def test_only_the_inexact_heads_keep_a_residual():
    plan = residual_plan(steps=2)
    lp = plan.layer_plan(0, 0)
    assert lp.inexact_heads == (0, 1, 2, 3, 4)  # head 5 is dense: exact already
    net = Attend()
    with apply(net, plan, backend="torch") as ap:
        net(*inputs(0))
        (start, residual), = ap.residuals._kept.values()
        assert start == 0 and residual.shape == (2, 5, GEOM.num_tokens, D)
        assert ap.residuals.nbytes() == residual.numel() * 8


@torch.no_grad()
def test_later_steps_add_the_residual_of_their_entrys_exact_step():
    plan = residual_plan(steps=5, exact=(0, 2))
    assert [(e.start, e.stop, e.residual) for e in plan.schedule] == [(0, 2, True), (2, 5, True)]
    lp = plan.layer_plan(0, 0)
    xs = [inputs(s) for s in range(5)]
    net = Attend()
    with apply(net, plan, backend="torch"):
        outs = [net(*x) for x in xs]
    for step, out in enumerate(outs):
        at = 0 if step < 2 else 2  # the entry's exact step
        want = exact(*xs[step]) if step == at else \
            reference(*xs[step], lp) + (exact(*xs[at]) - reference(*xs[at], lp))
        torch.testing.assert_close(out, want, rtol=0, atol=1e-5, msg=f"step {step}")  # the backend's fp32 softmax
    assert (outs[1] - exact(*xs[1])).abs().max() > 0.1  # the residual is not the inputs' own


@torch.no_grad()
def test_heads_that_opt_out_run_their_masks_alone_and_the_others_reuse():
    base = residual_plan(steps=3)
    lp = base.layer_plan(0, 0).with_reuse([False, True, False, True, True, True])
    plan = Plan(GEOM, 64, 3, 1, HEADS, (ScheduleEntry(0, 3, (lp,), residual=True),))
    assert lp.reuse_heads == (1, 3, 4)
    xs = [inputs(10 + s) for s in range(3)]
    net = Attend()
    with apply(net, plan, backend="torch") as ap:
        outs = [net(*x) for x in xs]
        (start, residual), = ap.residuals._kept.values()
        assert residual.shape == (2, 3, GEOM.num_tokens, D)       # the reusing heads' residual only
    reuse = list(lp.reuse_heads)
    for step, out in enumerate(outs):
        planned = reference(*xs[step], lp)
        if step == 0:
            want_reuse = exact(*xs[0])[:, reuse]
        else:
            want_reuse = planned[:, reuse] + (exact(*xs[0]) - reference(*xs[0], lp))[:, reuse]
        torch.testing.assert_close(out[:, reuse], want_reuse, rtol=0, atol=1e-5, msg=f"step {step}")
        # heads 0 and 2 opted out: their masks alone, at the exact step too; head 5 is dense (exact)
        torch.testing.assert_close(out[:, [0, 2, 5]], planned[:, [0, 2, 5]], rtol=0, atol=1e-5)
    assert (outs[0][:, [0, 2]] - exact(*xs[0])[:, [0, 2]]).abs().max() > 0.1


@torch.no_grad()
def test_a_layer_whose_heads_all_opt_out_keeps_no_residual():
    base = residual_plan(steps=2)
    lp = base.layer_plan(0, 0).with_reuse([False] * HEADS)
    plan = Plan(GEOM, 64, 2, 1, HEADS, (ScheduleEntry(0, 2, (lp,), residual=True),))
    xs = [inputs(20 + s) for s in range(2)]
    net = Attend()
    with apply(net, plan, backend="torch") as ap:
        outs = [net(*x) for x in xs]
        assert len(ap.residuals) == 0
    for step, out in enumerate(outs):
        torch.testing.assert_close(out, reference(*xs[step], lp), rtol=0, atol=1e-5)


@torch.no_grad()
def test_cfg_branches_called_apart_keep_their_own_residuals():
    """Two calls of a layer in one step (CFG branches run separately): each later call adds the
    residual of the call in the same position of the exact step."""
    plan = residual_plan(steps=2)
    cond, uncond = inputs(1, batch=1), inputs(2, batch=1)
    net = Attend()
    with apply(net, plan, backend="torch", auto_step=False) as ap:
        outs = []
        for step in (0, 1):
            for x in (cond, uncond):  # each branch a forward of the same step (as a pipeline runs them)
                ap.set_step(step)
                outs.append(net(*x))
    first, later = outs[:2], outs[2:]
    assert ap.forwards == [(0, None), (0, None), (1, None), (1, None)]
    for x, out0, out1 in zip((cond, uncond), first, later, strict=True):
        torch.testing.assert_close(out0, exact(*x), rtol=0, atol=1e-5)
        torch.testing.assert_close(out1, exact(*x), rtol=0, atol=1e-5)


@torch.no_grad()
@pytest.mark.parametrize("cfg_apart", [False, True])
def test_the_residuals_peak_is_what_the_plan_says_it_holds(cfg_apart):
    """``stats["residual_peak_bytes"]`` after the run equals ``Plan.residual_bytes`` for the call's
    shape: one residual per layer and call of a step, replaced (not added to) at each exact step."""
    plan = residual_plan(steps=5, exact=(0, 2))
    net = Attend()
    with apply(net, plan, backend="torch", auto_step=False) as ap:
        for step in range(5):
            for branch in ((1, 2) if cfg_apart else (0,)):
                ap.set_step(step)
                net(*inputs(10 * step + branch, batch=1 if cfg_apart else 2))
    assert len(ap.residuals) == 0
    want = plan.residual_bytes(head_dim=D, batch=1 if cfg_apart else 2, element_size=8,
                               calls_per_layer=2 if cfg_apart else 1)
    assert want == 5 * 2 * GEOM.num_tokens * D * 8  # 5 inexact heads, batch 2 or two calls of batch 1
    assert ap.stats["residual_peak_bytes"] == want


@torch.no_grad()
def test_residuals_kept_in_fp8_are_the_residual_rounded_to_e4m3_per_row():
    """residual_precision="fp8": a later step adds R rounded to e4m3 with the scale amax / 448 of its
    row, computed here by hand; it holds a byte per value and a float32 scale per row."""
    plan = residual_plan(steps=2)
    lp = plan.layer_plan(0, 0)
    xs = [inputs(5), inputs(6)]
    net = Attend()
    with apply(net, plan, backend="torch", residual_precision="fp8") as ap:
        outs = [net(*x) for x in xs]
    heads = list(lp.inexact_heads)
    r = (exact(*xs[0]) - reference(*xs[0], lp))[:, heads]
    scale = r.abs().amax(-1, keepdim=True) / 448.0
    rounded = (r / scale).to(torch.float8_e4m3fn).double() * scale
    want = reference(*xs[1], lp)
    want[:, heads] += rounded
    torch.testing.assert_close(outs[1], want, rtol=0, atol=1e-5)  # the backend's fp32 softmax
    native = reference(*xs[1], lp)
    native[:, heads] += r
    assert 0 < (outs[1] - native).abs().max() <= (r.abs().amax(-1, keepdim=True) / 16).max()  # e4m3: 3 mantissa bits
    assert ap.stats["residual_peak_bytes"] == plan.residual_bytes(head_dim=D, batch=2, precision="fp8")


def test_an_unknown_residual_precision_is_refused():
    with pytest.raises(ValueError, match=r"residual_precision: must be one of native, fp8, got 'int8'"):
        apply(Attend(), residual_plan(), residual_precision="int8")


class _OutOfMemoryOnSub(torch.Tensor):
    """A tensor whose subtraction runs out of device memory (as keeping a residual can)."""

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        if func in (torch.Tensor.sub, torch.Tensor.__sub__, torch.sub):
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 774.00 MiB")
        return super().__torch_function__(func, types, args, kwargs or {})


def test_running_out_of_memory_keeping_a_residual_is_a_plan_error():
    from attnsearch.runtime.residual import ResidualStore

    plan = residual_plan(steps=3, exact=(0,))
    entry = plan.entry_at(0)
    store = ResidualStore()
    out = torch.zeros(1, HEADS, 8, D)
    store.run(0, 0, None, entry, tuple(range(HEADS)), lambda: out.clone(), lambda: torch.ones(1, HEADS, 8, D))
    assert store.nbytes() == HEADS * 8 * D * 4
    with pytest.raises(PlanError, match=r"residual: out of device memory at step 0 keeping the residual of layer 1, "
                                        r"call 0: 1 residuals hold 0.00 GiB already") as err:
        store.run(0, 1, None, entry, tuple(range(HEADS)), lambda: out.clone().as_subclass(_OutOfMemoryOnSub),
                  lambda: torch.ones(1, HEADS, 8, D).as_subclass(_OutOfMemoryOnSub))
    assert isinstance(err.value.__cause__, torch.OutOfMemoryError)
    assert store.nbytes() == HEADS * 8 * D * 4 and len(store) == 1  # what was kept stays kept


@torch.no_grad()
def test_a_step_without_its_exact_step_is_an_error():
    plan = residual_plan(steps=4)
    net = Attend()
    with pytest.raises(PlanError, match=r"step 2, layer 0: residual: step 2 of the residual entry \[0, 4\) has no "
                                        r"residual from its exact step 0"):
        with apply(net, plan, backend="torch", auto_step=False) as ap:
            ap.set_step(2)
            net(*inputs(0))


@torch.no_grad()
def test_a_call_whose_shape_changed_within_the_entry_is_an_error():
    plan = residual_plan(steps=2)
    net = Attend()
    with pytest.raises(PlanError, match=r"residual: step 1 .* does not match the residual kept at step 0"):
        with apply(net, plan, backend="torch"):
            net(*inputs(0, batch=2))
            net(*inputs(0, batch=1))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="GPU correctness: needs CUDA")
@torch.no_grad()
def test_residual_reuse_on_the_gpu_kernels_in_bf16():
    """"auto" (the Hopper kernel where it runs, else Triton) in bf16: a later step is planned(s) +
    (exact(0) − planned(0)) as the fp32 references compute it, and with unchanged inputs exact."""
    geom = Geometry(6, 16, 32, 0)  # N = 3072
    lp = all_patterns(geom, 128)
    plan = Plan(geom, 128, 3, 1, HEADS, (ScheduleEntry(0, 3, (lp,)),)).with_residual([0])
    g = torch.Generator(device="cuda").manual_seed(0)
    xs = [[torch.randn(2, HEADS, geom.num_tokens, 64, generator=g, device="cuda", dtype=torch.bfloat16)
           for _ in range(3)] for _ in range(2)]
    net = Attend()
    with apply(net, plan, backend="auto"):
        outs = [net(*xs[0]), net(*xs[1]), net(*xs[1])]
    f64 = [[t.double().cpu() for t in x] for x in xs]  # the fp64 references run on the CPU
    want1 = reference(*f64[1], lp) + (exact(*f64[0]) - reference(*f64[0], lp))
    for got, want in ((outs[0], exact(*f64[0])), (outs[1], want1), (outs[2], want1)):
        assert ((got.double().cpu() - want).norm() / want.norm()).item() < 0.02  # bf16 storage of R and the output
    with apply(net, plan, backend="auto"):
        same = [net(*xs[0]) for _ in range(3)]
    want0 = exact(*f64[0])
    assert all(((o.double().cpu() - want0).norm() / want0.norm()).item() < 0.02 for o in same)
    planned = reference(*f64[0], lp)
    assert ((planned - want0).norm() / want0.norm()).item() > 0.2  # what the masks alone would give
