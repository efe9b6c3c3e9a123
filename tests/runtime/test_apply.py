"""apply(model, plan): every SDPA call follows the plan; what it cannot honour is an error naming it."""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F

from attnsearch import Geometry
from attnsearch.plan import LayerPlan, Plan, PlanError, ScheduleEntry
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


# --- calls at another geometry ---------------------------------------------------------------------

TARGET = Geometry(frames=8, height=9, width=24, text_tokens=5, text_position="prefix")  # N = 1733


class GridNet(Net):
    """Net over a [B, F, H, W, DIM] video with a [B, T, DIM] text prefix; it tells apply its geometry."""

    def forward(self, video: torch.Tensor, text: torch.Tensor, ctx: torch.Tensor) -> torch.Tensor:
        return super().forward(torch.cat([text, video.flatten(1, 3)], 1), ctx)

    def attnsearch_geometry(self, video: torch.Tensor, text: torch.Tensor, ctx: torch.Tensor) -> Geometry:
        return Geometry(*video.shape[1:4], text_tokens=text.shape[1])


def target_reference_plan(plan: Plan, target: Geometry) -> Plan:
    """``plan`` built directly at ``target``: the relative families with their own parameters, bands at
    the rows ``retarget.Band`` gives them there (its rule has its own brute-force test in
    tests/test_retarget.py), the stripes' key blocks by brute force over token positions
    (tests/reference.py)."""
    from reference import stripe_blocks_at

    from attnsearch.retarget import Band

    layers = {}
    for e in plan.schedule:
        for lp in e.layers or ():
            heads = []
            for pattern, params in lp.head_specs:
                if params.get("rows"):
                    params = {**params, "rows": Band(params["rows"], plan.geometry.width).rows_at(target.width,
                                                                                                plan.block_size)}
                if pattern == "vertical_stripe":
                    params = {**params, "key_blocks": stripe_blocks_at(params["key_blocks"], plan.geometry, target,
                                                                       plan.block_size)}
                heads.append((pattern, params))
            layers[lp] = LayerPlan.from_heads(heads, target, plan.block_size)
    schedule = tuple(ScheduleEntry(e.start, e.stop, None if e.layers is None else tuple(layers[lp] for lp in e.layers))
                     for e in plan.schedule)
    return Plan(target, plan.block_size, plan.num_steps, plan.num_layers, plan.num_heads, schedule)


def follow(plan: Plan):
    """Capture consumer: every sparse call by fp32-promoted masked SDPA with ``plan``'s block masks."""
    def consumer(call):
        lp = plan.layer_plan(call.step, call.layer)
        if lp.is_dense:
            return None
        return reference(call.query, call.key, call.value, lp).to(call.query.dtype)
    return consumer


@torch.no_grad()
def test_a_call_at_another_geometry_runs_the_plan_instantiated_there(net_and_inputs):
    net, _, ctx = net_and_inputs
    plan = make_plan()
    want_plan = target_reference_plan(plan, TARGET)
    x = torch.randn(2, TARGET.num_tokens, DIM)
    with capture_attention(net, follow(want_plan)):
        want = [net(x, ctx), net(x, ctx)]
    with apply(net, plan, geometry=TARGET, backend="torch") as ap:
        got = [net(x, ctx), net(x, ctx)]
    assert ap.stats["sparse"] == 2
    for g, w in zip(got, want, strict=True):
        assert ((g - w).norm() / w.norm()).item() <= 1e-5
    assert not torch.allclose(got[1], net(x, ctx), atol=1e-3)  # sparse at the target, not dense
    moved = plan.for_geometry(TARGET)
    assert torch.equal(moved.layer_plan(1, 0).block_masks(), want_plan.layer_plan(1, 0).block_masks())


@torch.no_grad()
def test_the_model_tells_each_forward_its_geometry():
    torch.manual_seed(3)
    net = GridNet().eval()
    plan = make_plan(num_steps=3)
    ctx = torch.randn(1, CTX, DIM)
    inputs = [(torch.randn(1, g.frames, g.height, g.width, DIM), torch.randn(1, g.text_tokens, DIM))
              for g in (GEOM, TARGET, TARGET)]
    want = []
    for step, ((video, text), g) in enumerate(zip(inputs, (GEOM, TARGET, TARGET))):
        ref = target_reference_plan(plan, g) if g != GEOM else plan
        with capture_attention(net, follow(ref), auto_step=False) as cap:
            cap.set_step(step)
            want.append(net(video, text, ctx))
    with apply(net, plan, backend="torch") as ap:
        got = [net(video, text, ctx) for video, text in inputs]
    assert ap.stats["calls"] == 9 and ap.stats["sparse"] == 4
    for g, w in zip(got, want, strict=True):
        assert ((g - w).norm() / w.norm()).item() <= 1e-5
    assert plan.for_geometry(TARGET) is plan.for_geometry(TARGET)


@torch.no_grad()
def test_a_geometry_that_does_not_fit_the_call_is_named(net_and_inputs):
    net, x, ctx = net_and_inputs
    with pytest.raises(PlanError, match=r"step 0, layer 0: geometry: sequence length 397 does not match the call's "
                                        r"geometry 8×9×24"):
        with apply(net, make_plan(), geometry=TARGET):
            net(x, ctx)
    with pytest.raises(PlanError, match=r"geometry: sequence length 300 does not match the plan's geometry .* "
                                        r"never guessed"):
        with apply(net, make_plan()):
            net(x[:, :300], ctx)
    grid = GridNet().eval()
    video, text = torch.randn(1, 8, 9, 24, DIM), torch.randn(1, 5, DIM)
    with pytest.raises(PlanError, match=r"geometry: apply\(geometry=4×6×16.*\) but the model's attnsearch_geometry "
                                        r"says 8×9×24"):
        with apply(grid, make_plan(), geometry=GEOM):
            grid(video, text, ctx[:1])


@torch.no_grad()
def test_a_non_portable_plan_refuses_other_geometries(net_and_inputs):
    net, _, ctx = net_and_inputs
    p = make_plan()
    plan = Plan(p.geometry, p.block_size, p.num_steps, p.num_layers, p.num_heads, p.schedule, portable=False)
    x = torch.randn(2, TARGET.num_tokens, DIM)
    with pytest.raises(PlanError, match=r"step 0, layer 0: portable: the plan is marked non-portable"):
        with apply(net, plan, geometry=TARGET):
            net(x, ctx)
