"""Dense layers of a plan: on Hopper the block-sparse kernel with every key block kept, else exact
SDPA (cuDNN's kernel first on Hopper).

An all-dense layer runs the Hopper kernel where it can (``dense_kernel_reasons`` empty): with every
key block kept it is exact attention (the same error against fp32 as cuDNN's), and faster than
cuDNN's on an H100 80GB HBM3 at both head dims: under ``apply``, 704 against 596 TFLOP/s at 12 ×
32,760 and head_dim 128, 481 against 437 at 24 × 32,760 and 64, 474 against 431 for CogVideoX-5B's
layer; sustained, 1.12-1.17× (benchmarks/dense_layers_gpu.py, reports/kernel/dense_layers/). Calls it
cannot honour (a mask, causality, dropout, cross-attention, another GPU, block size 64, a backend
named other than "hopper") run SDPA as below.

PyTorch's SDPA tries FlashAttention before cuDNN. On Hopper (sm_90) cuDNN's kernel is the faster
one: on an H100 80GB HBM3 with torch 2.11, SDPA's own choice took 0–12% longer than cuDNN forced
(14 dense shapes, N 512–32,760, head_dim 64/128: ``sdpa_default_ms`` beside ``ms`` in
reports/costmodel/points_h100.json; others report 1.7–2.3× in training shapes,
huggingface/transformers#48163), and cuDNN is what ``attnsearch calibrate`` measures as the dense
baseline. So an all-dense layer ``apply`` runs through SDPA asks for cuDNN first there, keeping every
other backend the caller has enabled, in PyTorch's order, as fallbacks for calls cuDNN does not
support (and not enabling any the caller disabled). Elsewhere SDPA chooses as usual.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from ..plan import LayerPlan
from .dispatch import get_backend

#: PyTorch's own priority among the fused backends, math last.
TORCH_ORDER = (SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.CUDNN_ATTENTION,
               SDPBackend.MATH)


def sdpa_preference(capability: tuple[int, int] | None,
                    enabled: Mapping[SDPBackend, bool]) -> list[SDPBackend] | None:
    """The backend priority for a dense layer on a device of ``capability`` (None: not CUDA), given
    which backends are enabled; None: leave SDPA's own choice alone."""
    if capability is None or capability[0] != 9 or not enabled.get(SDPBackend.CUDNN_ATTENTION, False):
        return None
    order = (SDPBackend.CUDNN_ATTENTION,) + tuple(b for b in TORCH_ORDER if b != SDPBackend.CUDNN_ATTENTION)
    return [b for b in order if enabled.get(b, False)]


def enabled_backends() -> dict[SDPBackend, bool]:
    """Which SDPA backends the caller's context allows right now."""
    cuda = torch.backends.cuda
    return {SDPBackend.CUDNN_ATTENTION: cuda.cudnn_sdp_enabled(), SDPBackend.FLASH_ATTENTION: cuda.flash_sdp_enabled(),
            SDPBackend.EFFICIENT_ATTENTION: cuda.mem_efficient_sdp_enabled(), SDPBackend.MATH: cuda.math_sdp_enabled()}


def dense_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, **kwargs) -> torch.Tensor:
    """``F.scaled_dot_product_attention(q, k, v, **kwargs)``, cuDNN first on Hopper."""
    capability = torch.cuda.get_device_capability(q.device) if q.is_cuda else None
    order = sdpa_preference(capability, enabled_backends())
    if order is None:
        return F.scaled_dot_product_attention(q, k, v, **kwargs)
    with sdpa_kernel(order, set_priority=True):
        return F.scaled_dot_product_attention(q, k, v, **kwargs)


def dense_kernel_reasons(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, layer_plan: LayerPlan,
                         kwargs: Mapping[str, object], backend: str = "auto") -> list[str]:
    """Why an all-dense layer's SDPA call (``kwargs``: its keywords) does not run on the Hopper
    kernel with every key block kept (empty: it does). ``backend``: the one ``apply`` was given;
    a backend named other than "hopper" keeps dense layers on SDPA."""
    reasons = []
    if backend not in ("auto", "hopper"):
        reasons.append(f"backend {backend!r} was asked for")
    if kwargs.get("attn_mask") is not None:
        reasons.append("the call passes an attn_mask")
    if kwargs.get("is_causal", False):
        reasons.append("the call is causal")
    if kwargs.get("dropout_p", 0.0):
        reasons.append(f"dropout_p {kwargs['dropout_p']}")
    unknown = sorted(set(kwargs) - {"attn_mask", "is_causal", "dropout_p", "scale", "enable_gqa"})
    if unknown:
        reasons.append(f"keywords {unknown}")
    if k.dim() != 4 or k.shape[2] != q.shape[2]:
        reasons.append(f"cross-attention (key {tuple(k.shape)} for query {tuple(q.shape)})")
    elif k.shape[1] != q.shape[1] and not (kwargs.get("enable_gqa", False) and q.shape[1] % k.shape[1] == 0):
        reasons.append(f"{k.shape[1]} key heads for {q.shape[1]} query heads")
    if not reasons:
        reasons += get_backend("hopper").not_supported_reasons(q, k, v, layer_plan)
    return reasons
