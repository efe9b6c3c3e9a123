"""capture_attention(accept=…) and the model's ``attnsearch_accept``: rejected calls run the real
SDPA untouched and take no layer number; apply and the profiler inherit the model's filter."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from attnsearch import Geometry
from attnsearch.plan import LayerPlan, Plan, ScheduleEntry
from attnsearch.profiling.capture import capture_attention
from attnsearch.runtime import apply

GEOM = Geometry(frames=2, height=4, width=16)  # N = 128
HEADS, DIM, CTX = 2, 32, 5


class Block(torch.nn.Module):
    """Self-attention then cross-attention to a 5-token context (Wan's layout)."""

    def __init__(self) -> None:
        super().__init__()
        self.self_qkv = torch.nn.Linear(DIM, 3 * DIM)
        self.cross_q, self.cross_kv = torch.nn.Linear(DIM, DIM), torch.nn.Linear(DIM, 2 * DIM)

    def forward(self, x, ctx):
        b, n, _ = x.shape
        split = lambda t: t.view(b, t.shape[1], HEADS, DIM // HEADS).transpose(1, 2)  # noqa: E731
        q, k, v = (split(t) for t in self.self_qkv(x).chunk(3, -1))
        x = x + F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, n, DIM)
        k, v = (split(t) for t in self.cross_kv(ctx).chunk(2, -1))
        o = F.scaled_dot_product_attention(split(self.cross_q(x)), k, v)
        return x + o.transpose(1, 2).reshape(b, n, DIM)


class Net(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.blocks = torch.nn.ModuleList([Block(), Block()])

    def forward(self, x, ctx):
        for blk in self.blocks:
            x = blk(x, ctx)
        return x


def is_self(call) -> bool:
    return call.key.shape[2] == call.query.shape[2]


@pytest.fixture
def setup():
    torch.manual_seed(0)
    return Net().eval(), torch.randn(1, GEOM.num_tokens, DIM), torch.randn(1, CTX, DIM)


@torch.no_grad()
def test_rejected_calls_run_untouched_and_are_not_numbered(setup):
    net, x, ctx = setup
    want = net(x, ctx)
    offered, seen = [], []

    def accept(call):
        offered.append((call.step, call.layer, call.key.shape[2]))
        return is_self(call)

    with capture_attention(net, lambda c: seen.append((c.step, c.layer, c.key.shape[2])), accept=accept) as cap:
        got = [net(x, ctx), net(x, ctx)]
    n = GEOM.num_tokens
    assert seen == [(s, layer, n) for s in range(2) for layer in range(2)]
    # accept sees the layer number the call would take: a rejected call does not advance it.
    assert offered == [(s, layer, k) for s in range(2) for layer, k in ((0, n), (1, CTX), (1, n), (2, CTX))]
    assert cap.calls == 4 and cap.rejected == 4
    assert all(torch.equal(g, want) for g in got)

    # A consumer that zeroes every output only reaches the accepted (self-attention) calls.
    def zero(call):
        return torch.zeros_like(call.query)

    with capture_attention(net, zero, accept=is_self):
        partly = net(x, ctx)
    with capture_attention(net, zero):
        fully = net(x, ctx)
    assert not torch.equal(partly, fully)


@torch.no_grad()
def test_model_attribute_is_the_default_and_an_explicit_accept_wins(setup):
    net, x, ctx = setup
    net.attnsearch_accept = is_self
    seen = []
    with capture_attention(net, lambda c: seen.append(c.layer)) as cap:
        net(x, ctx)
    assert seen == [0, 1] and cap.rejected == 2
    seen.clear()
    with capture_attention(net, lambda c: seen.append(c.layer), accept=lambda c: True):
        net(x, ctx)
    assert seen == [0, 1, 2, 3]
    with pytest.raises(TypeError, match="accept must be callable"):
        capture_attention(net, lambda c: None, accept=3)


@torch.no_grad()
def test_apply_follows_the_models_filter(setup):
    net, x, ctx = setup
    lp = LayerPlan.single("diagonal", {"rows": 1.0}, GEOM, HEADS, 64)
    plan = Plan(GEOM, 64, 1, 2, HEADS, (ScheduleEntry(0, 1, (lp, lp)),))
    with pytest.raises(Exception, match="layer 1: key"):        # without a filter: cross-attention is layer 1
        with apply(net, plan, backend="torch"):
            net(x, ctx)
    net.attnsearch_accept = is_self
    with apply(net, plan, backend="torch") as ap:
        net(x, ctx)
    assert ap.stats == {"calls": 2, "sparse": 2, "dense": 0, "fallbacks": {}, "residual_peak_bytes": 0}
