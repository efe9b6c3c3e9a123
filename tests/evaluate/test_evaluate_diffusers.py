"""``evaluate_command`` on a diffusers pipeline folder built from tiny random components: the real
pipeline (text encoder, scheduler, CFG, VAE decoding) runs dense and under plans, sized from the
plan's geometry, with steps numbered by timestep."""

from __future__ import annotations

import io
import json
import math

import pytest
from rich.console import Console

pytest.importorskip("diffusers", reason="diffusers is an optional extra (pip install 'attnsearch[diffusers]')")

from attnsearch import Geometry  # noqa: E402
from attnsearch.evaluate import evaluate_command, load_generator  # noqa: E402
from attnsearch.plan import LayerPlan, Plan, ScheduleEntry, write_plan  # noqa: E402

#: 9 frames × 64 × 96 px → latent 3 × 8 × 12 → 3 × 4 × 6 = 72 tokens: two blocks of 64.
GEOM = Geometry(3, 4, 6, 0)
STEPS, LAYERS, HEADS, BLOCK = 2, 2, 4, 64


@pytest.mark.slow
def test_pipeline_folder_end_to_end(tmp_path, tiny_wan_pipeline):
    dense = write_plan(Plan.dense(GEOM, STEPS, LAYERS, HEADS, BLOCK), tmp_path / "dense.json")
    own_block = LayerPlan.single("diagonal", {"rows": 0.0}, GEOM, HEADS, BLOCK)     # block diagonal: density 1/2
    sparse = write_plan(Plan(GEOM, BLOCK, STEPS, LAYERS, HEADS, (ScheduleEntry(0, STEPS, (own_block,) * LAYERS),)),
                        tmp_path / "sparse.json")
    text = io.StringIO()
    code = evaluate_command([dense, sparse], f"diffusers:{tiny_wan_pipeline}", seeds=1, out=tmp_path / "out",
                            options={"prompt": "a cat", "guidance_scale": 5.0, "device": "cpu"}, figures=1,
                            console=Console(file=text, width=200))
    assert code == 0
    data = json.loads((tmp_path / "out" / "evaluation.json").read_text())
    assert data["model"]["num_frames"] == 9 and (data["model"]["height"], data["model"]["width"]) == (64, 96)
    d, s = data["runs"]
    # Wan's pipeline calls the transformer once per CFG branch: 2 steps × 2 branches × 2 layers.
    assert d["attention_calls"] == {"calls": 8, "sparse": 0, "dense": 8}
    assert s["attention_calls"] == {"calls": 8, "sparse": 8, "dense": 0}
    assert d["overall"]["psnr_db"] is None and d["videos"][0]["identical"] is True
    assert s["density"] == 0.5 and math.isfinite(s["overall"]["psnr_db"]) and s["overall"]["ssim"] < 1
    assert s["overall"]["rel_l2_latents"] > 0
    assert (tmp_path / "out" / "video_10000" / "1_sparse.gif").is_file()


def test_pipeline_size_follows_the_plan_and_options_are_checked(tmp_path, tiny_wan_pipeline):
    gen = load_generator(f"diffusers:{tiny_wan_pipeline}", height=64)
    gen.fit(GEOM)
    assert gen.sizes == {"num_frames": 9, "height": 64, "width": 96}
    with pytest.raises(ValueError, match=r"-o steps: diffusers:.* takes no such option"):
        load_generator(f"diffusers:{tiny_wan_pipeline}", steps=3)
    (tmp_path / "transformer").mkdir()
    gen.transformer.save_pretrained(tmp_path / "transformer")
    with pytest.raises(ValueError, match=r"--model diffusers:.*transformer: evaluation needs a pipeline folder"):
        load_generator(f"diffusers:{tmp_path / 'transformer'}")


@pytest.mark.slow
def test_a_two_expert_pipeline_evaluates_with_each_expert_running_its_steps(tmp_path):
    """Wan2.2 (transformer for high-noise steps, transformer_2 for low-noise): evaluate runs the plan
    on the pipeline object, so both experts run theirs. A dense plan reproduces the dense video
    exactly; a block-diagonal one changes it; the calls counted are the pipeline's own forwards."""
    pytest.importorskip("transformers")
    import tiny_pipelines as tp

    from attnsearch.evaluate import evaluate
    from attnsearch.models import load_model

    folder = tp.build("wan2.2", tmp_path / "wan22")
    steps = 4
    spec = load_model(f"diffusers:{folder}", steps=steps, guidance_scale=5.0, dtype="float32", device="cpu",
                      **tp.SIZES)
    experts = [e.to_dict() for e in spec.experts]
    assert [e["name"] for e in experts] == ["transformer", "transformer_2"]
    g = spec.geometry
    heads = spec.model.transformer.config.num_attention_heads
    layers = len(spec.model.transformer.blocks)
    model = {"name": spec.name, "experts": experts}
    dense = Plan.dense(g, steps, layers, heads, BLOCK, model=model)
    own_block = LayerPlan.single("diagonal", {"rows": 0.0}, g, heads, BLOCK)
    sparse = Plan(g, BLOCK, steps, layers, heads, (ScheduleEntry(0, steps, (own_block,) * layers),), model=model)
    gen = load_generator(f"diffusers:{folder}", prompt="a cat", guidance_scale=5.0, device="cpu", **tp.SIZES)
    forwards = {"transformer": 0, "transformer_2": 0}
    hooks = [getattr(gen.pipe, n).register_forward_pre_hook(lambda m, a, n=n: forwards.__setitem__(n, forwards[n] + 1))
             for n in forwards]
    result = evaluate([dense, sparse], gen, seeds=1, labels=["dense", "sparse"])
    for h in hooks:
        h.remove()
    d, s = result.runs
    # dense generation + two plan runs; each forward makes `layers` self-attention calls
    per_run = sum(forwards.values()) // 3
    assert forwards["transformer"] > 0 and forwards["transformer_2"] > 0
    assert d.calls["calls"] == s.calls["calls"] == per_run * layers
    assert d.overall["psnr_db"] == math.inf
    assert math.isfinite(s.overall["psnr_db"]) and s.overall["rel_l2_latents"] > 0
