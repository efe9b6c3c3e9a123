"""Generator ``mini-vdit``: the project's small video DiT, with its shipped weights.

Seed s generates from ``make_noise(s, …)`` with held-out condition number
(s − HELD_OUT_SEED_START) mod NUM_HELDOUT (``heldout_conditions``: never seen in training or by
the search). The sampler makes one model forward per step (CFG branches batched), so ``apply``'s
step n is sampler step n.
"""

from __future__ import annotations

from typing import Any

import torch

from ..geometry import Geometry
from ..models.mini_vdit import DEFAULT_GUIDANCE, DEFAULT_SIZE, NUM_HELDOUT
from .generator import HELD_OUT_SEED_START, EvaluateError, Video, check_options, positive_int

OPTIONS = ("frames", "height", "width", "guidance", "device", "dtype")
SIZES = ("frames", "height", "width")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class MiniVDiTGenerator:
    """Generates with a MiniVDiT ``model`` (trained or not) at frames × height × width pixels.

    ``given``: the sizes the user fixed; :meth:`fit` changes only the others.
    """

    steps_by_timestep = False

    def __init__(self, model: torch.nn.Module, *, name: str = "mini-vdit", frames: int = DEFAULT_SIZE[0],
                 height: int = DEFAULT_SIZE[1], width: int = DEFAULT_SIZE[2], guidance: float = DEFAULT_GUIDANCE,
                 given: tuple[str, ...] = SIZES) -> None:
        self.name = name
        self.transformer = model
        self.sizes = {"frames": positive_int("frames", frames), "height": positive_int("height", height),
                      "width": positive_int("width", width)}
        if isinstance(guidance, bool) or not isinstance(guidance, (int, float)) or not guidance >= 0:
            raise EvaluateError(f"-o guidance: must be a number ≥ 0, got {guidance!r}")
        self.guidance = float(guidance)
        self.given = tuple(given)
        self._conditions: list[Any] = []

    def _param(self) -> torch.Tensor:
        return next(self.transformer.parameters())

    def describe(self) -> dict[str, Any]:
        p = self._param()
        return {"name": self.name, **self.sizes, "guidance": self.guidance, "device": str(p.device),
                "dtype": str(p.dtype).removeprefix("torch."), "geometry": self.geometry().to_dict()}

    def geometry(self) -> Geometry:
        return self.transformer.geometry_for(self.sizes["frames"], self.sizes["height"], self.sizes["width"])

    def fit(self, geometry: Geometry) -> None:
        current = self.geometry()
        if current == geometry:
            return
        sizes = dict(self.sizes)
        for key in SIZES:
            have, want = getattr(current, key), getattr(geometry, key)
            if key not in self.given and have != want and (sizes[key] * want) % have == 0:
                sizes[key] = sizes[key] * want // have  # pixels per token are fixed by the patch size
        try:
            fitted = self.transformer.geometry_for(sizes["frames"], sizes["height"], sizes["width"])
        except ValueError:
            fitted = None
        if fitted != geometry:
            raise EvaluateError(f"-o frames/height/width: {self.name} at {self.sizes['frames']}×{self.sizes['height']}×"
                                f"{self.sizes['width']} attends over {current}, the plan over {geometry}")
        self.sizes = sizes

    def condition(self, seed: int) -> Any:
        from ..models.mini_vdit import heldout_conditions

        if not self._conditions:
            self._conditions = heldout_conditions(NUM_HELDOUT)
        return self._conditions[(seed - HELD_OUT_SEED_START) % NUM_HELDOUT]

    def generate(self, seed: int, steps: int) -> Video:
        from ..models.mini_vdit import make_noise, sample, to_frames

        cond = self.condition(seed)
        noise = make_noise(seed, **self.sizes)        # float32: the sampler integrates in float32
        with torch.no_grad():
            x0 = sample(self.transformer, [cond], noise, steps=steps, guidance=self.guidance)
        latents = x0.detach().float().cpu()
        return Video(latents=latents, frames=to_frames(latents).float().clamp(0, 1), condition=str(cond))


def load(**options: Any) -> MiniVDiTGenerator:
    """Factory of ``mini-vdit``: the shipped weights, options frames, height, width, guidance,
    device (default cuda when present) and dtype (default bfloat16 on CUDA, float32 on CPU)."""
    check_options("mini-vdit", options, OPTIONS)
    device = torch.device(options.pop("device", None) or ("cuda" if torch.cuda.is_available() else "cpu"))
    dtype = options.pop("dtype", None) or ("bfloat16" if device.type == "cuda" else "float32")
    if dtype not in DTYPES:
        raise EvaluateError(f"-o dtype: must be one of {', '.join(DTYPES)}, got {dtype!r}")
    from ..models.mini_vdit import load_pretrained

    model = load_pretrained(device=device, dtype=DTYPES[dtype])
    return MiniVDiTGenerator(model, given=tuple(k for k in SIZES if k in options), **options)


__all__ = ["MiniVDiTGenerator", "OPTIONS", "load"]
