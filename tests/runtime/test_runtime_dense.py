"""Dense layers under ``apply``: exact SDPA, asking for cuDNN first on Hopper only, never enabling
a backend the caller disabled."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from attnsearch.runtime.dense import dense_attention, enabled_backends, sdpa_preference

ALL = dict.fromkeys((SDPBackend.CUDNN_ATTENTION, SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION,
                     SDPBackend.MATH), True)


def test_hopper_puts_cudnn_first_and_keeps_the_rest_in_torch_order():
    assert sdpa_preference((9, 0), ALL) == [SDPBackend.CUDNN_ATTENTION, SDPBackend.FLASH_ATTENTION,
                                            SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]


def test_other_devices_and_a_disabled_cudnn_leave_sdpa_alone():
    assert sdpa_preference(None, ALL) is None            # CPU
    assert sdpa_preference((8, 0), ALL) is None          # Ampere: FlashAttention is the faster one there
    assert sdpa_preference((10, 0), ALL) is None         # Blackwell
    assert sdpa_preference((9, 0), {**ALL, SDPBackend.CUDNN_ATTENTION: False}) is None


def test_backends_the_caller_disabled_stay_disabled():
    only = {**dict.fromkeys(ALL, False), SDPBackend.CUDNN_ATTENTION: True, SDPBackend.MATH: True}
    assert sdpa_preference((9, 0), only) == [SDPBackend.CUDNN_ATTENTION, SDPBackend.MATH]


def test_enabled_backends_follow_the_callers_context():
    with sdpa_kernel([SDPBackend.MATH]):
        flags = enabled_backends()
    assert flags[SDPBackend.MATH] and not flags[SDPBackend.CUDNN_ATTENTION] and not flags[SDPBackend.FLASH_ATTENTION]


def test_dense_attention_is_sdpa_with_every_keyword():
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 4, 37, 16, generator=g) for _ in range(3))
    k2, v2 = k[:, :2], v[:, :2]
    for kw in ({}, {"scale": 0.3}, {"is_causal": True}, {"enable_gqa": True}):
        kk, vv = (k2, v2) if kw.get("enable_gqa") else (k, v)
        torch.testing.assert_close(dense_attention(q, kk, vv, **kw), F.scaled_dot_product_attention(q, kk, vv, **kw),
                                   rtol=0, atol=0)


def test_dense_kernel_reasons_name_what_keeps_a_dense_layer_on_sdpa():
    """An all-dense layer runs the Hopper kernel only for a plain self-attention call it supports;
    each obstacle is named (on this CPU machine the kernel's own reason remains for a plain call)."""
    from attnsearch import Geometry
    from attnsearch.plan import LayerPlan
    from attnsearch.runtime.backends import dense_kernel_reasons

    geom = Geometry(2, 8, 16)
    lp = LayerPlan.dense(geom, 4, 128)
    q = torch.randn(1, 4, geom.num_tokens, 64, dtype=torch.bfloat16)
    plain = dense_kernel_reasons(q, q, q, lp, {})
    assert plain and "CUDA GPU" in plain[0]
    cases = {"the call passes an attn_mask": ({"attn_mask": torch.ones(1, dtype=torch.bool)}, "auto"),
             "the call is causal": ({"is_causal": True}, "auto"), "dropout_p 0.1": ({"dropout_p": 0.1}, "auto"),
             "backend 'triton' was asked for": ({}, "triton")}
    for reason, (kw, backend) in cases.items():
        assert any(reason in r for r in dense_kernel_reasons(q, q, q, lp, kw, backend))
    cross = q[:, :, :77]
    assert any("cross-attention" in r for r in dense_kernel_reasons(q, cross, cross, lp, {}))
    gqa = q[:, :2]
    assert any("2 key heads for 4" in r for r in dense_kernel_reasons(q, gqa, gqa, lp, {}))
    assert not any("key heads" in r for r in dense_kernel_reasons(q, gqa, gqa, lp, {"enable_gqa": True}))


def test_backends_declare_what_they_honour():
    """The SDPA backend honours every keyword and shape; the block-sparse ones name what they cannot."""
    from attnsearch import Geometry
    from attnsearch.plan import LayerPlan
    from attnsearch.runtime.backends import BACKENDS, SdpaBackend

    q = torch.randn(1, 4, 37, 16)
    kw = {"attn_mask": torch.ones(37, 37, dtype=torch.bool), "is_causal": False, "dropout_p": 0.0}
    assert SdpaBackend.keyword_reasons(q, q[:, :, :5], kw) == []
    torch.testing.assert_close(SdpaBackend.run_call(q, q, q, kw), F.scaled_dot_product_attention(q, q, q, **kw))
    lp = LayerPlan.dense(Geometry(1, 1, 37), 4, 64)
    torch.testing.assert_close(SdpaBackend.forward(q, q, q, lp, 0.25, None),
                               F.scaled_dot_product_attention(q, q, q, scale=0.25))
    for backend in BACKENDS:
        reasons = backend.keyword_reasons(q, q[:, :, :5], kw)
        assert [r.split(":")[0] for r in reasons] == ["attn_mask", "key"], backend.name
