"""Real diffusers pipelines (tiny random ones saved to disk, ``tiny_pipelines``) with prompt sets,
Wan2.2's two experts and image-to-video: profiled over a 3-prompt file, optimized, and run under
``apply(pipe, plan)``, with the steps, forwards and expert split checked against forward hooks
placed on the pipeline's own transformers (independent of attnsearch's counting)."""

from __future__ import annotations

import types
from pathlib import Path

import pytest
import numpy as np
import torch

pytest.importorskip("diffusers", reason="diffusers is an optional extra (pip install 'attnsearch[diffusers]')")
pytest.importorskip("transformers")
pytest.importorskip("accelerate", reason="diffusers loads float32-kept modules through accelerate")

import tiny_pipelines as tp  # noqa: E402

from attnsearch import Geometry, apply, load_plan  # noqa: E402
from attnsearch.models import load_model  # noqa: E402
from attnsearch.plan import Plan, PlanError  # noqa: E402
from attnsearch.profiling.profile_io import ProfileSettings, read_profile  # noqa: E402
from attnsearch.profiling.profiler import profile_model  # noqa: E402
from attnsearch.search.study import optimize  # noqa: E402

PROMPTS = ["a cat walks on the grass", "a dog runs on the snow", "a red fox jumps on sand"]
STEPS = 4


@pytest.fixture(autouse=True)
def _ftfy_stand_in(monkeypatch):
    """Wan's I2V pipeline calls ftfy.fix_text without checking it is installed; where it is not,
    an identity stands in (the prompts here are plain ASCII: fix_text would return them as is)."""
    try:
        import ftfy  # noqa: F401
    except ImportError:
        import diffusers.pipelines.wan.pipeline_wan_i2v as i2v

        monkeypatch.setattr(i2v, "ftfy", types.SimpleNamespace(fix_text=str), raising=False)


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("pipes")
    tp.image().save(root / "image.png")
    (root / "prompts.txt").write_text("\n".join(PROMPTS) + "\n\n")
    return root


def _pipeline(folders: Path, kind: str):
    import diffusers

    folder = folders / kind
    if not folder.exists():
        tp.build(kind, folder)
    pipe = diffusers.DiffusionPipeline.from_pretrained(folder, torch_dtype=torch.float32)
    pipe.set_progress_bar_config(disable=True)
    return folder, pipe


def _call(kind: str, folders: Path, prompt: str = PROMPTS[0]) -> dict:
    kw = {"prompt": prompt, "num_inference_steps": STEPS, "output_type": "latent", "guidance_scale": 5.0,
          "generator": torch.Generator().manual_seed(0), **tp.SIZES}
    if "i2v" in kind:
        kw["image"] = tp.image()
    return kw


class ForwardLog:
    """Forward pre-hooks on each transformer of a pipeline: (name, timestep, batch) per forward, and
    the step index the pipeline's own step-end callback reports after each step."""

    def __init__(self, pipe) -> None:
        self.forwards: list[tuple[str, float, int]] = []
        self.step_ends: list[int] = []
        self.handles = []
        for name in ("transformer", "transformer_2"):
            module = getattr(pipe, name, None)
            if module is not None:
                self.handles.append(module.register_forward_pre_hook(
                    lambda m, a, k, name=name: self.forwards.append(
                        (name, float(k["timestep"].max()), int(k["hidden_states"].shape[0]))), with_kwargs=True))

    def on_step_end(self, pipe, i, t, kwargs):
        self.step_ends.append((i, len(self.forwards)))
        return {}

    def steps(self) -> list[tuple[int, str]]:
        """(pipeline step, transformer) of every forward, from the step-end callbacks."""
        out, done = [], 0
        for i, upto in self.step_ends:
            out += [(i, self.forwards[j][0]) for j in range(done, upto)]
            done = upto
        return out

    def remove(self) -> None:
        for h in self.handles:
            h.remove()


def _run_logged(pipe, kind, folders, plan, **size):
    log = ForwardLog(pipe)
    extra = dict(size)
    if kind == "hunyuanvideo":  # the prompt unpadded: the plan's text length (padding would be masked keys)
        extra["max_sequence_length"] = plan.geometry.text_tokens
    try:
        with apply(pipe, plan) as ap:
            pipe(**(_call(kind, folders) | extra), callback_on_step_end=log.on_step_end)
    finally:
        log.remove()
    return ap, log


# --- apply on pipeline objects --------------------------------------------------------------------


@pytest.mark.slow
def test_apply_on_a_two_expert_pipeline_follows_its_boundary(folders):
    _, pipe = _pipeline(folders, "wan2.2")
    geometry = Geometry(3, 4, 6, 0)
    experts = [{"name": "transformer", "steps": [0, 3]}, {"name": "transformer_2", "steps": [3, 4]}]
    plan = Plan.dense(geometry, STEPS, 2, 4, 64, model={"name": "wan2.2", "experts": experts})
    ap, log = _run_logged(pipe, "wan2.2", folders, plan)
    # The pipeline itself: 4 steps × 2 CFG branches, the last step on transformer_2 (t < 500).
    assert [f[0] for f in log.forwards] == ["transformer"] * 6 + ["transformer_2"] * 2
    assert ap.forwards == [(step, name) for step, name in log.steps()]
    assert ap.stats["calls"] == len(log.forwards) * 2 and ap.stats["dense"] == ap.stats["calls"]

    # A plan whose boundary is elsewhere, or that names no experts: refused, naming the step.
    moved = Plan.dense(geometry, STEPS, 2, 4, 64, model={"experts": [experts[0] | {"steps": [0, 2]},
                                                                     experts[1] | {"steps": [2, 4]}]})
    with pytest.raises(PlanError, match=r"step 2 ran transformer, the plan gives it to transformer_2"):
        _run_logged(pipe, "wan2.2", folders, moved)
    with pytest.raises(PlanError, match=r"step 3 ran transformer_2, the plan gives it to transformer"):
        _run_logged(pipe, "wan2.2", folders, Plan.dense(geometry, STEPS, 2, 4, 64))
    with pytest.raises(PlanError, match=r"apply it to the pipeline object"):
        apply(pipe.transformer, plan)


@pytest.mark.slow
def test_cfg_branches_count_as_one_step_separate_or_batched(folders):
    """Wan calls the transformer once per CFG branch, CogVideoX once with both on the batch: both
    are one step per denoising step, numbered as the pipeline's own step-end callback numbers them."""
    for kind, geometry, forwards_per_step in (("wan", (3, 4, 6, 0), 2), ("cogvideox", (3, 4, 6, 226), 1)):
        _, pipe = _pipeline(folders, kind)
        plan = Plan.dense(Geometry(*geometry), STEPS, 2, 4, 64)
        ap, log = _run_logged(pipe, kind, folders, plan)
        assert [s for s, _ in ap.forwards] == [s for s, _ in log.steps()]
        assert [s for s, _ in ap.forwards] == [s for s in range(STEPS) for _ in range(forwards_per_step)]
        assert {b for _, _, b in log.forwards} == {2 // forwards_per_step}


# --- prompt sets: load, profile, optimize, apply ----------------------------------------------------


@pytest.mark.slow
def test_prompts_batch_prompt_major_and_the_profile_keeps_each(folders):
    folder, pipe = _pipeline(folders, "wan")
    spec = load_model(f"diffusers:{folder}", prompts=PROMPTS, steps=2, guidance_scale=5.0, dtype="float32",
                      device="cpu", **tp.SIZES)
    assert spec.prompts == tuple(PROMPTS) and len(spec.inputs) == 2
    # Each prompt's share is exactly what the pipeline fed the transformer for that prompt alone.
    for i, prompt in enumerate(PROMPTS):
        log = ForwardLog(pipe)
        seen = []
        h = pipe.transformer.register_forward_pre_hook(
            lambda m, a, k: seen.append(k["encoder_hidden_states"].clone()), with_kwargs=True)
        call = _call("wan", folders, prompt) | {"num_inference_steps": 2,
                                                "generator": torch.Generator().manual_seed(i)}
        pipe(**call)
        h.remove()
        log.remove()
        share = spec.inputs[0]["encoder_hidden_states"][2 * i:2 * i + 2]
        assert torch.equal(share, torch.cat(seen[:2]))
    prof = profile_model(spec, settings=ProfileSettings(queries=16, block_size=64))
    assert prof.prompts == tuple(PROMPTS)
    for stat in ("recall", "rel_err"):   # the overall statistic is the mean of the prompts' own
        own = torch.tensor(prof.table[[f"prompt{i}.{stat}" for i in range(3)]].to_numpy()).mean(1)
        assert torch.allclose(own, torch.tensor(prof.table[stat].to_numpy()), atol=1e-12)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["wan", "wan2.2", "wan-i2v", "wan2.2-i2v", "cogvideox", "cogvideox-i2v",
                                  "hunyuanvideo"])
def test_profile_optimize_apply_end_to_end(folders, kind, tmp_path):
    folder, pipe = _pipeline(folders, kind)
    options = {"steps": STEPS, "guidance_scale": 5.0, "dtype": "float32", "device": "cpu", **tp.SIZES}
    if "i2v" in kind:
        options["image"] = str(folders / "image.png")
    from attnsearch.cli.profile import read_prompts

    spec = load_model(f"diffusers:{folder}", prompts=read_prompts(folders / "prompts.txt"), **options)
    prof = profile_model(spec, settings=ProfileSettings(queries=16, block_size=64))
    prof.save(tmp_path / "p.parquet")
    prof = read_profile(tmp_path / "p.parquet")
    assert prof.num_prompts == 3 and prof.num_steps == STEPS
    two = kind.startswith("wan2.2")
    assert [e["name"] for e in prof.model.get("experts", [])] == (["transformer", "transformer_2"] if two else [])
    # head_dim 64: the shipped cost model is calibrated for 64 and 128; the tiny heads are 16 wide.
    optimize(prof, out=tmp_path / "plan.json", trials=4, validate=2, model=spec, head_dim=64,
             seed=0, storage=f"sqlite:///{tmp_path / 'study.db'}")
    plan = load_plan(tmp_path / "plan.json")
    assert plan.model.get("experts") == prof.model.get("experts")
    if two:  # no schedule entry spans the hand-over step
        b = prof.model["experts"][1]["steps"][0]
        assert all(not (e.start < b < e.stop) for e in plan.schedule if e.layers is not None)
    ap, log = _run_logged(pipe, kind, folders, plan)
    assert ap.forwards == log.steps()
    assert ap.stats["calls"] == len(log.forwards) * plan.num_layers
    assert ap.stats["sparse"] + ap.stats["dense"] == ap.stats["calls"] and not ap.stats["fallbacks"]
    # The same plan at another video size: retargeted per forward from the transformer's geometry.
    bigger = {"num_frames": 2 * tp.SIZES["num_frames"] - 1, "height": tp.SIZES["height"] * 3 // 2}
    ap, log = _run_logged(pipe, kind, folders, plan, **bigger)
    assert ap.forwards == log.steps() and not ap.stats["fallbacks"]
    assert ap.stats["calls"] == len(log.forwards) * plan.num_layers


# --- whole trajectories of a pipeline: trajectory validation and sensitivity ------------------------


@pytest.mark.parametrize("kind", ["wan", "wan2.2"])
def test_a_pipelines_trajectories_replay_the_profiled_runs(folders, kind):
    """``spec.trajectories`` reruns each prompt from the noise the profile saw: the first forward of
    prompt i gets exactly the recorded step-0 inputs of prompt i (its conditional branch, prompt-major
    on the batch); a dense plan applied through the pipeline reproduces the final latents, a
    block-diagonal one moves them."""
    from attnsearch.plan import LayerPlan, ScheduleEntry
    from attnsearch.search.validate import Validator

    folder, _ = _pipeline(folders, kind)
    spec = load_model(f"diffusers:{folder}", prompts=PROMPTS[:2], steps=STEPS, guidance_scale=5.0, dtype="float32",
                      device="cpu", **tp.SIZES)
    assert spec.num_trajectories == 2 and spec.pipeline is not None
    firsts: list[torch.Tensor] = []
    transformer = spec.pipeline.transformer
    hook = transformer.register_forward_pre_hook(
        lambda m, args, kwargs: firsts.append(kwargs["hidden_states"].clone()), with_kwargs=True)
    try:
        spec.trajectories(2)
    finally:
        hook.remove()
    recorded = spec.inputs[0]["hidden_states"]            # [p0 cond, p0 uncond, p1 cond, p1 uncond]
    per_run = len(firsts) // 2
    assert torch.equal(firsts[0], recorded[0:1]) and torch.equal(firsts[per_run], recorded[2:3])

    g, L, H = spec.geometry, 2, 4
    meta = {"experts": [e.to_dict() for e in spec.experts]} if spec.experts else {}
    validator = Validator(spec, 2, backend="torch", mode="trajectory")
    dense = Plan.dense(g, STEPS, L, H, 64, model=meta)
    assert validator.measure(dense)["rel_l2"] < 1e-6
    diag = LayerPlan.single("diagonal", {"rows": 0}, g, H, 64)
    sparse = Plan(g, 64, STEPS, L, H, (ScheduleEntry(0, STEPS, (diag,) * L),), model=meta)
    assert validator.measure(sparse)["rel_l2"] > 1e-3


def test_sensitivity_of_a_two_expert_pipeline(folders):
    """The probes run through the pipeline with its experts routed: one gain per step and head, all
    finite, and the search accepts the record."""
    from attnsearch.search.sensitivity import measure_sensitivity

    folder, _ = _pipeline(folders, "wan2.2")
    spec = load_model(f"diffusers:{folder}", prompts=PROMPTS[:2], steps=STEPS, guidance_scale=5.0, dtype="float32",
                      device="cpu", **tp.SIZES)
    prof = profile_model(spec, settings=ProfileSettings(queries=16, block_size=64))
    sens = measure_sensitivity(prof, spec, trajectories=2, backend="torch")
    assert sens.shape == (STEPS, 2, 4) and np.isfinite(sens.weights()).all()
    assert (sens.step_response > 0).all() and (sens.head_response > 0).all()
