"""Dense layers of a plan: on Hopper the block-sparse kernel with every key block kept, else exact
SDPA (cuDNN's kernel first on Hopper).

An all-dense layer runs the Hopper kernel where it can (``backends.dense_kernel_reasons`` empty): with every
key block kept it is exact attention (the same error against fp32 as cuDNN's), and faster than
cuDNN's on an H100 80GB HBM3 at both head dims: under ``apply``, 704 against 596 TFLOP/s at 12 ×
32,760 and head_dim 128, 481 against 437 at 24 × 32,760 and 64, 474 against 431 for CogVideoX-5B's
layer; sustained, 1.12-1.17× (reports/dense_layers/). Calls it
cannot honour (a mask, causality, dropout, cross-attention, another GPU, block size 64, a backend
named other than "hopper") run SDPA as below.

PyTorch's SDPA tries FlashAttention before cuDNN. On Hopper (sm_90) cuDNN's kernel is the faster
one: on an H100 80GB HBM3 with torch 2.11, SDPA's own choice took 0–12% longer than cuDNN forced
(14 dense shapes, N 512–32,760, head_dim 64/128: ``sdpa_default_ms`` beside ``ms`` in the
calibration points; others report 1.7–2.3× in training shapes,
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
