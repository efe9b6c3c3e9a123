"""Reliability of the runtime on bad values and mismatched models: NaN in gives NaN out as SDPA does,
"auto" never picks a backend that computes the dtype wrongly, and apply notices layers that never ran."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from attnsearch import Geometry
from attnsearch.plan import LayerPlan, Plan, PlanError
from attnsearch.runtime import apply, sparse_attention
from attnsearch.runtime.backends import TritonBackend, select_backend

GEOM = Geometry(2, 8, 16)           # N = 256: 4 blocks of 64


def _qkv(dtype=torch.float32):
    g = torch.Generator().manual_seed(0)
    return [torch.randn(1, 2, GEOM.num_tokens, 64, generator=g).to(dtype) for _ in range(3)]


@pytest.mark.parametrize("pattern,params", [("dense", None), ("diagonal", {"rows": 1})])
def test_torch_backend_propagates_nan_like_sdpa(pattern, params):
    lp = LayerPlan.single(pattern, params, GEOM, 2, 64)
    q, k, v = _qkv()
    q[0, 1, 5, 3] = math.nan
    out = sparse_attention(q, k, v, lp, backend="torch")
    ref = F.scaled_dot_product_attention(q, k, v)
    assert torch.isnan(out[0, 1, 5]).all() and torch.isnan(ref[0, 1, 5]).all()
    assert torch.isfinite(out[0, 0]).all() and torch.isfinite(out[0, 1, :5]).all()
    assert torch.isnan(sparse_attention(*_qkv(), lp, backend="torch", scale=math.nan)).all()


def test_interpreter_is_never_chosen_for_bf16():
    reasons = TritonBackend.not_supported_reasons(device="cpu", dtype=torch.bfloat16, head_dim=64, block_size=64,
                                                  interpret=True)
    assert any("TRITON_INTERPRET" in r and "bfloat16" in r for r in reasons)
    assert not TritonBackend.not_supported_reasons(device="cpu", dtype=torch.float16, head_dim=64, block_size=64,
                                                   interpret=True)
    lp = LayerPlan.dense(GEOM, 2, 64)
    assert select_backend(*_qkv(torch.bfloat16), lp).name != "triton"


class _Model(torch.nn.Module):
    def __init__(self, layers: int):
        super().__init__()
        self.layers = layers

    def forward(self, q, k, v):
        for _ in range(self.layers):
            q = F.scaled_dot_product_attention(q, k, v)
        return q


def test_apply_refuses_a_model_with_fewer_layers_than_the_plan():
    plan = Plan.dense(GEOM, 2, 3, 2, 64)
    q, k, v = _qkv()
    with apply(_Model(3), plan) as ap:
        ap.model(q, k, v)
        ap.model(q, k, v)
    with pytest.raises(PlanError, match="step 0 made 2 attention call.*3 layers"):
        with apply(_Model(2), plan) as ap:
            ap.model(q, k, v)
            ap.model(q, k, v)
    with pytest.raises(PlanError, match="step 0 made 2"):
        with apply(_Model(2), plan) as ap:
            ap.model(q, k, v)
