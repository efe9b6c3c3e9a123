"""Adapters for the diffusers video transformers: Wan2.1, CogVideoX 1.0/1.5, HunyuanVideo.

    spec = load_model("diffusers-random:wan2.1-1.3b", num_frames=17, height=96, width=160, steps=2,
                      config={"num_layers": 2})          # random weights, inputs made directly
    spec = load_model("diffusers:/models/Wan2.1-T2V-1.3B-Diffusers", prompt="…", steps=4)  # weights on disk
    with apply(spec.model, plan): spec.run()            # the same adapter drives the runtime

    model = random_transformer("cogvideox-5b", {"num_layers": 2})    # or instrument(your_transformer)
    geometry_of(model, inputs)                           # text prefix/suffix, latent frames × H × W

Each transformer is *instrumented* (:func:`instrument`): hooks mark its self-attention modules
and ``model.attnsearch_accept`` tells capture (hence apply and the profiler) that only their SDPA
calls are layers. Family specifics — which modules, text position, masks — are in ``wan``,
``cogvideox`` and ``hunyuan``, each a :class:`Family` (``family``) that ``registry`` names; what
a step is and how a model is instrumented and fed in ``common``; a pipeline's transformers (one, or
Wan2.2's two experts) and their step numbering under ``apply(pipe, plan)`` in ``experts``; the
closed sampling loop in ``sampling``.
Importing this package does not import diffusers; using it without diffusers raises
``ModelUnavailableError`` (pip install 'attnsearch[diffusers]').
"""

from __future__ import annotations

from .common import TimestepStepper, denoising_inputs, geometry_of, instrument, load_random, random_transformer
from .experts import ExpertPair, PipelineRouter, pipeline_transformers
from .family import Family, Instrumentation, VideoSize, require_diffusers
from .pretrained import load_pretrained, resolve_path
from .registry import FAMILIES, PRESETS, family_of, register_family, resolve_preset
from .sampling import sample

__all__ = ["ExpertPair", "FAMILIES", "PRESETS", "Family", "PipelineRouter", "pipeline_transformers", "Instrumentation", "TimestepStepper", "VideoSize", "denoising_inputs",
           "family_of", "geometry_of", "instrument", "load_pretrained", "load_random", "random_transformer",
           "register_family", "require_diffusers", "resolve_path", "resolve_preset", "sample"]
