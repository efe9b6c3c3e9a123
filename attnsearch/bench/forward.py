"""Whole-forward benchmarks (the Wan2.1 end-to-end and compile benchmarks): the timer, the mixed
plan they run and the small helpers they share.

``ForwardTimer``: median ms of a whole forward, each call between CUDA events after warm-up (a
forward is hundreds of ms: per-call synchronisation costs nothing measurable), or wall clock on
the CPU. ``mixed_forward_plan``: every layer mixes the four sparse families (diagonal,
multi_diagonal, vertical_stripe, energy_decay; the assignment rotated per layer) with parameters
from real block masks at the target density (``family_params``), layer targets cycling through
``LAYER_SCALES`` × the target.
"""

from __future__ import annotations

import statistics
import time
from contextlib import contextmanager
from typing import Any, Callable

import torch

from ..geometry import Geometry
from ..patterns import SPARSE_FAMILIES
from ..plan import LayerPlan, Plan, ScheduleEntry
from .layers import family_params

LAYER_SCALES = (0.75, 1.0, 1.25)


def mixed_forward_plan(geometry: Geometry, num_layers: int, num_heads: int, block_size: int, target: float,
                       num_steps: int = 1, **meta: Any) -> Plan:
    """Mixed-family layers at real block-mask densities around ``target`` (module docstring); every
    one of ``num_steps`` steps runs the same layers."""
    params = {}
    for scale in LAYER_SCALES:
        for fam in SPARSE_FAMILIES:
            params[scale, fam] = family_params(fam, geometry, block_size, target * scale)[0]
    layers = []
    for layer in range(num_layers):
        scale = LAYER_SCALES[layer % len(LAYER_SCALES)]
        heads = [(SPARSE_FAMILIES[(h + layer) % len(SPARSE_FAMILIES)],
                  params[scale, SPARSE_FAMILIES[(h + layer) % len(SPARSE_FAMILIES)]]) for h in range(num_heads)]
        layers.append(LayerPlan.from_heads(heads, geometry, block_size))
    return Plan(geometry, block_size, num_steps, num_layers, num_heads, (ScheduleEntry(0, num_steps, tuple(layers)),),
                **meta)


class ForwardTimer:
    """Median ms of ``fn()`` over ``reps`` calls after ``warmup`` (CUDA events, or perf_counter on CPU)."""

    def __init__(self, cuda: bool, warmup: int, reps: int) -> None:
        self.cuda, self.warmup, self.reps = cuda, warmup, reps

    def __call__(self, fn: Callable[[], Any]) -> dict[str, float]:
        for _ in range(self.warmup):
            fn()
        if self.cuda:
            torch.cuda.synchronize()
        times = []
        for _ in range(self.reps):
            if self.cuda:
                start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                fn()
                stop.record()
                stop.synchronize()
                times.append(start.elapsed_time(stop))
            else:
                t0 = time.perf_counter()
                fn()
                times.append((time.perf_counter() - t0) * 1e3)
        return {"median": statistics.median(times), "min": min(times), "max": max(times), "reps": self.reps}


@contextmanager
def forced_cudnn(enabled: bool):
    """SDPA restricted to cuDNN's kernel while ``enabled`` (the dense baseline on Hopper)."""
    if not enabled:
        yield
        return
    from torch.nn.attention import SDPBackend, sdpa_kernel

    with sdpa_kernel(SDPBackend.CUDNN_ATTENTION):
        yield


def rel_l2(a: torch.Tensor, b: torch.Tensor) -> float:
    """‖a − b‖ / ‖b‖ in float32."""
    return float((a.float() - b.float()).norm() / b.float().norm())


__all__ = ["ForwardTimer", "LAYER_SCALES", "forced_cudnn", "mixed_forward_plan", "rel_l2"]
