"""capture_attention sees every SDPA call, numbers (step, layer) right, and leaves no trace."""

from __future__ import annotations

import gc
import weakref

import pytest
import torch
import torch.nn.functional as F
from torch.nn.functional import scaled_dot_product_attention as imported_sdpa

from attnsearch.profiling.capture import CaptureError, SDPACall, capture_attention


class Attn(torch.nn.Module):
    """One attention layer; ``style`` picks how it reaches SDPA."""

    def __init__(self, dim: int, heads: int, style: str) -> None:
        super().__init__()
        self.qkv = torch.nn.Linear(dim, 3 * dim)
        self.heads, self.style = heads, style

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        if self.style == "from-import":
            o = imported_sdpa(q, k, v)
        elif self.style == "positional":
            o = F.scaled_dot_product_attention(q, k, v, None, 0.0, False, scale=0.5)
        else:
            o = torch.nn.functional.scaled_dot_product_attention(q, k, v, scale=0.25)
        return x + o.transpose(1, 2).reshape(b, n, d)


class Net(torch.nn.Module):
    def __init__(self, dim: int = 16, heads: int = 2) -> None:
        super().__init__()
        styles = ["from-import", "positional", "keyword"]
        self.layers = torch.nn.ModuleList(Attn(dim, heads, s) for s in styles)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x)
        return x


@pytest.fixture
def net():
    torch.manual_seed(0)
    return Net().eval()


def test_numbers_steps_and_layers_over_forwards(net):
    seen = []
    x = torch.randn(1, 10, 16)
    with capture_attention(net, lambda c: seen.append((c.step, c.layer))) as cap:
        for _ in range(3):
            net(x)
    assert seen == [(s, layer) for s in range(3) for layer in range(3)]
    assert cap.calls == 9 and cap.step == 2


def test_kwargs_are_normalised_to_keywords(net):
    got = []
    with capture_attention(net, lambda c: got.append(dict(c.kwargs))):
        net(torch.randn(1, 4, 16))
    assert [g["scale"] for g in got] == [None, 0.5, 0.25]
    for g in got:
        assert set(g) == {"attn_mask", "dropout_p", "is_causal", "scale", "enable_gqa"}
        assert g["attn_mask"] is None and g["dropout_p"] == 0.0 and g["is_causal"] is False


def test_tensors_are_passed_as_is(net):
    """The consumer sees the very tensors the model passed (views with their strides), and
    re-running SDPA on them with the recorded kwargs reproduces the real output."""
    x = torch.randn(1, 6, 16)
    expected = net(x)

    def consumer(call: SDPACall):
        assert call.query.shape == (1, 2, 6, 8)
        assert not call.query.is_contiguous()  # a permuted view of the qkv projection
        return F.scaled_dot_product_attention(call.query, call.key, call.value, **call.kwargs)

    with capture_attention(net, consumer):
        out = net(x)
    torch.testing.assert_close(out, expected)


def test_consumer_output_replaces_sdpa(net):
    x = torch.randn(1, 5, 16)

    def zero(call):
        return torch.zeros(*call.query.shape[:-1], call.value.shape[-1])

    with capture_attention(net, zero):
        out = net(x)
    # Every attention output is zero, so each residual layer is the identity.
    torch.testing.assert_close(out, x)


def test_none_runs_the_real_sdpa(net):
    x = torch.randn(2, 7, 16)
    expected = net(x)
    with capture_attention(net, lambda c: None):
        out = net(x)
    torch.testing.assert_close(out, expected, rtol=0, atol=0)


def test_wrong_output_shape_is_a_clear_error(net):
    with pytest.raises(CaptureError, match=r"step 0 layer 0.*expected None or a tensor of shape \(1, 2, 3, 8\)"):
        with capture_attention(net, lambda c: torch.zeros(1)):
            net(torch.randn(1, 3, 16))


def test_sdpa_inside_the_consumer_is_not_recaptured(net):
    seen = []

    def consumer(call):
        seen.append(call.layer)
        return F.scaled_dot_product_attention(call.query, call.key, call.value, **call.kwargs)

    with capture_attention(net, consumer) as cap:
        net(torch.randn(1, 4, 16))
    assert seen == [0, 1, 2] and cap.calls == 3


def test_calls_outside_the_context_are_not_seen(net):
    seen = []
    cap = capture_attention(net, lambda c: seen.append(c))
    net(torch.randn(1, 4, 16))
    with cap:
        pass
    net(torch.randn(1, 4, 16))
    assert seen == [] and not net._forward_pre_hooks and not net._forward_hooks


def test_nested_root_forward_is_one_step():
    """A root module that calls itself (e.g. a guidance wrapper) stays within one step."""

    class Recursive(torch.nn.Module):
        def forward(self, x, depth=0):
            q = x[None, None]
            x = x + F.scaled_dot_product_attention(q, q, q)[0, 0]
            return self(x, depth + 1) if depth == 0 else x

    model, seen = Recursive(), []
    with capture_attention(model, lambda c: seen.append((c.step, c.layer))):
        model(torch.randn(3, 4))
        model(torch.randn(3, 4))
    assert seen == [(0, 0), (0, 1), (1, 0), (1, 1)]


def test_explicit_steps():
    q = torch.randn(1, 1, 3, 4)
    seen = []
    with capture_attention(None, lambda c: seen.append((c.step, c.layer)), auto_step=False) as cap:
        F.scaled_dot_product_attention(q, q, q)
        cap.set_step(5)
        F.scaled_dot_product_attention(q, q, q)
        F.scaled_dot_product_attention(q, q, q)
    assert seen == [(0, 0), (5, 0), (5, 1)]
    with pytest.raises(ValueError, match="auto_step=False"):
        capture_attention(torch.nn.Linear(1, 1), lambda c: None).set_step(1)
    with pytest.raises(ValueError, match="non-negative integer"):
        cap.set_step(-1)
    with pytest.raises(TypeError, match="auto_step needs the root"):
        capture_attention(None, lambda c: None)


def test_exception_removes_hooks_and_mode(net):
    def boom(call):
        raise KeyError("consumer failed")

    with pytest.raises(KeyError, match="consumer failed"):
        with capture_attention(net, boom):
            net(torch.randn(1, 4, 16))
    assert not net._forward_pre_hooks and not net._forward_hooks
    # The mode is gone: a later SDPA call runs untouched and nothing is recorded.
    seen = []
    with capture_attention(net, lambda c: seen.append(c.layer)):
        pass
    q = torch.randn(1, 1, 3, 4)
    F.scaled_dot_product_attention(q, q, q)
    assert seen == []

    with pytest.raises(RuntimeError, match="in the model"):
        with capture_attention(net, lambda c: None):
            raise RuntimeError("error in the model")
    assert not net._forward_pre_hooks and not net._forward_hooks


def test_no_reference_to_tensors_is_retained(net):
    refs = []

    def consumer(call):
        refs.extend(weakref.ref(t) for t in (call.query, call.key, call.value))
        return None

    with capture_attention(net, consumer) as cap:
        for _ in range(3):
            net(torch.randn(1, 8, 16))
        gc.collect()
        assert len(refs) == 27 and all(r() is None for r in refs)
    assert cap.calls == 9


def test_memory_stays_flat_over_many_steps(net):
    """Live tensor count does not grow with the number of captured forwards."""

    def live_tensors() -> int:
        gc.collect()
        return sum(1 for o in gc.get_objects() if issubclass(type(o), torch.Tensor))

    x = torch.randn(1, 8, 16)
    with capture_attention(net, lambda c: None):
        net(x)
        before = live_tensors()
        for _ in range(50):
            net(x)
        after = live_tensors()
    assert after <= before
