"""``diffusers:<local path or repo id>``: a real pipeline (or transformer) from weights on disk.

Nothing is ever downloaded: a repo id is looked up in the local Hugging Face cache only, and
missing weights are a one-line error naming the path and how to fetch them elsewhere.

A pipeline folder (``model_index.json``) runs the real pipeline once (``output_type="latent"``)
with the given prompt and sizes, recording every transformer forward: the recorded keyword inputs
become the ModelSpec's inputs, one per denoising step (the CFG branches of a step — Wan and
HunyuanVideo call the transformer once per branch — are concatenated on the batch dimension,
exactly what CogVideoX's pipeline does itself). So the profile sees the real denoising trajectory.
A transformer folder (``config.json`` of a supported class) loads the transformer alone and makes
inputs as ``diffusers-random`` does (random text embeddings: no text encoder is at hand).
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .common import denoising_inputs, instrument
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


def _record(pipe: Any, call_kwargs: dict[str, Any]) -> list[dict[str, Any]]:
    transformer = pipe.transformer
    sig_params = list(__import__("inspect").signature(transformer.forward).parameters)
    seen: list[dict[str, Any]] = []

    def hook(module, args, kwargs) -> None:
        kw = dict(zip(sig_params, args))
        kw.update(kwargs)
        seen.append({k: (v.detach().clone() if isinstance(v, torch.Tensor) else
                         tuple(t.detach().clone() for t in v) if isinstance(v, tuple) and v
                         and all(isinstance(t, torch.Tensor) for t in v) else v) for k, v in kw.items()})

    handle = transformer.register_forward_pre_hook(hook, with_kwargs=True)
    try:
        with torch.no_grad():
            pipe(**call_kwargs)
    finally:
        handle.remove()
    if not seen:
        raise ValueError("diffusers: the pipeline never called its transformer")
    steps: list[list[dict[str, Any]]] = []
    last = None
    for kw in seen:
        t = kw.get("timestep")
        value = float(t.reshape(-1)[0]) if isinstance(t, torch.Tensor) else t
        if steps and value == last:
            steps[-1].append(kw)
        else:
            steps.append([kw])
        last = value
    inputs = [_merge(g) for g in steps]
    for kw in inputs:
        kw["return_dict"] = False
        kw.pop("attention_kwargs", None)
    return inputs


def load_pretrained(path: str, *, prompt: str = "A cat walks on the grass, realistic style.",
                    negative_prompt: str | None = None, num_frames: int | None = None, height: int | None = None,
                    width: int | None = None, steps: int = 4, guidance_scale: float | None = None, seed: int = 0,
                    dtype: Any = "bfloat16", device: Any = None, text_tokens: int | None = None):
    """Registry factory of ``diffusers:<path>`` (see the module docstring)."""
    from .. import ModelSpec, fingerprint

    diffusers = require_diffusers()
    folder = resolve_path(path)
    dtype = resolve_dtype(dtype)
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    by_class = {f.class_name: f for f in FAMILIES.values()}

    name = _class_name(folder)
    if name is not None and not (folder / "model_index.json").is_file():
        if name not in by_class:
            raise ValueError(f"diffusers: {folder} holds a {name}, which has no attnsearch adapter "
                             f"(known: {', '.join(by_class)})")
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
    elif (folder / "model_index.json").is_file():
        try:
            pipe = load_local(diffusers.DiffusionPipeline, folder, dtype)
        except OSError as exc:
            raise _missing(path, f"incomplete pipeline: {exc}".splitlines()[0]) from None
        pipe = pipe.to(device)
        pipe.set_progress_bar_config(disable=True)
        model = getattr(pipe, "transformer", None)
        if not isinstance(model, nn.Module):
            raise ValueError(f"diffusers: the pipeline at {folder} has no transformer")
        fam = family_of(model)
        instrument(model)
        call = {"prompt": prompt, "num_inference_steps": steps, "output_type": "latent",
                "generator": torch.Generator(device="cpu").manual_seed(seed)}
        for key, value in (("negative_prompt", negative_prompt), ("num_frames", num_frames), ("height", height),
                           ("width", width), ("guidance_scale", guidance_scale)):
            if value is not None:
                call[key] = value
        inputs = _record(pipe, call)
        if fam.name == "hunyuanvideo":
            from .hunyuan import trim_text_padding

            inputs = [trim_text_padding(kw) for kw in inputs]
    else:
        raise _missing(path, "no model_index.json or transformer config.json in it")
    geometry = fam.geometry(model, inputs[0])
    for i, kw in enumerate(inputs[1:], 1):
        if fam.geometry(model, kw) != geometry:
            raise ValueError(f"diffusers: step {i} has geometry {fam.geometry(model, kw)}, step 0 {geometry}")
    return ModelSpec(name=f"diffusers:{path}", model=model, geometry=geometry, inputs=inputs,
                     fingerprint=fingerprint(model))
