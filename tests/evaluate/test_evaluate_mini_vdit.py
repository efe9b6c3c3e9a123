"""CI-sized guard of the evaluation pipeline on mini-vdit (2 seeds, 3 steps, 4 × 64 × 64 clips):
the dense plan passes a PSNR gate, a plan with one head's kept blocks moved to another frame
fails it."""

from __future__ import annotations

import math

import pytest
import torch

from attnsearch.evaluate import HELD_OUT_SEED_START, EvaluateError, evaluate, load_generator
from attnsearch.evaluate.from_mini_vdit import MiniVDiTGenerator
from attnsearch.models.mini_vdit import MiniVDiT, MiniVDiTConfig, WeightsMissingError, heldout_conditions
from attnsearch.plan import LayerPlan, Plan, ScheduleEntry

STEPS, BLOCK, GATE_DB = 3, 64, 30.0


def opened(model: MiniVDiT) -> MiniVDiT:
    """A random tiny model whose attention matters: adaLN-zero's closed gates and zero head opened
    (seeded), q/k norms scaled up so the softmax is peaked."""
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            if not p.any():
                p.copy_(torch.randn(p.shape, generator=g) * 0.3)
        for blk in model.blocks:
            blk.q_norm.weight.fill_(4.0)
            blk.k_norm.weight.fill_(4.0)
    return model.eval()


def plans(gen: MiniVDiTGenerator) -> tuple[Plan, Plan]:
    """(dense, broken): broken = dense with head 0 of layer 0 keeping only frame 2's key blocks."""
    model, geom = gen.transformer, gen.geometry()
    heads, layers = model.config.heads, model.config.depth
    per_frame = geom.frame_size // BLOCK
    frame2 = list(range(2 * per_frame, 3 * per_frame))
    moved = LayerPlan.from_heads([("vertical_stripe", {"key_blocks": frame2, "rows": 0})] +
                                 [("dense", {})] * (heads - 1), geom, BLOCK)
    rest = (LayerPlan.dense(geom, heads, BLOCK),) * (layers - 1)
    return (Plan.dense(geom, STEPS, layers, heads, BLOCK),
            Plan(geom, BLOCK, STEPS, layers, heads, (ScheduleEntry(0, STEPS, (moved, *rest)),)))


@pytest.mark.slow
def test_gate_passes_dense_and_fails_a_broken_plan():
    torch.manual_seed(0)
    gen = MiniVDiTGenerator(opened(MiniVDiT(MiniVDiTConfig.tiny())), frames=4, height=64, width=64)
    dense, broken = plans(gen)
    result = evaluate([dense, broken], gen, seeds=2, steps=STEPS, labels=["dense", "broken"])
    d, b = result.runs
    assert d.overall["psnr_db"] == math.inf and d.calls["sparse"] == 0
    assert b.calls == {"calls": 2 * STEPS * 2, "sparse": 2 * STEPS, "dense": 2 * STEPS}
    assert b.overall["psnr_db"] < GATE_DB and b.overall["rel_l2_latents"] > 0
    assert result.failures(min_psnr=GATE_DB) == [f"broken: mean PSNR {b.overall['psnr_db']:.2f} dB < {GATE_DB:g} dB"]
    conds = heldout_conditions(2)
    assert [v.condition for v in result.dense] == [str(c) for c in conds]
    assert result.seeds == [HELD_OUT_SEED_START, HELD_OUT_SEED_START + 1]


def test_size_follows_the_plan_unless_given():
    gen = MiniVDiTGenerator(MiniVDiT(MiniVDiTConfig.tiny()), frames=16, height=64, width=64, given=())
    gen.fit(gen.transformer.geometry_for(4, 32, 48))
    assert gen.sizes == {"frames": 4, "height": 32, "width": 48}
    fixed = MiniVDiTGenerator(MiniVDiT(MiniVDiTConfig.tiny()), frames=16, height=64, width=64, given=("frames",))
    with pytest.raises(EvaluateError, match=r"-o frames/height/width: mini-vdit at 16×64×64 attends over "
                                            r"16×16×16 \(N=4096\), the plan over 4×8×12"):
        fixed.fit(fixed.transformer.geometry_for(4, 32, 48))
    with pytest.raises(EvaluateError, match=r"-o guidance: must be a number ≥ 0"):
        MiniVDiTGenerator(MiniVDiT(MiniVDiTConfig.tiny()), guidance=-1)


def test_shipped_weights_load_as_the_registered_generator():
    try:
        gen = load_generator("mini-vdit", frames=4, height=32, width=32, device="cpu")
    except WeightsMissingError as err:
        pytest.skip(f"mini-vdit weights are not shipped in this tree: {err}")
    d = gen.describe()
    assert (d["frames"], d["height"], d["width"], d["dtype"]) == (4, 32, 32, "float32")
    video = gen.generate(HELD_OUT_SEED_START, 2)
    assert video.frames.shape == (1, 3, 4, 32, 32) and 0 <= video.frames.min() <= video.frames.max() <= 1
