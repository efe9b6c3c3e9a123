"""Measured error of a plan: run the model with the plan and compare its outputs with dense.

The error that matters is the model's, not the attention's. Two modes:

* ``steps`` (teacher-forced): the first N recorded inputs (one model forward per step, as the
  plan's steps are numbered) run under :func:`attnsearch.apply`, every step from the *dense*
  trajectory's input; each step's output is compared with the dense model's. Cheap (N forwards)
  but blind to compounding: an error at an early step does not change the later steps' inputs.
* ``trajectory``: N whole denoising trajectories (``ModelSpec.trajectories``: the spec's own noise
  and conditions, every step) run under the plan, and their final outputs — frames for video
  models — are compared with the dense trajectories'. It sees what a user sees, error compounded
  over the steps included; it costs N × steps forwards per measurement.

Figures: relative L2 ‖out − ref‖ / ‖ref‖ over everything compared, and PSNR
(:func:`attnsearch.metrics.psnr`, 10·log10(R² / MSE) in dB) with R the outputs' data range
(``ModelSpec.trajectory_range``: 1 for frames) or, where none is fixed (latents, velocities),
the reference's range.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import torch

from ..metrics import psnr
from .space import SearchError


def _flatten(out: Any) -> torch.Tensor:
    if isinstance(out, torch.Tensor):
        return out.detach().float().reshape(-1)
    if hasattr(out, "sample"):          # diffusers' output objects
        return _flatten(out.sample)
    if isinstance(out, (tuple, list)) and out:
        return torch.cat([_flatten(o) for o in out])
    if isinstance(out, dict) and out:
        return torch.cat([_flatten(v) for v in out.values()])
    raise SearchError(f"validate: cannot compare model outputs of type {type(out).__name__}")


#: Validation modes (see the module docstring).
VALIDATE_MODES = ("steps", "trajectory")


@dataclass
class Validator:
    """Reference outputs of the dense model on the first ``count`` inputs (``mode="steps"``) or
    trajectories (``mode="trajectory"``), computed once, at the first use of :attr:`reference`: a
    validator that measures nothing never runs the model.

    Each measurement is kept by what the plan runs (geometry, block size, schedule; not its
    metadata): a plan measured before (a search's trials often reach the same plan from different
    knobs) is answered without running the model again, with the figures its first run gave."""

    spec: Any
    count: int
    backend: str = "auto"
    mode: str = "steps"
    _measured: dict[tuple, dict[str, float]] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.mode not in VALIDATE_MODES:
            raise SearchError(f"validate mode: must be one of {', '.join(VALIDATE_MODES)}, got {self.mode!r}")
        if self.mode == "trajectory":
            have = self.spec.num_trajectories
            if not have:
                raise SearchError(f"validate mode trajectory: model {self.spec.name!r} has no sampler to run whole "
                                  "trajectories with (use --validate-mode steps)")
            if not 1 <= self.count <= have:
                raise SearchError(f"validate: {self.count} trajectories asked, the model has {have} (1 … {have})")
        elif not 1 <= self.count <= self.spec.num_steps:
            raise SearchError(f"validate: {self.count} inputs asked, the model has {self.spec.num_steps} "
                              f"(1 … {self.spec.num_steps})")
        self.data_range = self.spec.trajectory_range if self.mode == "trajectory" else None

    @cached_property
    def reference(self) -> torch.Tensor:
        """The dense model's outputs that plans are measured against (run once, when first asked)."""
        return self._run(None)

    def _run(self, plan) -> torch.Tensor:
        from ..models import split_input
        from ..runtime import apply

        if self.mode == "trajectory":
            target = self.spec.model if self.spec.pipeline is None else self.spec.pipeline
            with torch.no_grad():
                if plan is None:
                    return _flatten(self.spec.trajectories(self.count))
                with apply(target, plan, backend=self.backend):
                    return _flatten(self.spec.trajectories(self.count))
        outs = []
        model = self.spec.model
        with torch.no_grad():
            if plan is None:
                for entry in self.spec.inputs[: self.count]:
                    args, kwargs = split_input(entry)
                    outs.append(_flatten(model(*args, **kwargs)))
            else:
                with apply(model, plan, backend=self.backend):
                    for entry in self.spec.inputs[: self.count]:
                        args, kwargs = split_input(entry)
                        outs.append(_flatten(model(*args, **kwargs)))
        return torch.cat(outs)

    def measure(self, plan) -> dict[str, float]:
        """{"rel_l2", "psnr_db", "mse"} of the model run by ``plan`` against the dense reference (a new dict;
        a plan of the same content as one measured before is not run again)."""
        key = (plan.geometry, plan.block_size, plan.schedule)  # what runs; metadata aside
        if key not in self._measured:
            self._measured[key] = self._figures(self._run(plan))
        return dict(self._measured[key])

    def _figures(self, out: torch.Tensor) -> dict[str, float]:
        """{"rel_l2", "psnr_db", "mse"} of the outputs ``out`` against the dense reference (mse: mean
        squared difference, nan when ``out`` is not finite)."""
        ref = self.reference
        diff = (out - ref).double()
        rel = float(diff.norm() / ref.double().norm().clamp_min(1e-30))
        # A plan whose output is not finite has no PSNR; a constant reference has no range.
        finite = bool(torch.isfinite(out).all()) and (self.data_range is not None or float(ref.max() - ref.min()) > 0)
        return {"rel_l2": rel, "psnr_db": psnr(out, ref, self.data_range) if finite else math.nan,
                "mse": float(diff.pow(2).mean()) if bool(torch.isfinite(out).all()) else math.nan}


def attention_shape(spec) -> tuple[int, int, int, int]:
    """(batch, heads, N, head_dim) of the model's first attention call (one forward, captured)."""
    from ..profiling.capture import capture_attention
    from ..models import split_input

    seen: list[tuple[int, ...]] = []

    def consumer(call) -> None:
        if not seen:
            seen.append(tuple(call.query.shape))
        return None

    args, kwargs = split_input(spec.inputs[0])
    with torch.no_grad(), capture_attention(spec.model, consumer):
        spec.model(*args, **kwargs)
    if not seen:
        raise SearchError(f"model {spec.name!r} made no scaled_dot_product_attention call")
    return seen[0]  # type: ignore[return-value]


__all__ = ["VALIDATE_MODES", "Validator", "attention_shape"]
