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
