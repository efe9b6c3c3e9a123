"""Measured error of a plan: run the model with the plan and compare its outputs with dense.

The error that matters is the model's, not the attention's: ``validate=N`` runs the first N inputs
(one model forward per step, as the plan's steps are numbered) under :func:`attnsearch.apply`,
and compares every step's output with the dense model's:

* relative L2: ‖out − ref‖ / ‖ref‖ over all N outputs stacked,
* PSNR: :func:`attnsearch.metrics.psnr`, 10·log10(peak² / MSE) in dB with peak = the reference's
  range (max − min): model outputs (latents, velocities) have no fixed data range.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
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


@dataclass
class Validator:
    """Reference outputs of the dense model on the first ``count`` inputs, computed once."""

    spec: Any
    count: int
    backend: str = "auto"

    def __post_init__(self) -> None:
        if not 1 <= self.count <= self.spec.num_steps:
            raise SearchError(f"validate: {self.count} inputs asked, the model has {self.spec.num_steps} "
                              f"(1 … {self.spec.num_steps})")
        self.reference = self._run(None)

    def _run(self, plan) -> torch.Tensor:
        from ..models import split_input
        from ..runtime import apply

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
        """{"rel_l2", "psnr_db"} of the model run by ``plan`` against the dense reference."""
        out = self._run(plan)
        ref = self.reference
        diff = (out - ref).double()
        rel = float(diff.norm() / ref.double().norm().clamp_min(1e-30))
        # A plan whose output is not finite has no PSNR; a constant reference has no range.
        finite = bool(torch.isfinite(out).all()) and float(ref.max() - ref.min()) > 0
        return {"rel_l2": rel, "psnr_db": psnr(out, ref) if finite else math.nan}


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


__all__ = ["Validator", "attention_shape"]
