"""apply(model, plan): every SDPA call follows the plan; what it cannot honour is an error naming it."""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F

from attnsearch import Geometry
from attnsearch.plan import Plan, PlanError, ScheduleEntry
from attnsearch.profiling.capture import capture_attention
from attnsearch.runtime import apply
from test_runtime import all_patterns, reference

GEOM = Geometry(frames=4, height=6, width=16, text_tokens=13, text_position="prefix")  # N = 397
HEADS, DIM, CTX = 6, 6 * 16, 7


class Attention(torch.nn.Module):
    """diffusers-style: projections, [B, N, H, D].transpose(1, 2) views into SDPA."""

    def __init__(self, cross: bool = False, masked: bool = False) -> None:
        super().__init__()
        self.q, self.k, self.v = (torch.nn.Linear(DIM, DIM) for _ in range(3))
        self.cross, self.masked = cross, masked

    def forward(self, x: torch.Tensor, ctx: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        src = ctx if self.cross else x
        split = lambda t: t.view(b, t.shape[1], HEADS, DIM // HEADS).transpose(1, 2)  # noqa: E731
        q, k, v = split(self.q(x)), split(self.k(src)), split(self.v(src))
        mask = torch.ones(n, src.shape[1], dtype=torch.bool) if self.masked else None
        o = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return x + o.transpose(1, 2).reshape(b, n, DIM)


class Net(torch.nn.Module):
    """Layer 0 self, layer 1 cross (to a 7-token context), layer 2 self."""

    def __init__(self, masked_layer: int | None = None) -> None:
        super().__init__()
        self.blocks = torch.nn.ModuleList(
            [Attention(), Attention(cross=True), Attention(masked=masked_layer == 2)])

    def forward(self, x: torch.Tensor, ctx: torch.Tensor) -> torch.Tensor:
        for blk in self.blocks:
            x = blk(x, ctx)
        return x


def make_plan(num_steps: int = 2, sparse_cross: bool = False) -> Plan:
    sparse = all_patterns(GEOM, 64)
    dense = Plan.dense(GEOM, 1, 1, HEADS, 64).layer_plan(0, 0)
    layers = (sparse, sparse if sparse_cross else dense, sparse)
    schedule = (ScheduleEntry(0, 1, None), ScheduleEntry(1, num_steps, layers))
    return Plan(GEOM, 64, num_steps, 3, HEADS, schedule)


@pytest.fixture
def net_and_inputs():
    torch.manual_seed(0)
    net = Net().eval()
    x = torch.randn(2, GEOM.num_tokens, DIM)
    ctx = torch.randn(2, CTX, DIM)
    return net, x, ctx


@torch.no_grad()
def test_every_call_follows_the_plan(net_and_inputs):
    net, x, ctx = net_and_inputs
    plan = make_plan()

    def expected(call):  # the plan's semantics, straight from the float64 reference
        lp = plan.layer_plan(call.step, call.layer)
        if all(g.pattern == "dense" for g in lp.groups):
            return None
        return reference(call.query, call.key, call.value, lp).to(call.query.dtype)

    with capture_attention(net, expected):
        want = [net(x, ctx), net(x, ctx)]
    with apply(net, plan) as ap:
        got = [net(x, ctx), net(x, ctx)]
    assert ap.stats["calls"] == 6 and ap.stats["sparse"] == 2 and ap.stats["dense"] == 4
    assert torch.equal(got[0], net(x, ctx))  # step 0: all dense → the real SDPA, bit for bit
    for g, w in zip(got, want, strict=True):
        assert ((g - w).norm() / w.norm()).item() <= 1e-5
    assert not torch.allclose(got[1], net(x, ctx), atol=1e-3)  # the sparse step really differs


@torch.no_grad()
def test_uncovered_step_is_an_error_or_a_reported_fallback(net_and_inputs):
    net, x, ctx = net_and_inputs
    plan = make_plan(num_steps=2)
    with pytest.raises(PlanError, match=r"step 2, layer 0: step: 2 is outside the plan's steps \[0, 2\)"):
        with apply(net, plan):
            for _ in range(3):
                net(x, ctx)
    with pytest.warns(RuntimeWarning, match=r"3 of 9 attention calls ran dense SDPA .*3× step: 2 is outside"):
        with apply(net, plan, allow_dense_fallback=True) as ap:
            outs = [net(x, ctx) for _ in range(3)]
    assert torch.equal(outs[2], net(x, ctx)) and sum(ap.stats["fallbacks"].values()) == 3


@torch.no_grad()
def test_geometry_mismatch_names_the_field(net_and_inputs):
    net, x, ctx = net_and_inputs
    with pytest.raises(PlanError, match=r"step 0, layer 0: geometry: sequence length 300 does not match"):
        with apply(net, make_plan()):
            net(x[:, :300], ctx)


@torch.no_grad()
def test_cross_attention_on_a_sparse_layer_is_refused(net_and_inputs):
    net, x, ctx = net_and_inputs
    with pytest.raises(PlanError, match=r"step 1, layer 1: key: \(2, 6, 7, 16\) .* needs self-attention"):
        with apply(net, make_plan(sparse_cross=True)):
            net(x, ctx)
            net(x, ctx)


@torch.no_grad()
def test_attn_mask_is_refused_unless_fallback_allowed():
    torch.manual_seed(1)
    net = Net(masked_layer=2).eval()
    x, ctx = torch.randn(1, GEOM.num_tokens, DIM), torch.randn(1, CTX, DIM)
    with pytest.raises(PlanError, match="step 1, layer 2: attn_mask: "):
        with apply(net, make_plan()):
            net(x, ctx)
            net(x, ctx)
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        with apply(net, make_plan(), allow_dense_fallback=True) as ap:
            net(x, ctx)
            net(x, ctx)
    assert ap.stats["sparse"] == 1 and sum(ap.stats["fallbacks"].values()) == 1
    assert any("1 of 6 attention calls ran dense" in str(w.message) for w in rec)


def test_apply_rejects_a_non_plan(net_and_inputs):
    with pytest.raises(TypeError, match="plan: expected a Plan"):
        apply(net_and_inputs[0], {"format": "attnsearch-plan"})
