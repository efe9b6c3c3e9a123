"""Generator ``diffusers:DIR``: a diffusers video pipeline from a folder on disk (nothing downloaded).

Each seed runs the real pipeline (its scheduler, CFG and VAE) with ``generator`` seeded by it, so
the initial latents are identical for the dense and the sparse run; the prompt is the option
``prompt`` for every seed. The final latents are taken after the last scheduler step (the
pipeline's step-end callback) and the frames are the pipeline's own decoded video in [0, 1]
(``output_type="pt"``). Plans run on the pipeline object (``apply(pipe, plan)``): every
transformer it holds (Wan2.2's two experts by the plan's ``model.experts``), steps numbered by
timestep, since Wan and HunyuanVideo call the transformer once per CFG branch.
"""

from __future__ import annotations

from typing import Any

import torch

from ..geometry import Geometry
from .generator import EvaluateError, Video, check_options, positive_int

OPTIONS = ("prompt", "negative_prompt", "num_frames", "height", "width", "guidance_scale", "dtype", "device")
SIZES = ("num_frames", "height", "width")


class DiffusersGenerator:
    """Generates with a loaded diffusers pipeline ``pipe`` (its transformer instrumented)."""

    steps_by_timestep = True

    def __init__(self, pipe: Any, *, name: str, prompt: str = "A cat walks on the grass, realistic style.",
                 negative_prompt: str | None = None, num_frames: int | None = None, height: int | None = None,
                 width: int | None = None, guidance_scale: float | None = None) -> None:
        from ..models.diffusers import family_of, instrument

        self.name = name
        self.pipe = self.pipeline = pipe
        self.transformer = pipe.transformer
        self.family = family_of(self.transformer)
        instrument(self.transformer)
        if not isinstance(prompt, str):
            raise EvaluateError(f"-o prompt: must be a string, got {prompt!r}")
        self.prompt, self.negative_prompt = prompt, negative_prompt
        self.sizes = {k: positive_int(k, v) for k, v in (("num_frames", num_frames), ("height", height),
                                                          ("width", width)) if v is not None}
        self.guidance_scale = guidance_scale

    def describe(self) -> dict[str, Any]:
        p = next(self.transformer.parameters())
        return {"name": self.name, "pipeline": type(self.pipe).__name__, "prompt": self.prompt, **self.sizes,
                "guidance_scale": self.guidance_scale, "device": str(p.device),
                "dtype": str(p.dtype).removeprefix("torch.")}

    def fit(self, geometry: Geometry) -> None:
        """Pixel sizes of a latent video of the geometry's frames × height × width tokens
        (latent = tokens × patch; pixels = VAE ×4 in time, 1 + 4·(latent − 1), ×8 in space)."""
        fam, config = self.family, self.transformer.config
        p_t, p_h, p_w = fam.patch(config)
        want = {"num_frames": (geometry.frames * p_t - 1) * fam.vae_temporal + 1,
                "height": geometry.height * p_h * fam.vae_spatial, "width": geometry.width * p_w * fam.vae_spatial}
        for key, value in want.items():
            self.sizes.setdefault(key, value)

    def generate(self, seed: int, steps: int) -> Video:
        final: dict[str, torch.Tensor] = {}

        def on_step_end(pipe: Any, i: int, t: Any, kwargs: dict[str, Any]) -> dict[str, Any]:
            final["latents"] = kwargs["latents"]
            return {}

        call: dict[str, Any] = {"prompt": self.prompt, "num_inference_steps": steps, "output_type": "pt",
                                "generator": torch.Generator(device="cpu").manual_seed(seed),
                                "callback_on_step_end": on_step_end, "callback_on_step_end_tensor_inputs": ["latents"],
                                **self.sizes}
        for key, value in (("negative_prompt", self.negative_prompt), ("guidance_scale", self.guidance_scale)):
            if value is not None:
                call[key] = value
        with torch.no_grad():
            out = self.pipe(**call)
        video = out.frames if hasattr(out, "frames") else out[0]
        if not isinstance(video, torch.Tensor) or video.dim() != 5:
            raise EvaluateError(f"--model {self.name}: the pipeline returned no [batch, frames, 3, H, W] video")
        frames = video[:1].permute(0, 2, 1, 3, 4).float().cpu().clamp(0, 1)   # → [1, 3, F, H, W]
        return Video(latents=final["latents"][:1].detach().float().cpu(), frames=frames, condition=self.prompt)


def load(path: str, **options: Any) -> DiffusersGenerator:
    """Factory of ``diffusers:DIR``: the pipeline folder DIR (``model_index.json``), options as
    :class:`DiffusersGenerator`'s plus dtype (default float32 on CPU, bfloat16 on CUDA) and device."""
    check_options(f"diffusers:{path}", options, OPTIONS)
    from ..models.diffusers import require_diffusers
    from ..models.diffusers.family import resolve_dtype
    from ..models.diffusers.pretrained import load_local, resolve_path

    diffusers = require_diffusers()
    folder = resolve_path(path)
    if not (folder / "model_index.json").is_file():
        raise EvaluateError(f"--model diffusers:{path}: evaluation needs a pipeline folder (model_index.json), "
                            "to generate and decode videos")
    device = torch.device(options.pop("device", None) or ("cuda" if torch.cuda.is_available() else "cpu"))
    try:
        dtype = resolve_dtype(options.pop("dtype", None) or ("bfloat16" if device.type == "cuda" else "float32"))
    except ValueError as err:
        raise EvaluateError(f"-o dtype: {err}") from None
    pipe = load_local(diffusers.DiffusionPipeline, folder, dtype).to(device)
    pipe.set_progress_bar_config(disable=True)
    if not isinstance(getattr(pipe, "transformer", None), torch.nn.Module):
        raise EvaluateError(f"--model diffusers:{path}: the pipeline has no transformer")
    return DiffusersGenerator(pipe, name=f"diffusers:{path}", **options)


__all__ = ["DiffusersGenerator", "OPTIONS", "load"]
