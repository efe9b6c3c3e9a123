"""``bench.sweep``: the layer plans a bench request without a plan file times."""

from __future__ import annotations

import torch

from attnsearch import Geometry
from attnsearch.bench.sweep import layer_plans


def test_layer_plans_run_every_computed_head_in_the_precision_asked():
    geom = Geometry(4, 16, 16)
    native = layer_plans(geom, 4, 64, densities=(0.2, 0.5))
    fp8 = layer_plans(geom, 4, 64, densities=(0.2, 0.5), precision="fp8")
    assert [lp.precisions for lp in native] == [("native",)] * 2
    assert [lp.precisions for lp in fp8] == [("fp8",)] * 2
    for a, b in zip(native, fp8):
        assert torch.equal(a.block_masks(), b.block_masks())
    dense = layer_plans(geom, 4, 64, pattern="dense", precision="fp8")[0]
    assert dense.precisions == ("fp8",) and not dense.is_dense      # FP8 dense heads run on the sparse kernel
