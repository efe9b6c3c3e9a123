"""Whole-forward benchmarks (the Wan2.1 end-to-end and compile benchmarks): the timer, the mixed
plan they run and the small helpers they share.

``ForwardTimer``: median ms of a whole forward, each call between CUDA events after warm-up (a
forward is hundreds of ms: per-call synchronisation costs nothing measurable), or wall clock on
the CPU. ``mixed_forward_plan``: every layer mixes the four sparse families (diagonal,
multi_diagonal, vertical_stripe, energy_decay; the assignment rotated per layer) with parameters
from real block masks at the target density (``family_params``), layer targets cycling through
``LAYER_SCALES`` × the target. ``time_forward_modes``: one forward eager, compiled, in a CUDA graph
or both, dense or under a plan.
"""

from __future__ import annotations

import statistics
import time
from contextlib import ExitStack, contextmanager
from typing import Any, Callable

import torch

from ..geometry import Geometry
from ..patterns import SPARSE_FAMILIES
from ..plan import LayerPlan, Plan, ScheduleEntry
from ..runtime import apply
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


#: ``time_forward_modes``: eager; ``torch.compile(fullgraph=True)``; the eager forward captured in a
#: CUDA graph; the compiled forward captured in a CUDA graph.
MODES = ("eager", "compile", "graph", "compile+graph")


def capture_graph(fn, static_out: list) -> torch.cuda.CUDAGraph:
    """``fn()`` captured in a CUDA graph after a warm-up on a side stream; its output kept in
    ``static_out``."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        fn()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        static_out.append(fn())
    return graph


def time_forward_modes(model, kw: dict, timer: ForwardTimer, modes=MODES, *, cudnn: bool = False, plan=None,
                       backend: str = "auto") -> dict:
    """Time ``model(**kw)`` in each of ``modes`` (``MODES``): ``{mode: {"ms": timing, "out": output,
    "first_call_s": s}}``, or ``{"error": line}`` for a mode that cannot run. Dense when ``plan`` is
    None, else under ``apply(model, plan)`` at step 0; ``cudnn``: SDPA restricted to cuDNN.
    Graph modes capture after warm-up and time replays; the first call (compilation, tuning,
    block tables) is timed apart."""
    compiled = torch.compile(model, fullgraph=True)
    results = {}
    for mode in modes:
        net = compiled if mode.startswith("compile") else model
        ctx = apply(model, plan, auto_step=False, backend=backend) if plan is not None else None

        def forward(net=net, ctx=ctx):
            if ctx is not None:
                ctx.set_step(0)
            with torch.no_grad(), forced_cudnn(cudnn):
                return net(**kw)[0]

        t0 = time.time()
        try:
            with ExitStack() as stack:
                if ctx is not None:
                    stack.enter_context(ctx)
                out = forward()  # first call: compilation, Triton tuning, block tables
                first_s = time.time() - t0
                if mode.endswith("graph"):
                    static: list = []
                    graph = capture_graph(forward, static)
                    timing = timer(graph.replay)
                    graph.replay()
                    torch.cuda.synchronize()
                    out = static[0].clone()
                else:
                    timing = timer(forward)
            results[mode] = {"ms": timing, "out": out, "first_call_s": first_s}
        except Exception as err:  # noqa: BLE001  (a mode that cannot run is reported, the others still run)
            results[mode] = {"error": f"{type(err).__name__}: {str(err).splitlines()[0][:300]}"}
        r = results[mode]
        print(f"  {mode:14s} " + (f"{r['ms']['median']:.1f} ms" if "ms" in r else f"failed ({r['error']})"), flush=True)
    return results


__all__ = ["ForwardTimer", "LAYER_SCALES", "MODES", "capture_graph", "forced_cudnn", "mixed_forward_plan", "rel_l2",
           "time_forward_modes"]
