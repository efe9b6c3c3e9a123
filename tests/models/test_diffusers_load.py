"""Loading diffusers models: registry specs, weights on disk (a tiny saved pipeline), missing
weights, preset geometries at full size, CFG steps, timestep-numbered steps, HunyuanVideo masks."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch

pytest.importorskip("diffusers", reason="diffusers is an optional extra (pip install 'attnsearch[diffusers]')")

from attnsearch import Geometry  # noqa: E402
from attnsearch.metrics import compare  # noqa: E402
from attnsearch.models import ModelUnavailableError, load_model  # noqa: E402
from attnsearch.models.diffusers import (TimestepStepper, VideoSize, instrument,  # noqa: E402
                                         random_transformer, resolve_preset, sample)
from attnsearch.models.diffusers.hunyuan import trim_text_padding  # noqa: E402
from attnsearch.models.diffusers.wan import FAMILY as WAN  # noqa: E402
from attnsearch.plan import LayerPlan, Plan, ScheduleEntry  # noqa: E402
from attnsearch.profiling.capture import capture_attention  # noqa: E402
from attnsearch.runtime import apply  # noqa: E402


def test_missing_weights_are_a_one_line_error_naming_the_path(tmp_path):
    where = tmp_path / "Wan2.1-T2V-1.3B-Diffusers"
    with pytest.raises(ModelUnavailableError) as err:
        load_model(f"diffusers:{where}", prompt="a cat", steps=2)
    msg = str(err.value)
    assert "\n" not in msg and str(where) in msg and "hf download" in msg
    with pytest.raises(ModelUnavailableError, match=r"no weights at 'nobody/not-a-model' \(not in the local Hugging Face "
                                                    r"cache.*hf download nobody/not-a-model --local-dir DIR"):
        load_model("diffusers:nobody/not-a-model")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelUnavailableError, match="no model_index.json or transformer config.json"):
        load_model(f"diffusers:{tmp_path / 'empty'}")


@pytest.mark.parametrize("preset, geometry", [
    ("wan2.1-1.3b", Geometry(21, 30, 52, 0)),                  # 81 × 480 × 832: N = 32,760
    ("wan2.1-14b", Geometry(21, 45, 80, 0)),                   # 81 × 720 × 1280: N = 75,600
    ("cogvideox-2b", Geometry(13, 30, 45, 226, "prefix")),     # 49 × 480 × 720
    ("cogvideox-5b", Geometry(13, 30, 45, 226, "prefix")),
    ("cogvideox1.5-5b", Geometry(11, 48, 85, 226, "prefix")),  # 81 × 768 × 1360: 21 latent frames padded to 22
    ("hunyuanvideo", Geometry(33, 45, 80, 256, "suffix")),     # 129 × 720 × 1280: N = 119,056
])
def test_preset_geometry_at_full_size(preset, geometry):
    fam, name = resolve_preset(preset)
    config, video, text = fam.presets[name]
    cfg = SimpleNamespace(**{"patch_size_t": None, **config})
    latent = fam.pad_latent(cfg, fam.latent_size(cfg, video))
    shape = fam.latent_shape(cfg, latent, 1)
    inputs = {"hidden_states": torch.empty(shape, device="meta"),
              "encoder_hidden_states": torch.empty(1, text, 8, device="meta")}
    assert fam.geometry(SimpleNamespace(config=cfg), inputs) == geometry


def test_bad_sizes_and_options_are_named():
    with pytest.raises(ValueError, match="num_frames must be 1 \\+ a multiple of 4"):
        load_model("diffusers-random:wan", tiny=True, num_frames=16, height=96, width=160)
    with pytest.raises(ValueError, match="multiples of 16 and 16"):
        load_model("diffusers-random:wan", tiny=True, num_frames=17, height=100, width=160)
    with pytest.raises(ValueError, match="unknown diffusers preset 'sora'"):
        load_model("diffusers-random:sora")
    with pytest.raises(ValueError, match="has no config entry num_blocks"):
        random_transformer("wan", {"num_blocks": 2})
    with pytest.raises(ValueError, match="max_text_seq_length = 226 tokens, got 9"):
        load_model("diffusers-random:cogvideox-2b", tiny=True, text_tokens=9, num_frames=9, height=96, width=160)


def test_cfg_batch_and_timestep_numbered_steps():
    spec = load_model("diffusers-random:wan", tiny=True, batch=2, steps=3, num_frames=9, height=64, width=96)
    assert spec.inputs[0]["hidden_states"].shape[0] == 2
    model = spec.model
    g = spec.geometry
    plan = Plan.dense(g, 3, 2, 4, 64)
    steps_seen = []
    with apply(model, plan, auto_step=False) as ap, TimestepStepper(model, ap), \
            capture_attention(model, lambda c: steps_seen.append((c.step, c.layer)), auto_step=False) as cap, \
            TimestepStepper(model, cap), torch.no_grad():
        for _ in range(2):                         # two generations
            for kw in spec.inputs:                 # a pipeline calling the transformer once per CFG branch
                for branch in range(2):
                    model(**{k: v[branch:branch + 1] if k in ("hidden_states", "timestep",
                                                              "encoder_hidden_states") else v
                             for k, v in kw.items()})
    per_forward = [(s, layer) for s in range(3) for _ in range(2) for layer in range(2)]
    assert steps_seen == per_forward * 2
    assert ap.stats["calls"] == 24 and ap.stats["dense"] == 24


def test_hunyuan_text_padding_and_masks():
    spec = load_model("diffusers-random:hunyuanvideo", tiny=True, text_tokens=6, num_frames=9, height=64, width=96)
    kw = dict(spec.inputs[0])
    masks = []
    with capture_attention(spec.model, lambda c: masks.append(c.kwargs["attn_mask"])), torch.no_grad():
        want = spec.model(**kw)[0]
        assert masks == [None] * 3                 # an all-ones text mask is dropped (exact no-op)
        masks.clear()
        pad = torch.randn(1, 4, kw["encoder_hidden_states"].shape[-1])
        padded = dict(kw, encoder_hidden_states=torch.cat([kw["encoder_hidden_states"], pad], 1),
                      encoder_attention_mask=torch.cat([kw["encoder_attention_mask"],
                                                        torch.zeros(1, 4, dtype=torch.int64)], 1))
        got_padded = spec.model(**padded)[0]       # real padding: the mask stays, keys masked
        assert len(masks) == 3 and all(m is not None and not m.all() for m in masks)
        trimmed = trim_text_padding(padded)
        assert trimmed["encoder_hidden_states"].shape[1] == 6
        got_trimmed = spec.model(**trimmed)[0]
    assert ((got_padded - want).norm() / want.norm()).item() < 1e-5   # padding changes nothing
    assert ((got_trimmed - want).norm() / want.norm()).item() < 1e-6


def test_non_sdpa_attention_backends_are_refused():
    model = random_transformer("wan", WAN.tiny)
    model.attnsearch_instrumentation.remove()
    assert not hasattr(model, "attnsearch_accept")
    model.blocks[0].attn1.processor._attention_backend = "flash"
    with pytest.raises(ValueError, match="backend flash does not call torch's scaled_dot_product_attention"):
        instrument(model)


def test_closed_loop_sample_dense_vs_sparse():
    spec = load_model("diffusers-random:wan", tiny=True, steps=3, num_frames=17, height=96, width=160)
    g, model = spec.geometry, spec.model
    dense = sample(model, spec.inputs)
    same = sample(model, spec.inputs, plan=Plan.dense(g, 3, 2, 4, 64))
    assert compare(same, dense)["psnr"] == math.inf
    lp = LayerPlan.single("diagonal", {"rows": 1.0}, g, 4, 64)
    sparse = sample(model, spec.inputs, plan=Plan(g, 64, 3, 2, 4, (ScheduleEntry(0, 3, (lp, lp)),)), backend="torch")
    m = compare(sparse, dense, layout="BCFHW", window_size=3)
    assert 0 < m["rel_l2"] < 1 and math.isfinite(m["psnr"]) and m["ssim"] < 1


def test_weights_on_disk_run_the_real_pipeline(tmp_path, tiny_wan_pipeline):
    spec = load_model(f"diffusers:{tiny_wan_pipeline}", prompt="a cat", num_frames=9, height=64, width=96, steps=2,
                      guidance_scale=5.0, dtype="float32", device="cpu")
    assert spec.geometry == Geometry(3, 4, 6, 0)
    assert len(spec.inputs) == 2                                    # one input per denoising step …
    kw = spec.inputs[0]
    assert kw["hidden_states"].shape == (2, 16, 3, 8, 12)          # … holding both CFG branches
    assert torch.equal(kw["hidden_states"][0], kw["hidden_states"][1])
    assert not torch.equal(kw["encoder_hidden_states"][0], kw["encoder_hidden_states"][1])
    assert kw["timestep"].tolist()[0] == kw["timestep"].tolist()[1] > spec.inputs[1]["timestep"].tolist()[0]
    with apply(spec.model, Plan.dense(spec.geometry, 2, 2, 4, 64)) as ap:
        spec.run()
    assert ap.stats["dense"] == 4

    # A folder with the transformer alone: loaded, inputs made like diffusers-random's.
    spec.model.save_pretrained(tmp_path / "transformer")
    with pytest.warns(RuntimeWarning, match="random text embeddings"):
        alone = load_model(f"diffusers:{tmp_path / 'transformer'}", num_frames=9, height=64, width=96, steps=2,
                           dtype="float32", device="cpu", text_tokens=5)
    assert alone.geometry == Geometry(3, 4, 6, 0) and alone.fingerprint == spec.fingerprint


def test_video_size_defaults_follow_the_pipelines():
    fam, name = resolve_preset("wan")
    assert name == "wan2.1-1.3b" and fam.presets[name][1] == VideoSize(81, 480, 832)
