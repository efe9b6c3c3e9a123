"""What every diffusers video-transformer adapter shares: instrumentation, steps, inputs.

Layers. Only the *self*-attention calls of the transformer's blocks are attnsearch layers. The
adapter finds those attention modules (per family, in call order), puts a forward pre/post hook on
each, and installs ``model.attnsearch_accept(call)``, which accepts an SDPA call only while one of
them is running. ``capture_attention`` (and so ``apply`` and the profiler) picks that filter up
from the model: cross-attention (Wan's ``attn2``: query = video, key = text), HunyuanVideo's text
token refiner and anything else run the real SDPA untouched and take no layer number. Nothing in
diffusers is patched; the real attention processors run and call SDPA themselves.

Steps. A step is one denoising step: one transformer forward whose batch holds every classifier-
free-guidance branch (cond and uncond concatenated on the batch dimension, as CogVideoX's pipeline
does itself). A ModelSpec built here has one input per step, so ``auto_step`` numbers them. When
a real pipeline calls the transformer once per CFG branch (Wan, HunyuanVideo with true CFG), use
:class:`TimestepStepper`: it numbers steps by the ``timestep`` argument, so the branches of one
denoising step share its step number.

Geometry. Inferred from the config and the actual inputs (:func:`geometry_of`, defined by
:meth:`attnsearch.models.diffusers.family.Family.geometry`).
"""

from __future__ import annotations

import inspect
from typing import Any, Sequence

import torch
from torch import nn

from ...geometry import Geometry
from .family import Instrumentation, VideoSize, positive_int, resolve_dtype
from .registry import family_of, resolve_preset

def check_sdpa_backend(model: nn.Module) -> None:
    """Raise when diffusers is set to an attention backend that never calls SDPA (flash, sage, …):
    attnsearch could neither see nor replace its attention. Which backends end in SDPA:
    :mod:`attnsearch.runtime.diffusers_dispatch`."""
    from ...runtime.diffusers_dispatch import SDPA_BACKENDS, active_backend, backends_of

    bad = sorted(({active_backend() or "native"} | backends_of(model)) - SDPA_BACKENDS)
    if bad:
        raise ValueError(f"{type(model).__name__}: diffusers attention backend {', '.join(bad)} does not call "
                         "torch's scaled_dot_product_attention, so attnsearch cannot see or replace it; use the "
                         "'native' backend (unset DIFFUSERS_ATTN_BACKEND / model.reset_attention_backend())")


def instrument(model: nn.Module) -> Instrumentation:
    """Make a diffusers video transformer attnsearch-ready (idempotent); returns its Instrumentation.

    After this, ``capture_attention(model, …)``, ``apply(model, plan)`` and ``profile_model`` see
    exactly its self-attention calls as layers 0 … L−1 of each forward.
    """
    existing = model.__dict__.get("attnsearch_instrumentation")
    if isinstance(existing, Instrumentation):
        return existing
    check_sdpa_backend(model)
    return Instrumentation(model, family_of(model))


def geometry_of(model: nn.Module, inputs: dict[str, Any]) -> Geometry:
    """Geometry of the self-attention calls of ``model(**inputs)``."""
    return family_of(model).geometry(model, inputs)


# --- steps -------------------------------------------------------------------------------------


def timestep_value(t: Any) -> float:
    """The denoising timestep of a forward's ``timestep`` argument: its largest entry (a batch of
    equal values, or Wan2.2 TI2V's per-token timesteps, whose first-frame tokens carry 0)."""
    return float(t.max()) if isinstance(t, torch.Tensor) else float(t)


class TimestepStepper:
    """Number steps by the timestep each transformer forward receives (for real pipelines).

        with apply(pipe.transformer, plan, auto_step=False) as ap, TimestepStepper(pipe.transformer, ap):
            pipe(prompt, ...)

    ``model``: one transformer, or a sequence of (name, transformer) pairs sharing one count (the
    experts of a Wan2.2 pipeline: the low-noise expert's first step follows the high-noise
    expert's last). Before every forward: the first forward, or one whose timestep is larger than
    the last one (a new generation: timesteps fall during denoising), is step 0; a smaller
    timestep is the next step; an equal one (another CFG branch of the same denoising step) keeps
    the step. ``current`` names the transformer whose forward runs (None outside forwards).
    ``target`` is anything with ``set_step`` (``apply`` or ``capture_attention`` with
    ``auto_step=False``). Reading the timestep costs one host sync per forward.
    """

    def __init__(self, model: nn.Module | Sequence[tuple[str, nn.Module]], target: Any) -> None:
        if not callable(getattr(target, "set_step", None)):
            raise TypeError(f"TimestepStepper: target needs set_step(), got {type(target).__name__}")
        self.models = [("transformer", model)] if isinstance(model, nn.Module) else list(model)
        self.target = target
        self.signatures = {}
        for name, m in self.models:
            self.signatures[name] = inspect.signature(m.forward)
            if "timestep" not in self.signatures[name].parameters:
                raise ValueError(f"{type(m).__name__}.forward has no 'timestep' argument")
        self.model = self.models[0][1]
        self.step = -1
        self.last: float | None = None
        self.current: str | None = None
        self._handles: list[Any] = []

    def _hook(self, name: str, args, kwargs) -> None:
        bound = self.signatures[name].bind_partial(*args, **kwargs)
        t = bound.arguments.get("timestep")
        if t is None:
            raise ValueError("TimestepStepper: the forward got no timestep")
        value = timestep_value(t)
        if self.last is None or value > self.last:
            self.step = 0
        elif value < self.last:
            self.step += 1
        self.last = value
        self.current = name
        self.target.set_step(self.step)

    def __enter__(self) -> TimestepStepper:
        for name, m in self.models:
            self._handles.append(m.register_forward_pre_hook(
                lambda module, args, kwargs, name=name: self._hook(name, args, kwargs), with_kwargs=True))
            self._handles.append(m.register_forward_hook(lambda *a: setattr(self, "current", None),
                                                         always_call=True))
        return self

    def __exit__(self, *exc: Any) -> None:
        while self._handles:
            self._handles.pop().remove()
        self.current = None


# --- random transformers and inputs --------------------------------------------------------------


def cast_keeping_fp32(model: nn.Module, dtype: torch.dtype) -> nn.Module:
    """Cast floating parameters and buffers to ``dtype``, except those diffusers keeps in float32
    (``_keep_in_fp32_modules``: rope, time embedder, norms, modulation tables), which stay as built —
    as ``from_pretrained(torch_dtype=…)`` leaves them. (ModelMixin.to would cast everything.)"""
    keep = getattr(model, "_keep_in_fp32_modules", None) or []
    for name, t in [*model.named_parameters(), *model.named_buffers()]:
        if t.is_floating_point() and not any(k in name.split(".") for k in keep):
            t.data = t.data.to(dtype)
    return model


def random_transformer(family: str, config_overrides: dict[str, Any] | None = None, *, seed: int = 0,
                       dtype: Any = torch.float32, device: Any = "cpu") -> nn.Module:
    """A real diffusers transformer of a preset's configuration with random weights, instrumented.

    ``family``: a preset ('wan2.1-1.3b', 'cogvideox-5b', …) or a family ('wan', 'cogvideox',
    'hunyuanvideo': its first preset). ``config_overrides`` replace config entries (e.g.
    ``{"num_layers": 2}``). Built directly on ``device`` (no CPU detour for a GPU model); modules
    diffusers keeps in float32 stay float32 in a bf16/fp16 model.
    """
    fam, preset = resolve_preset(family)
    config = dict(fam.presets[preset][0])
    unknown = sorted(set(config_overrides or {}) - set(inspect.signature(fam.transformer_class()).parameters))
    if unknown:
        raise ValueError(f"{fam.class_name} has no config entry {', '.join(unknown)}")
    config.update(config_overrides or {})
    dtype = resolve_dtype(dtype)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        with torch.device(device):
            model = fam.transformer_class()(**config)
    if dtype != torch.float32:
        cast_keeping_fp32(model, dtype)
    model = model.eval().requires_grad_(False)
    instrument(model)
    return model


def denoising_inputs(model: nn.Module, *, latent: tuple[int, int, int], text_tokens: int, steps: int,
                     batch: int = 1, seed: int = 0, dtype: Any = None) -> list[dict[str, Any]]:
    """``steps`` keyword inputs of a fake flow-matching denoising loop (as toy-vdit's): latents
    x_t = (1 − σ)·x₀ + σ·ε for σ = 1, …, 1/steps, timestep 1000·σ; x₀, ε, text embeddings
    (N(0, 1), [batch, text_tokens, text_dim]) fixed by ``seed``. ``batch`` = 2 stands for CFG."""
    fam = family_of(model)
    param = next(model.parameters())
    device = param.device
    dtype = resolve_dtype(dtype) if dtype is not None else _compute_dtype(model)
    gen = torch.Generator(device="cpu").manual_seed(seed + 1)
    shape = fam.latent_shape(model.config, latent, batch)
    x0, eps = torch.randn(shape, generator=gen), torch.randn(shape, generator=gen)
    text = torch.randn(batch, text_tokens, fam.text_dim(model.config), generator=gen)
    inputs = []
    for i in range(steps):
        sigma = 1.0 - i / steps
        lat = ((1 - sigma) * x0 + sigma * eps).to(device=device, dtype=dtype)
        t = torch.full((batch,), 1000.0 * sigma).to(device=device, dtype=fam.timestep_dtype)
        if fam.timestep_dtype == torch.long:
            t = torch.full((batch,), round(999 * sigma), dtype=torch.long, device=device)
        inputs.append(fam.forward_inputs(model, lat, t, text.to(device=device, dtype=dtype), gen))
    return inputs


def _compute_dtype(model: nn.Module) -> torch.dtype:
    """The dtype of the bulk of the weights (not the float32-kept ones)."""
    counts: dict[torch.dtype, int] = {}
    for p in model.parameters():
        counts[p.dtype] = counts.get(p.dtype, 0) + p.numel()
    return max(counts, key=counts.get)


def load_random(preset: str, *, num_frames: int | None = None, height: int | None = None,
                width: int | None = None, text_tokens: int | None = None, steps: int = 2, batch: int = 1,
                seed: int = 0, dtype: Any = "float32", device: Any = "cpu",
                config: dict[str, Any] | None = None, tiny: bool = False):
    """Registry factory of ``diffusers-random:<preset>``: a ModelSpec of a randomly initialised
    real diffusers transformer and ``steps`` inputs made directly (no text encoder, no VAE).

    Sizes are pixel sizes, as the pipelines take them (defaults: the preset's native video, e.g.
    Wan2.1 81 × 480 × 832 → latent 21 × 60 × 104 → 21 × 30 × 52 tokens). ``text_tokens``: length
    of the text embeddings (defaults: Wan 512, CogVideoX its max_text_seq_length 226, HunyuanVideo
    256). ``batch`` 2 = cond + uncond of CFG in one forward. ``config`` overrides config entries;
    ``tiny`` starts from the family's tiny overrides (few layers, 4 heads of 16 channels).
    """
    from .. import ModelSpec, fingerprint

    fam, name = resolve_preset(preset)
    _, video, default_text = fam.presets[name]
    size = VideoSize(num_frames or video.num_frames, height or video.height, width or video.width)
    positive_int("steps", steps)
    positive_int("batch", batch)
    overrides = {**(fam.tiny if tiny else {}), **(config or {})}
    model = random_transformer(name, overrides, seed=seed, dtype=dtype, device=device)
    latent = fam.pad_latent(model.config, fam.latent_size(model.config, size))
    t_tokens = default_text if text_tokens is None else positive_int("text_tokens", text_tokens)
    t_tokens = fam.check_text_tokens(model.config, t_tokens)
    inputs = denoising_inputs(model, latent=latent, text_tokens=t_tokens, steps=steps, batch=batch, seed=seed)
    geometry = fam.geometry(model, inputs[0])
    return ModelSpec(name=f"diffusers-random:{name}", model=model, geometry=geometry, inputs=inputs,
                     fingerprint=fingerprint(model))


__all__ = ["TimestepStepper", "cast_keeping_fp32", "check_sdpa_backend",
           "denoising_inputs", "geometry_of", "instrument", "load_random", "random_transformer", "timestep_value"]
