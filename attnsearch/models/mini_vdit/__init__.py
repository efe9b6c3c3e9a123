"""mini-vdit: a small video diffusion transformer trained by this project, the reference model
whose attention nobody planted.

Wan-like (3-D patch embedding, 3-D RoPE, adaLN-zero timestep conditioning, RMS-normed q/k,
cross-attention to a text-like condition, rectified flow, Euler sampling with classifier-free
guidance), 6 blocks × 4 heads × head_dim 64 over pixels: a 16 × 64 × 64 clip is 4,096 tokens.
It learned procedurally rendered clips (``data``): a coloured object of a given kind moving in
a given direction over a panning, zooming background with grey distractors. The weights ship in
``weights/`` (fp16 safetensors) with their model card; ``train`` is the script that made them.

    from attnsearch.models.mini_vdit import load_pretrained, heldout_conditions, make_noise, sample, to_frames
    model = load_pretrained()
    conds = heldout_conditions(4)
    noise = torch.cat([make_noise(seed) for seed in range(4)])
    frames = to_frames(sample(model, conds, noise))          # [4, 3, 16, 64, 64] in [0, 1]

Registered as ``mini-vdit`` (``attnsearch profile --model mini-vdit``): :func:`build` records the
model inputs along real denoising trajectories of several training conditions, one entry per step.
"""

from __future__ import annotations

from pathlib import Path

import torch

from ...geometry import Geometry
from .checker import condition_accuracy, read_clip
from .data import (BACKGROUNDS, COLOURS, KINDS, MOTIONS, NUM_HELDOUT, Condition, condition_tokens,
                   heldout_conditions, render, train_conditions)
from .model import WEIGHTS_DIR, WEIGHTS_FILE, MiniVDiT, MiniVDiTConfig, read_weights
from .sampling import DEFAULT_GUIDANCE, DEFAULT_STEPS, make_noise, sample, time_grid, to_frames

#: Size of the clips the model was mainly trained on (frames, height, width in pixels).
DEFAULT_SIZE = (16, 64, 64)
#: Seeds of the noise the search and profiling use; evaluation seeds start at EVAL_SEED_START.
PROFILE_SEED_START = 0
EVAL_SEED_START = 10_000


class WeightsMissingError(FileNotFoundError, ValueError):
    """The shipped weights are not where the package expects them."""


def weights_path() -> Path:
    return WEIGHTS_DIR / WEIGHTS_FILE


def load_pretrained(device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32,
                    path: str | Path | None = None) -> MiniVDiT:
    """The trained model (eval mode) from the shipped fp16 weights, cast to ``dtype``."""
    path = Path(path) if path is not None else weights_path()
    if not path.is_file():
        raise WeightsMissingError(f"mini-vdit weights not found at {path} (train them with "
                                  "python -m attnsearch.models.mini_vdit.train, then --export)")
    config, state, _ = read_weights(path)
    model = MiniVDiT(config)
    model.load_state_dict(state)
    return model.to(device=device, dtype=dtype).eval()


def build(conditions: int = 2, steps: int = DEFAULT_STEPS, frames: int = DEFAULT_SIZE[0],
          height: int = DEFAULT_SIZE[1], width: int = DEFAULT_SIZE[2], guidance: float = DEFAULT_GUIDANCE,
          seed: int = PROFILE_SEED_START, device: str = "cpu"):
    """Registry factory of ``mini-vdit``: a ModelSpec whose inputs are the model's forwards along
    real denoising trajectories (dense sampling) of ``conditions`` training conditions from noise
    seeds ``seed``, ``seed + 1``, …, every sampling step one input (conditional and null branches
    batched, as the sampler runs them). Its ``trajectories(n)`` samples the first ``n`` of those
    from the same noise and returns their frames in [0, 1]."""
    from .. import ModelSpec, fingerprint

    for name, value, lo in (("conditions", conditions, 1), ("steps", steps, 1), ("frames", frames, 1),
                            ("height", height, 4), ("width", width, 4), ("seed", seed, 0)):
        if not isinstance(value, int) or isinstance(value, bool) or value < lo:
            raise ValueError(f"mini-vdit: option {name} must be an integer ≥ {lo}, got {value!r}")
    model = load_pretrained(device=device)
    geometry = model.geometry_for(frames, height, width)
    conds = train_conditions(conditions, seed=seed)
    noise = torch.cat([make_noise(seed + i, frames, height, width) for i in range(conditions)])
    inputs: list = []
    sample(model, conds, noise, steps=steps, guidance=guidance,
           on_step=lambda i, x, t, c: inputs.append((x.clone(), t.clone(), c.clone())))

    def trajectories(n: int) -> torch.Tensor:
        return to_frames(sample(model, conds[:n], noise[:n], steps=steps, guidance=guidance))

    return ModelSpec(name="mini-vdit", model=model, geometry=geometry, inputs=inputs,
                     fingerprint=fingerprint(model, config=model.config.to_dict()),
                     trajectories=trajectories, num_trajectories=conditions, trajectory_range=1.0)


__all__ = [
    "BACKGROUNDS", "COLOURS", "DEFAULT_GUIDANCE", "DEFAULT_SIZE", "DEFAULT_STEPS", "EVAL_SEED_START", "KINDS",
    "MOTIONS", "NUM_HELDOUT", "PROFILE_SEED_START", "Condition", "Geometry", "MiniVDiT", "MiniVDiTConfig",
    "WeightsMissingError", "build", "condition_accuracy", "condition_tokens", "heldout_conditions",
    "load_pretrained", "make_noise", "read_clip", "render", "sample", "time_grid", "to_frames",
    "train_conditions", "weights_path",
]
