"""``benchmarks.mini_vdit_blocks``: its masked attention against SDPA with the token mask, the pooled
remainder against full attention where it is exact, and the block selections' densities."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from benchmarks.mini_vdit_blocks import BLOCK, block_mass, masked_attention, select_global, select_rows

N = 5 * BLOCK - 17          # a partial last block
NB = math.ceil(N / BLOCK)
SCALE = 0.125


def _qkv(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(1, 2, N, 64, generator=g) for _ in range(3)]


def _keep(seed: int = 1) -> torch.Tensor:
    keep = torch.rand(2, NB, NB, generator=torch.Generator().manual_seed(seed)) < 0.4
    keep[..., 0] = True                      # every row keeps a block
    return keep


def test_exact_is_sdpa_under_the_token_mask():
    q, k, v = _qkv()
    keep = _keep()
    tokens = keep.repeat_interleave(BLOCK, -2).repeat_interleave(BLOCK, -1)[..., :N, :N]
    ref = F.scaled_dot_product_attention(q.double(), k.double(), v.double(), attn_mask=tokens[None], scale=SCALE)
    out = masked_attention(q, k, v, keep, SCALE, pooled=False)
    torch.testing.assert_close(out.double(), ref, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("pooled", [False, True])
def test_all_blocks_kept_is_full_attention(pooled):
    q, k, v = _qkv(2)
    ref = F.scaled_dot_product_attention(q.double(), k.double(), v.double(), scale=SCALE)
    out = masked_attention(q, k, v, torch.ones(2, NB, NB, dtype=torch.bool), SCALE, pooled=pooled)
    torch.testing.assert_close(out.double(), ref, atol=1e-5, rtol=1e-5)


def test_the_pooled_remainder_is_exact_when_a_blocks_keys_are_equal():
    q, k, v = _qkv(3)
    k = k[..., ::BLOCK, :].repeat_interleave(BLOCK, -2)[..., :N, :]   # one key per block
    ref = F.scaled_dot_product_attention(q.double(), k.double(), v.double(), scale=SCALE)
    pooled = masked_attention(q, k, v, _keep(), SCALE, pooled=True)
    exact = masked_attention(q, k, v, _keep(), SCALE, pooled=False)
    torch.testing.assert_close(pooled.double(), ref, atol=1e-5, rtol=1e-5)
    assert (exact.double() - ref).norm() / ref.norm() > 0.05        # the skipped blocks mattered


def test_block_mass_rows_are_attention_distributions():
    q, k, _ = _qkv(4)
    mass = block_mass(q, k, SCALE)
    assert mass.shape == (2, NB, NB)
    torch.testing.assert_close(mass.sum(-1), torch.ones(2, NB))
    p = torch.softmax(q[0, 1, :BLOCK].double() @ k[0, 1].double().T * SCALE, -1)   # first query block, head 1
    assert mass[1, 0, 2].item() == pytest.approx(p[:, 2 * BLOCK:3 * BLOCK].sum(-1).mean().item(), rel=1e-4)


def test_selections_keep_the_heaviest_blocks_at_the_density():
    mass = torch.rand(3, 2, 16, 16, generator=torch.Generator().manual_seed(5))
    rows = select_rows(mass, 0.25)
    assert (rows.sum(-1) == 4).all()
    assert (mass.masked_fill(~rows, 2).amin(-1) >= mass.masked_fill(rows, -1).amax(-1)).all()
    glob = select_global(mass, 0.3)
    assert glob.sum().item() == round(0.3 * mass.numel())
    assert glob.any(-1).all()                                          # every row keeps its heaviest block
    assert glob.flatten()[mass.flatten().argmax()]
