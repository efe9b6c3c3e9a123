"""``benchmarks.mini_vdit_reuse_forms``: its split attention against SDPA with the token mask and
its complement, the merge of the two parts against full attention, and each reuse form exact where
its assumption holds (inputs unchanged since the exact step)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from benchmarks.mini_vdit_reuse_forms import FORMS, FormRunner, merge, split_attention

N, H, D = 200, 2, 16
SCALE = D ** -0.5


def _qkv(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(1, H, N, D, generator=g, dtype=torch.float64) for _ in range(3)]


def _kept(seed: int = 1) -> torch.Tensor:
    kept = torch.rand(H, N, N, generator=torch.Generator().manual_seed(seed)) < 0.3
    kept[:, :5] = True       # rows with every key kept: the dropped part is empty
    kept[:, 5:9] = False     # rows with none kept
    return kept


def test_parts_are_sdpa_under_the_mask_and_its_complement():
    q, k, v = _qkv()
    kept = _kept()
    o_k, l_k, o_d, l_d = split_attention(q, k, v, kept, SCALE)
    for o, lse, mask in ((o_k, l_k, kept), (o_d, l_d, ~kept)):
        rows = mask.any(-1)                                  # [H, N]
        ref = F.scaled_dot_product_attention(q, k, v, attn_mask=mask[None], scale=SCALE)
        torch.testing.assert_close(o[0][rows], ref[0][rows])
        assert torch.all(o[0][~rows] == 0) and torch.all(lse[0][~rows] == float("-inf"))
        ref_lse = torch.logsumexp((q @ k.transpose(-1, -2) * SCALE).masked_fill(~mask[None], float("-inf")), -1)
        torch.testing.assert_close(lse[0][rows], ref_lse[0][rows])
    full = F.scaled_dot_product_attention(q, k, v, scale=SCALE)
    torch.testing.assert_close(merge(o_k, l_k, o_d, l_d), full)


@pytest.mark.parametrize("form", [f for f in FORMS if f not in ("mask alone", "residual, kept in fp8")])
def test_every_form_is_exact_when_nothing_changed_since_the_exact_step(form):
    q, k, v = _qkv()
    runner = FormRunner(form, _kept(), exact_steps=(0, 2))
    full = F.scaled_dot_product_attention(q, k, v, scale=SCALE)
    for step in range(4):                                     # exact at 0 and 2, reused at 1 and 3
        call = SimpleNamespace(query=q, key=k, value=v, kwargs={"scale": SCALE}, step=step, layer=0)
        torch.testing.assert_close(runner(call), full, atol=1e-5, rtol=1e-5)  # the runner computes in float32
    assert sorted(runner.errors) == [1, 3] and max(max(e) for e in runner.errors.values()) < 1e-5


def test_mask_alone_errs_by_what_the_mask_drops():
    q, k, v = _qkv()
    kept = _kept()
    runner = FormRunner("mask alone", kept, exact_steps=(0,))
    for step in range(2):
        out = runner(SimpleNamespace(query=q, key=k, value=v, kwargs={"scale": SCALE}, step=step, layer=0))
    o_k = split_attention(q, k, v, kept, SCALE)[0]
    torch.testing.assert_close(out, o_k, atol=1e-5, rtol=1e-5)
    assert runner.errors[1][0] > 0.1


def test_the_residual_kept_in_fp8_errs_by_e4m3_rounding_only():
    q, k, v = _qkv()
    kept = _kept()
    runner = FormRunner("residual, kept in fp8", kept, exact_steps=(0,))
    full = F.scaled_dot_product_attention(q, k, v, scale=SCALE)
    for step in range(2):
        out = runner(SimpleNamespace(query=q, key=k, value=v, kwargs={"scale": SCALE}, step=step, layer=0))
    o_k = split_attention(q, k, v, kept, SCALE)[0]
    r = full - o_k
    err = (out - full).abs()
    assert err.max() > 0 and torch.all(err <= r.abs().amax(-1, keepdim=True) / 16 + 1e-5)  # e4m3: 3 mantissa bits
