"""Smoke test of the warp-specialised Hopper kernel (attnsearch/runtime/hopper_kernel.py) on a GPU before any timing: one small layer of every
pattern (N % B ≠ 0, batch 2, D 128 and 64) against fp32 SDPA; run under ``timeout`` (a wrong
barrier phase hangs rather than fails)."""

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from attnsearch import Geometry  # noqa: E402
from attnsearch.runtime.block_tables import build_block_tables  # noqa: E402
from attnsearch.runtime.hopper_kernel import forward  # noqa: E402
from runtime_gpu import all_patterns, reference, rel  # noqa: E402

for d in (128, 64):
    geom = Geometry(6, 20, 36, 51, "suffix")
    lp = all_patterns(geom, 128)
    H, n = lp.num_heads, geom.num_tokens
    q, k, v = (torch.randn(2, H, n, d, device="cuda", dtype=torch.bfloat16) for _ in range(3))
    ref = reference(q, k, v, lp)
    for persistent in (False, True):
        out = torch.full_like(q, float("nan"))
        forward(q, k, v, build_block_tables(lp, "cuda", order="head"), d ** -0.5, out=out, persistent=persistent,
                flat=persistent)
        torch.cuda.synchronize()
        print(f"D {d} persistent={persistent}: rel err {rel(out, ref):.2e}, NaN left {bool(torch.isnan(out).any())}",
              flush=True)
