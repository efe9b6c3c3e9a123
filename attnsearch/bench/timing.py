"""Timing on CUDA: per-call timing in three modes (``time_ms``), device time through CUDA-graph
replay (``time_device``, what calibration measures), the host's cost per call, and the inputs.

Every timing: CUDA events around calls, after warm-up, inputs rotated among several fresh random
(never zero) sets.
"""

from __future__ import annotations

import contextlib
import statistics
import time
import warnings
from typing import Any, Callable, Sequence

import torch

from ..telemetry import ClockSampler, smi_device_id


def card_name() -> str:
    return torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"


def fresh_inputs(shape: Sequence[int], dtype: torch.dtype, sets: int, layout: str = "bhnd",
                 seed: int = 0) -> list[tuple[torch.Tensor, ...]]:
    """``sets`` independent random (q, k, v); ``bnhd`` gives [B, N, H, D].transpose(1, 2) views."""
    gen = torch.Generator(device="cuda").manual_seed(seed)
    b, h, n, d = shape
    out = []
    for _ in range(sets):
        if layout == "bnhd":
            make = lambda: torch.randn(b, n, h, d, device="cuda", dtype=dtype, generator=gen).transpose(1, 2)  # noqa: E731
        else:
            make = lambda: torch.randn(b, h, n, d, device="cuda", dtype=dtype, generator=gen)  # noqa: E731
        out.append((make(), make(), make()))
    return out


#: ``time_ms`` modes. "queued": the GPU's time per call, the host running ahead of it as in a model
#: that queues its layers (and as triton.testing.do_bench times). "synced": each call alone on an
#: idle GPU, its time then also holding the host's work before the kernel starts (Python, dispatch,
#: descriptors, the launch): which costs the runtime's ~1 ms
#: layers 15-20% against "queued". "sustained": calls back to back for seconds, as a
#: model's denoising loop runs them, timed once the card has reached its steady state. An H100 SXM
#: then sits at its 700 W cap with the SM clock at 1.37-1.68 GHz for every kernel measured, cuDNN and
#: a plain matmul included, and the runtime, cuDNN and Flex read 3-10% below their "queued" rates
#:.
TIMING_MODES = ("queued", "synced", "sustained")
#: GPU spin queued ahead of the timed calls, in ms: the host's head start.
HEAD_START_MS = 5.0
#: "sustained": seconds of back-to-back calls before the timed ones (clock and power settle), and of
#: timed calls.
SUSTAIN_RAMP_S, SUSTAIN_S = 1.0, 2.0
#: "sustained": calls the host keeps queued ahead of the GPU.
SUSTAIN_QUEUE = 8


def _spin(ms: float) -> None:
    """Queue ``ms`` (at ~1.5-2 GHz) of GPU spinning on the current stream."""
    torch.cuda._sleep(int(ms * 1.5e6))


def time_ms(fn: Callable[[tuple], Any], inputs: Sequence[tuple], warmup: int = 3,
            reps: int = 20, warmup_s: float = 0.2, mode: str = "queued",
            sampler: ClockSampler | None = None) -> dict[str, Any]:
    """Median / min / max ms of ``fn(inputs[i % len])`` over ``reps`` calls, each between CUDA events.

    ``mode`` (``TIMING_MODES``): "queued" records all calls' events without waiting in between,
    after ``HEAD_START_MS`` of GPU spinning, so the GPU runs them back to back while the host
    prepares the next: each event pair then holds the GPU's time for its call, or the host's where
    the host is the slower (then the GPU waits for it inside the pair). "synced" waits for each
    call before starting the next. "sustained" (``_time_sustained``) keeps calls queued back to back
    for ``SUSTAIN_RAMP_S`` + ``SUSTAIN_S`` seconds and times those of the last ``SUSTAIN_S``
    (``reps`` is then a minimum); with a running ``sampler`` (``telemetry.ClockSampler``) its result's
    "clock" holds the SM clock and board power over the timed calls.

    Warm-up: at least ``warmup`` calls and ``warmup_s`` seconds of them, so that the GPU's clocks
    have left their idle state before the first timed call (a precaution: it did not remove the
    ±7% spread between calls with fresh inputs)."""
    if mode not in TIMING_MODES:
        raise ValueError(f"mode: must be one of {TIMING_MODES}, got {mode!r}")
    start_s, i = time.perf_counter(), 0
    while i < warmup or time.perf_counter() - start_s < warmup_s:
        fn(inputs[i % len(inputs)])
        i += 1
        if i >= warmup:
            torch.cuda.synchronize()
    torch.cuda.synchronize()
    if mode == "sustained":
        return _time_sustained(fn, inputs, reps, sampler)
    events = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True))
              for _ in range(reps)]
    if mode == "queued":
        _spin(HEAD_START_MS)
    for i, (start, stop) in enumerate(events):
        start.record()
        fn(inputs[i % len(inputs)])
        stop.record()
        if mode == "synced":
            stop.synchronize()
    torch.cuda.synchronize()
    return _summary([start.elapsed_time(stop) for start, stop in events], mode)


def _summary(times: list[float], mode: str) -> dict[str, Any]:
    """``time_ms``'s result from the per-call times (ms)."""
    return {"median": statistics.median(times), "min": min(times), "max": max(times), "reps": len(times),
            "mode": mode}


def _time_sustained(fn: Callable[[tuple], Any], inputs: Sequence[tuple], min_reps: int,
                    sampler: ClockSampler | None = None) -> dict[str, Any]:
    """``time_ms``'s "sustained" mode: calls back to back, the host at most ``SUSTAIN_QUEUE`` calls
    ahead (it waits on the stop event of the call that many back, so the GPU never idles and the
    host never runs away); the calls after ``SUSTAIN_RAMP_S`` seconds, for ``SUSTAIN_S`` seconds
    and at least ``min_reps`` of them, are timed each between its own CUDA events. ``sampler``'s
    samples from the first timed call's launch to the end give the result's "clock"."""
    timed: list[tuple[torch.cuda.Event, torch.cuda.Event]] = []
    stops: list[torch.cuda.Event] = []
    t0, i = time.perf_counter(), 0
    timed_from = None
    while True:
        elapsed = time.perf_counter() - t0
        if elapsed >= SUSTAIN_RAMP_S + SUSTAIN_S and len(timed) >= min_reps:
            break
        if elapsed >= SUSTAIN_RAMP_S and timed_from is None:
            timed_from = t0 + elapsed
        start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn(inputs[i % len(inputs)])
        stop.record()
        if elapsed >= SUSTAIN_RAMP_S:
            timed.append((start, stop))
        stops.append(stop)
        if len(stops) > SUSTAIN_QUEUE:
            stops.pop(0).synchronize()
        i += 1
    torch.cuda.synchronize()
    res = _summary([start.elapsed_time(stop) for start, stop in timed], "sustained")
    if sampler is not None:
        res["clock"] = sampler.window(t0 if timed_from is None else timed_from, time.perf_counter())
    return res


@contextlib.contextmanager
def clock_sampler(timing: str):
    """For "sustained" timing, a running ``ClockSampler`` on the current GPU (pass it to
    ``bench_layer_plan``: each sustained figure then carries the SM clock and board power it was
    measured at); None for the other modes, or, with a warning, where ``nvidia-smi`` is missing."""
    if timing != "sustained":
        yield None
    elif not ClockSampler.available():
        warnings.warn("nvidia-smi is not on PATH: sustained timings carry no SM clock or board power",
                      RuntimeWarning, stacklevel=3)
        yield None
    else:
        with ClockSampler(smi_device_id()) as sampler:
            yield sampler


def host_us(fn: Callable[[tuple], Any], inputs: Sequence[tuple], calls: int = 10, reps: int = 1) -> float:
    """The host's wall time per call of ``fn`` (µs) while the GPU is busy, so no call waits for it:
    what a call costs the CPU, and the GPU time under which a queued caller starves the GPU.
    Median over ``reps`` rounds of ``calls`` calls, after one call outside them (a first call
    builds what later ones reuse: block tables, compiled kernels)."""
    fn(inputs[0])
    times = []
    for _ in range(reps):
        torch.cuda.synchronize()
        _spin(HEAD_START_MS + calls * 0.5)  # outlasts ``calls`` calls of up to 500 µs
        t0 = time.perf_counter()
        for i in range(calls):
            fn(inputs[i % len(inputs)])
        times.append((time.perf_counter() - t0) / calls * 1e6)
        torch.cuda.synchronize()
    return statistics.median(times)


def time_device(fn: Callable[[int], Any], sets: int, *, graph: bool = True, target_ms: float = 8.0) -> dict[str, Any]:
    """Device ms per call of ``fn(i)`` (i: the input set, cycling over ``sets``): CUDA-graph replays
    of enough calls to fill ``target_ms`` when ``graph`` and capture works, else CUDA events around
    calls queued behind a GPU spin (so host dispatch stays out of the numbers, as in a graph).
    Median of replays, with min, max, calls per replay, replays, method and one eager call's ms."""
    fn(0)
    torch.cuda.synchronize()
    a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    a.record()
    fn(1 % sets)
    b.record()
    b.synchronize()
    rough = max(a.elapsed_time(b), 1e-3)
    calls = int(min(64, max(1, target_ms // rough)))
    reps = 3 if rough * calls > 50 else 5
    method = "queued events"
    runner: Callable[[], Any] = lambda: [fn(i % sets) for i in range(calls)]  # noqa: E731
    g = None
    if graph:
        try:
            s = torch.cuda.Stream()
            s.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(s):
                fn(0)
            torch.cuda.current_stream().wait_stream(s)
            g = torch.cuda.CUDAGraph()
            with torch.cuda.graph(g):
                for i in range(calls):
                    fn(i % sets)
            runner, method = g.replay, "graph"
        except Exception as err:  # noqa: BLE001  (capture unsupported for this call: time queued calls)
            g = None
            method = f"queued events (graph failed: {type(err).__name__})"
            torch.cuda.synchronize()
    runner()
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        if g is None:  # hold the GPU so every call below is queued before the start event runs
            _spin(20.0)
        a.record()
        runner()
        b.record()
        b.synchronize()
        times.append(a.elapsed_time(b) / calls)
    del g
    return {"ms": statistics.median(times), "min_ms": min(times), "max_ms": max(times), "calls": calls,
            "reps": reps, "method": method, "eager_ms": rough}


def clock_cell(clock: dict[str, Any] | None) -> str:
    """"MHz, W" of a sustained timing's ``ClockSampler.window`` ("–" where none was taken)."""
    if not clock or clock.get("sm_mhz") is None:
        return "–"
    watts = clock.get("power_w")
    return f"{clock['sm_mhz']:.0f}, {'?' if watts is None else f'{watts:.0f}'}"


__all__ = ["HEAD_START_MS", "SUSTAIN_QUEUE", "SUSTAIN_RAMP_S", "SUSTAIN_S", "TIMING_MODES", "card_name",
           "clock_cell", "clock_sampler", "fresh_inputs", "host_us", "time_device", "time_ms"]
