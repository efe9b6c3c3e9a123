"""``diffusers:<local path or repo id>``: a real pipeline (or transformer) from weights on disk.

Nothing is ever downloaded: a repo id is looked up in the local Hugging Face cache only, and
missing weights are a one-line error naming the path and how to fetch them elsewhere.

A pipeline folder (``model_index.json``) runs the real pipeline once per prompt
(``output_type="latent"``) with the given sizes, recording every transformer forward: the
recorded keyword inputs become the ModelSpec's inputs, one per denoising step (the CFG branches
of a step — Wan and HunyuanVideo call the transformer once per branch — are concatenated on the
batch dimension, exactly what CogVideoX's pipeline does itself; then the prompts, prompt-major,
so ``spec.prompts`` says which batch share is whose). So the profile sees the real denoising
trajectory of every prompt. A pipeline of two experts (Wan2.2: ``transformer_2`` and a
``boundary_ratio``) becomes one :class:`~.experts.ExpertPair` model with ``spec.experts`` naming
the steps each runs. Image-to-video pipelines (Wan I2V, CogVideoX I2V) take ``image``.
A transformer folder (``config.json`` of a supported class) loads the transformer alone and makes
inputs as ``diffusers-random`` does (random text embeddings: no text encoder is at hand).
A pipeline's spec runs whole trajectories (``ModelSpec.trajectories``: each prompt's run from the
noise the profile saw, final latents), for ``optimize --validate-mode trajectory`` and
``attnsearch sensitivity``; plans then apply to the pipeline object (``ModelSpec.pipeline``).
"""

from __future__ import annotations

import inspect
import json
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .common import denoising_inputs, instrument, timestep_value
from .experts import ExpertPair, boundary_timestep, pipeline_transformers
from .family import VideoSize, require_diffusers, resolve_dtype
from .registry import FAMILIES, family_of

#: Forward arguments that carry one entry per batch element (concatenated across CFG branches).
BATCHED = ("hidden_states", "timestep", "encoder_hidden_states", "encoder_attention_mask", "pooled_projections",
           "guidance", "encoder_hidden_states_image", "ofs", "timestep_cond")


def _missing(path: str, why: str = "") -> Exception:
    from .. import ModelUnavailableError

    repo = path if "/" in path and not Path(path).is_absolute() and not path.startswith(".") else "<repo id>"
    return ModelUnavailableError(
        f"diffusers: no weights at {path!r}{f' ({why})' if why else ''}; nothing can be downloaded here: fetch them "
        f"on a machine with network access (hf download {repo} --local-dir DIR) and pass diffusers:DIR")


def resolve_path(path: str) -> Path:
    """A local folder, or a repo id already in the local Hugging Face cache; else the one-line error."""
    p = Path(path).expanduser()
    if p.exists():
        if not p.is_dir():
            raise _missing(path, "not a folder")
        return p
    if p.is_absolute() or path.startswith(".") or path.count("/") != 1:
        raise _missing(path)
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(path, local_files_only=True))
    except Exception as exc:  # noqa: BLE001  (LocalEntryNotFoundError, offline errors, bad ids)
        raise _missing(path, f"not in the local Hugging Face cache: {type(exc).__name__}") from None


def _class_name(folder: Path) -> str | None:
    cfg = folder / "config.json"
    if not cfg.is_file():
        return None
    try:
        return json.loads(cfg.read_text()).get("_class_name")
    except (OSError, json.JSONDecodeError):
        return None


def load_local(cls: Any, folder: Path, dtype: torch.dtype) -> Any:
    """``cls.from_pretrained`` offline, in ``dtype`` (``torch_dtype``: the name every diffusers
    release accepts; 0.36+ deprecate it for ``dtype``, whose warning is silenced here)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*torch_dtype.*", category=FutureWarning)
        try:
            return cls.from_pretrained(folder, torch_dtype=dtype, local_files_only=True)
        except ValueError as exc:
            if "low_cpu_mem_usage" in str(exc):  # models with float32-kept modules load through accelerate
                raise ValueError(f"diffusers: loading {folder} needs the package accelerate "
                                 "(pip install 'attnsearch[diffusers]')") from None
            raise


def _merge(group: list[dict[str, Any]]) -> dict[str, Any]:
    """The CFG-branch forwards of one step → one forward with the branches on the batch dim."""
    if len(group) == 1:
        return group[0]
    out = dict(group[0])
    for key in BATCHED:
        vals = [g.get(key) for g in group]
        if all(isinstance(v, torch.Tensor) for v in vals):
            try:
                out[key] = torch.cat([v.reshape(1) if v.dim() == 0 else v for v in vals], dim=0)
            except RuntimeError as err:
                shapes = [tuple(v.shape) for v in vals]
                raise ValueError(f"diffusers: the {len(group)} forwards of one step have differently shaped "
                                 f"{key} ({shapes}), so they cannot form one batch: {err}") from None
    return out


def _record(pipe: Any, call_kwargs: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """Run the pipeline once; per denoising step, (the transformer that ran it, its keyword inputs
    with the CFG branches on the batch dimension). Steps are told apart by timestep, as
    :class:`~.common.TimestepStepper` numbers them."""
    experts = pipeline_transformers(pipe)
    seen: list[tuple[str, dict[str, Any]]] = []

    def hook(name: str, params: list[str], args, kwargs) -> None:
        kw = dict(zip(params, args))
        kw.update(kwargs)
        seen.append((name, {k: (v.detach().clone() if isinstance(v, torch.Tensor) else
                                tuple(t.detach().clone() for t in v) if isinstance(v, tuple) and v
                                and all(isinstance(t, torch.Tensor) for t in v) else v) for k, v in kw.items()}))

    handles = [m.register_forward_pre_hook(
        lambda mod, args, kwargs, name=name, params=list(inspect.signature(m.forward).parameters):
        hook(name, params, args, kwargs), with_kwargs=True) for name, m in experts]
    try:
        with torch.no_grad():
            pipe(**call_kwargs)
    finally:
        for h in handles:
            h.remove()
    if not seen:
        raise ValueError("diffusers: the pipeline never called its transformer")
    steps: list[tuple[str, list[dict[str, Any]]]] = []
    last = None
    for name, kw in seen:
        value = timestep_value(kw.get("timestep"))
        if steps and value == last:
            if steps[-1][0] != name:
                raise ValueError(f"diffusers: one denoising step (timestep {value:g}) ran both {steps[-1][0]} and "
                                 f"{name}")
            steps[-1][1].append(kw)
        else:
            steps.append((name, [kw]))
        last = value
    out = []
    for name, group in steps:
        kw = _merge(group)
        kw["return_dict"] = False
        kw.pop("attention_kwargs", None)
        out.append((name, kw))
    return out


def _prompt_list(prompt: str, prompts: Any) -> list[str]:
    if prompts is None:
        prompts = [prompt]
    if isinstance(prompts, str) or not isinstance(prompts, (list, tuple)) or not prompts:
        raise ValueError(f"option prompts must be a non-empty list of prompts, got {prompts!r}")
    bad = [p for p in prompts if not isinstance(p, str) or not p.strip()]
    if bad:
        raise ValueError(f"option prompts: every prompt must be a non-empty string, got {bad[0]!r}")
    return list(prompts)


def _image(pipe: Any, image: Any) -> dict[str, Any]:
    """The ``image`` call argument of an image-to-video pipeline (a path, or a PIL image)."""
    takes = "image" in inspect.signature(pipe.__call__).parameters
    if not takes:
        if image is not None:
            raise ValueError(f"diffusers: {type(pipe).__name__} is not an image-to-video pipeline: it takes no image")
        return {}
    if image is None:
        raise ValueError(f"diffusers: {type(pipe).__name__} is an image-to-video pipeline: give the conditioning "
                         "image (-o image=PATH)")
    if isinstance(image, (str, Path)):
        from PIL import Image, UnidentifiedImageError

        try:
            with Image.open(image) as img:
                image = img.convert("RGB")
        except (OSError, UnidentifiedImageError) as exc:
            raise ValueError(f"option image: cannot read {image} as an image ({type(exc).__name__})") from None
    return {"image": image}


def _by_prompt(records: list[list[tuple[str, dict[str, Any]]]], prompts: list[str],
               family: str) -> tuple[list[str], list[dict[str, Any]]]:
    """Per step: the expert that ran it and the prompts' inputs on the batch dimension (prompt-major)."""
    if family == "hunyuanvideo":
        from .hunyuan import trim_text_padding

        records = [[(name, trim_text_padding(kw)) for name, kw in rec] for rec in records]
        lengths = {p: int(rec[0][1]["encoder_hidden_states"].shape[1]) for p, rec in zip(prompts, records)}
        if len(set(lengths.values())) > 1:
            detail = ", ".join(f"{n} ({p[:30]!r})" for p, n in lengths.items())
            raise ValueError(f"hunyuanvideo: the prompts have different text lengths after the template: {detail} "
                             "tokens; a profile holds one geometry: give prompts of one token length")
    first = records[0]
    for p, rec in zip(prompts[1:], records[1:]):
        times = [timestep_value(kw["timestep"]) for _, kw in rec]
        if len(rec) != len(first) or times != [timestep_value(kw["timestep"]) for _, kw in first]:
            raise ValueError(f"diffusers: prompt {p[:30]!r} ran {len(rec)} steps at other timesteps than "
                             f"prompt {prompts[0][:30]!r} ({len(first)} steps)")
    names = [name for name, _ in first]
    inputs = [_merge([rec[i][1] for rec in records]) for i in range(len(first))]
    return names, inputs


def _trajectories(pipe: Any, call: dict[str, Any], texts: list[str], seed: int):
    """``ModelSpec.trajectories`` of a pipeline: the first ``n`` prompts' whole runs from the noise
    the profile saw (prompt i: seed ``seed + i``), their final latents concatenated."""

    def run(n: int) -> torch.Tensor:
        outs = []
        with torch.no_grad():
            for i, text in enumerate(texts[:n]):
                out = pipe(**call, prompt=text, generator=torch.Generator(device="cpu").manual_seed(seed + i))
                outs.append(out.frames if hasattr(out, "frames") else out[0])
        return torch.cat([o.float() for o in outs])

    return run


def _experts(names: list[str], modules: dict[str, nn.Module]) -> tuple:
    """Contiguous step ranges per expert → Expert records (() for a single transformer)."""
    from .. import fingerprint
    from ...experts import Expert

    if set(names) == {"transformer"}:
        return ()
    ranges: list[list[Any]] = []
    for i, name in enumerate(names):
        if ranges and ranges[-1][0] == name:
            ranges[-1][2] = i + 1
        else:
            ranges.append([name, i, i + 1])
    if len({r[0] for r in ranges}) != len(ranges):
        raise ValueError(f"diffusers: the experts alternate over the steps ({', '.join(names)}); "
                         "attnsearch needs each expert to run one contiguous range of steps")
    return tuple(Expert(n, a, b, fingerprint(modules[n])) for n, a, b in ranges)


def load_pretrained(path: str, *, prompt: str = "A cat walks on the grass, realistic style.",
                    prompts: list[str] | None = None, negative_prompt: str | None = None,
                    num_frames: int | None = None, height: int | None = None, width: int | None = None,
                    steps: int = 4, guidance_scale: float | None = None, seed: int = 0, dtype: Any = "bfloat16",
                    device: Any = None, text_tokens: int | None = None, image: Any = None):
    """Registry factory of ``diffusers:<path>`` (see the module docstring). ``prompts`` (a list)
    replaces ``prompt``: the pipeline runs once per prompt, prompt i with seed ``seed + i``;
    ``image``: the conditioning image (a path) of an image-to-video pipeline."""
    from .. import ModelSpec, fingerprint

    diffusers = require_diffusers()
    texts = _prompt_list(prompt, prompts)
    folder = resolve_path(path)
    dtype = resolve_dtype(dtype)
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    by_class = {f.class_name: f for f in FAMILIES.values()}
    experts: tuple = ()
    trajectories, num_trajectories, pipeline = None, 0, None

    name = _class_name(folder)
    if name is not None and not (folder / "model_index.json").is_file():
        if name not in by_class:
            raise ValueError(f"diffusers: {folder} holds a {name}, which has no attnsearch adapter "
                             f"(known: {', '.join(by_class)})")
        if prompts is not None or image is not None:
            raise ValueError(f"diffusers: {folder} holds a transformer alone: prompts and image need its pipeline")
        fam = by_class[name]
        model = load_local(getattr(diffusers, name), folder, dtype)
        model = model.to(device).eval().requires_grad_(False)
        instrument(model)
        _, video, default_text = next(iter(fam.presets.values()))
        size = VideoSize(num_frames or video.num_frames, height or video.height, width or video.width)
        latent = fam.pad_latent(model.config, fam.latent_size(model.config, size))
        warnings.warn(f"diffusers:{path}: a transformer without its pipeline: random text embeddings stand in for "
                      "the prompt", RuntimeWarning, stacklevel=2)
        tokens = fam.check_text_tokens(model.config, text_tokens or default_text)
        inputs = denoising_inputs(model, latent=latent, text_tokens=tokens, steps=steps, seed=seed)
        texts = []
        geometry_model = model
    elif (folder / "model_index.json").is_file():
        try:
            pipe = load_local(diffusers.DiffusionPipeline, folder, dtype)
        except OSError as exc:
            raise _missing(path, f"incomplete pipeline: {exc}".splitlines()[0]) from None
        pipe = pipe.to(device)
        pipe.set_progress_bar_config(disable=True)
        pipeline = pipe
        modules = dict(pipeline_transformers(pipe))
        geometry_model = next(iter(modules.values()))
        fam = family_of(geometry_model)
        for m in modules.values():
            instrument(m)
        call = {"num_inference_steps": steps, "output_type": "latent", **_image(pipe, image)}
        for key, value in (("negative_prompt", negative_prompt), ("num_frames", num_frames), ("height", height),
                           ("width", width), ("guidance_scale", guidance_scale)):
            if value is not None:
                call[key] = value
        records = [_record(pipe, {**call, "prompt": text,
                                  "generator": torch.Generator(device="cpu").manual_seed(seed + i)})
                   for i, text in enumerate(texts)]
        names, inputs = _by_prompt(records, texts, fam.name)
        experts = _experts(names, modules)
        if len(experts) > 1:
            model = ExpertPair(modules["transformer"], modules["transformer_2"], boundary_timestep(pipe))
        else:
            model = modules[names[0]]
        trajectories = _trajectories(pipe, call, list(texts), seed)
        num_trajectories = len(texts)
        if prompts is None:
            texts = []
    else:
        raise _missing(path, "no model_index.json or transformer config.json in it")
    geometry = fam.geometry(geometry_model, inputs[0])
    for i, kw in enumerate(inputs[1:], 1):
        if fam.geometry(geometry_model, kw) != geometry:
            raise ValueError(f"diffusers: step {i} has geometry {fam.geometry(geometry_model, kw)}, step 0 {geometry}")
    return ModelSpec(name=f"diffusers:{path}", model=model, geometry=geometry, inputs=inputs,
                     fingerprint=fingerprint(model), prompts=tuple(texts), experts=experts,
                     trajectories=trajectories, num_trajectories=num_trajectories, pipeline=pipeline)
