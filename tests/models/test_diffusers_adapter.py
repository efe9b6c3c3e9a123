"""Tiny random instances of the real diffusers video transformers (Wan2.1, CogVideoX 1.0/1.5,
HunyuanVideo) under capture and apply: the self-attention calls, their geometry, and plans.

The geometry is checked from the outside: perturbing one latent pixel must change exactly one
query row of layer 0 (at the token index the geometry gives that patch), perturbing the text must
change exactly the geometry's text rows.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

pytest.importorskip("diffusers", reason="diffusers is an optional extra (pip install 'attnsearch[diffusers]')")

from attnsearch.models import load_model  # noqa: E402
from attnsearch.models.diffusers import family_of, instrument  # noqa: E402
from attnsearch.patterns import expand_block_mask  # noqa: E402
from attnsearch.plan import LayerPlan, Plan, ScheduleEntry  # noqa: E402
from attnsearch.profiling.capture import capture_attention  # noqa: E402
from attnsearch.runtime import apply  # noqa: E402

#: 17 frames, 96 × 160 px → latent 5 × 12 × 20 → 5 × 6 × 10 = 300 video tokens (5 blocks of 64).
SIZE = {"num_frames": 17, "height": 96, "width": 160}
#: preset, text tokens, expected (frames, height, width, text_tokens, text_position), layers per forward
CASES = {
    "wan2.1-1.3b": (7, (5, 6, 10, 0, "prefix"), 2),
    "cogvideox-5b": (9, (5, 6, 10, 9, "prefix"), 2),
    "cogvideox1.5-5b": (9, (5, 6, 10, 9, "prefix"), 2),     # 33 frames: latent 9, padded to 10, p_t = 2
    "hunyuanvideo": (9, (5, 6, 10, 9, "suffix"), 3),        # 1 dual-stream + 2 single-stream blocks
}
BLOCK = 64

_SPECS: dict[str, object] = {}


def spec_of(preset: str):
    if preset not in _SPECS:
        text, _, _ = CASES[preset]
        size = dict(SIZE, num_frames=33) if preset == "cogvideox1.5-5b" else SIZE
        _SPECS[preset] = load_model(f"diffusers-random:{preset}", tiny=True, text_tokens=text, steps=2, **size)
    return _SPECS[preset]


def output(out):
    return out[0] if isinstance(out, (tuple, list)) else out.sample


def layer0_queries(spec, inputs) -> torch.Tensor:
    got = {}

    def grab(call):
        if call.layer == 0:
            got["q"] = call.query.detach().clone()

    with torch.no_grad(), capture_attention(spec.model, grab):
        spec.model(**inputs)
    return got["q"]


@pytest.mark.parametrize("preset", list(CASES))
def test_capture_sees_every_self_attention_call_with_its_geometry(preset):
    spec = spec_of(preset)
    text, (f, h, w, t, pos), layers = CASES[preset]
    g = spec.geometry
    assert (g.frames, g.height, g.width, g.text_tokens, g.text_position) == (f, h, w, t, pos)
    assert instrument(spec.model).num_layers == layers

    seen = []
    with capture_attention(spec.model, lambda c: seen.append(c)) as cap:
        spec.run()
    assert [(c.step, c.layer) for c in seen] == [(s, layer) for s in range(2) for layer in range(layers)]
    heads = spec.model.config.num_attention_heads
    for c in seen:
        assert c.query.shape == c.key.shape == (1, heads, g.num_tokens, 16)
        assert c.kwargs["attn_mask"] is None and not c.kwargs["is_causal"]
    del seen
    # Calls that are not self-attention were passed through: Wan's cross-attention (one per block),
    # HunyuanVideo's token refiner (one per refiner block); CogVideoX has none.
    assert cap.rejected == {"wan": layers, "cogvideox": 0, "hunyuanvideo": 1}[family_of(spec.model).name] * 2


@pytest.mark.parametrize("preset", list(CASES))
def test_token_layout_matches_the_geometry(preset):
    spec = spec_of(preset)
    g = spec.geometry
    fam = family_of(spec.model)
    base = dict(spec.inputs[0])
    q0 = layer0_queries(spec, base)

    # One latent pixel → one patch → one query row, at video_start + f·S + y·W + x.
    p_t, p_h, p_w = fam.patch(spec.model.config)
    lf, ly, lx = 3, 7, 13                              # latent frame, row, column
    lat = base["hidden_states"].clone()
    if fam.latent_layout == "CFHW":
        lat[:, 0, lf, ly, lx] += 1.0
    else:
        lat[:, lf, 0, ly, lx] += 1.0
    q1 = layer0_queries(spec, dict(base, hidden_states=lat))
    changed = (q1 - q0).abs().amax(dim=(0, 1, 3)).nonzero().flatten().tolist()
    token = g.video_start + (lf // p_t) * g.frame_size + (ly // p_h) * g.width + (lx // p_w)
    assert changed == [token]

    # The text → exactly the text rows (Wan: none, its text is cross-attended).
    q2 = layer0_queries(spec, dict(base, encoder_hidden_states=base["encoder_hidden_states"] + 1.0))
    changed = (q2 - q0).abs().amax(dim=(0, 1, 3)).nonzero().flatten().tolist()
    text_start = 0 if g.text_position == "prefix" else g.video_tokens
    assert changed == list(range(text_start, text_start + g.text_tokens))


def test_wan_cross_attention_is_a_separate_call_with_the_text_as_keys():
    spec = spec_of("wan2.1-1.3b")
    shapes = []
    with torch.no_grad(), capture_attention(spec.model, lambda c: shapes.append(tuple(c.key.shape)),
                                            accept=lambda c: True):   # an explicit accept overrides the model's
        spec.model(**spec.inputs[0])
    n = spec.geometry.num_tokens
    assert shapes == [(1, 4, n, 16), (1, 4, 7, 16)] * 2   # self, cross, self, cross


def _plan(spec, entries) -> Plan:
    g, model = spec.geometry, spec.model
    return Plan(g, BLOCK, spec.num_steps, instrument(model).num_layers, model.config.num_attention_heads, entries)


@pytest.mark.parametrize("preset", list(CASES))
def test_dense_plans_reproduce_the_dense_output(preset):
    spec = spec_of(preset)
    g, heads, layers = spec.geometry, spec.model.config.num_attention_heads, instrument(spec.model).num_layers
    with torch.no_grad():
        want = [output(spec.model(**kw)) for kw in spec.inputs]

    with torch.no_grad(), apply(spec.model, _plan(spec, (ScheduleEntry(0, 2, None),)), backend="torch") as ap:
        got = [output(spec.model(**kw)) for kw in spec.inputs]
    assert ap.stats["dense"] == 2 * layers and ap.stats["sparse"] == 0
    for a, b in zip(got, want):
        assert ((a - b).norm() / b.norm()).item() <= 1e-6

    # The same attention through the sparse runtime: every head keeps every key block.
    nb = g.num_blocks(BLOCK)
    full = LayerPlan.single("vertical_stripe", {"key_blocks": list(range(nb))}, g, heads, BLOCK)
    assert full.density == 1.0
    plan = _plan(spec, (ScheduleEntry(0, 2, (full,) * layers),))
    with torch.no_grad(), apply(spec.model, plan, backend="torch") as ap:
        got = [output(spec.model(**kw)) for kw in spec.inputs]
    assert ap.stats["sparse"] == 2 * layers
    for a, b in zip(got, want):
        assert ((a - b).norm() / b.norm()).item() <= 1e-3


@pytest.mark.parametrize("preset", list(CASES))
def test_a_sparse_plan_changes_exactly_the_layers_and_heads_it_names(preset):
    spec = spec_of(preset)
    g, heads, layers = spec.geometry, spec.model.config.num_attention_heads, instrument(spec.model).num_layers
    dense = LayerPlan.dense(g, heads, BLOCK)
    named_layer = 1
    sparse = LayerPlan.from_heads([("dense", {}), ("diagonal", {"rows": 1.0}), ("dense", {}),
                                   ("energy_decay", {"decay": 0.25})], g, BLOCK)
    assert sparse.head_densities()[[1, 3]].max() < 1.0
    plan = _plan(spec, (ScheduleEntry(0, 1, None),
                        ScheduleEntry(1, 2, tuple(sparse if i == named_layer else dense for i in range(layers)))))

    records = {}

    def record(call):  # sits inside apply: its SDPA call is the one apply runs by the plan
        out = F.scaled_dot_product_attention(call.query, call.key, call.value, **call.kwargs)
        records[(call.step, call.layer)] = (call.query.clone(), call.key.clone(), call.value.clone(), out.clone())
        return out

    with torch.no_grad(), apply(spec.model, plan, backend="torch") as ap, capture_attention(spec.model, record):
        spec.run()
    assert ap.stats["sparse"] == 1 and ap.stats["dense"] == 2 * layers - 1
    assert sorted(records) == [(s, layer) for s in range(2) for layer in range(layers)]

    masks = expand_block_mask(sparse.block_masks(), g.num_tokens, BLOCK)  # [H, N, N]
    for (step, layer), (q, k, v, out) in records.items():
        dense_out = F.scaled_dot_product_attention(q, k, v)
        for h in range(heads):
            named = (step, layer, h) in {(1, named_layer, 1), (1, named_layer, 3)}
            err = ((out[:, h] - dense_out[:, h]).norm() / dense_out[:, h].norm()).item()
            if not named:
                assert err <= 1e-6, (step, layer, h)
                continue
            assert err > 1e-2, (step, layer, h)              # the plan really changed this head
            ref = F.scaled_dot_product_attention(q[:, h:h + 1].double(), k[:, h:h + 1].double(),
                                                 v[:, h:h + 1].double(), attn_mask=masks[h])
            assert ((out[:, h:h + 1] - ref).norm() / ref.norm()).item() <= 1e-5, (step, layer, h)


@pytest.mark.parametrize("preset", ["wan2.1-1.3b", "cogvideox-5b"])
def test_a_plan_runs_at_the_size_the_transformer_is_called_with(preset):
    """The instrumented transformer tells apply each forward's geometry, so a plan searched at one
    video size runs, retargeted, at another: exactly as when that geometry is given explicitly."""
    from attnsearch.models import split_input

    spec = spec_of(preset)
    text, _, _ = CASES[preset]
    other = load_model(f"diffusers-random:{preset}", tiny=True, text_tokens=text, steps=2,
                       **dict(SIZE, num_frames=33))
    assert other.geometry.frames != spec.geometry.frames
    g, heads, layers = spec.geometry, spec.model.config.num_attention_heads, instrument(spec.model).num_layers
    sparse = LayerPlan.from_heads([("diagonal", {"rows": 1.0}), ("energy_decay", {"decay": 0.25})] * (heads // 2),
                                  g, BLOCK)
    plan = _plan(spec, (ScheduleEntry(0, 2, tuple(sparse for _ in range(layers))),))

    def run(**kw):
        outs = []
        with torch.no_grad(), apply(spec.model, plan, backend="torch", **kw):
            for entry in other.inputs:
                args, kwargs = split_input(entry)
                outs.append(output(spec.model(*args, **kwargs)))
        return torch.cat([o.flatten() for o in outs])

    hooked, explicit = run(), run(geometry=other.geometry)
    with torch.no_grad():
        dense = torch.cat([output(spec.model(*split_input(e)[0], **split_input(e)[1])).flatten() for e in other.inputs])
    assert torch.equal(hooked, explicit)
    assert (hooked - dense).norm() / dense.norm() > 1e-3
