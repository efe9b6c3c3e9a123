"""``call_support`` says what a call of each kind does here: its backend is the one "auto" selects
for a real call of that kind (a layer of several blocks, [B, N, H, D] views), the first backend in
"auto"'s order with no reason against it; its reasons are the backends' own declarations."""

from __future__ import annotations

import pytest
import torch

from attnsearch import Geometry
from attnsearch.runtime import select_backend
from attnsearch.runtime.backends import BACKENDS, HopperBackend
from attnsearch.runtime.support import call_support

from test_runtime import all_patterns


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_each_kind_runs_where_a_real_call_of_that_kind_runs(dtype):
    rows = call_support(dtype=dtype)
    assert {(r.head_dim, r.block_size, r.precision) for r in rows} == {
        (d, b, p) for d in (64, 128) for b in (64, 128) for p in ("native", "fp8")}
    device = "cuda" if torch.cuda.is_available() else "cpu"
    for r in rows:
        lp = all_patterns(Geometry(4, 16, 16), r.block_size).with_precision(r.precision)
        q, k, v = (torch.randn(2, lp.geometry.num_tokens, lp.num_heads, r.head_dim, dtype=dtype,
                               device=device).transpose(1, 2) for _ in range(3))
        assert r.backend == select_backend(q, k, v, lp, "auto", r.precision).name, r
        order = [b.name for b in BACKENDS]
        assert not r.reasons[r.backend]
        assert all(r.reasons[n] for n in order[:order.index(r.backend)]), r


def test_reasons_follow_the_backends_declarations():
    for r in call_support():
        hopper = " ".join(r.reasons["hopper"])
        assert ("block size 64" in hopper) == (r.block_size not in HopperBackend.block_sizes)
        assert ("precision 'fp8'" in hopper) == (r.precision not in HopperBackend.precisions)
