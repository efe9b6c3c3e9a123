"""Per-layer latency of sparse attention against dense cuDNN SDPA and FlexAttention (CUDA).

    python -m attnsearch.bench --frames 21 --height 30 --width 52 --heads 12 --density 0.25
    python -m attnsearch.bench --pattern diagonal --params '{"rows": 4}' --heads 12
    python -m attnsearch.bench --plan plans/wan.json

Every timing: CUDA events around each call, after warm-up, median over ``reps`` calls queued back
to back (``time_ms``: the GPU's time per call, as a model that queues its layers sees it; the
host's cost per call is reported beside it, ``host_us``), inputs rotated among several fresh random
(never zero) sets. Effective TFLOP/s count the kept blocks only:
4·batch·H·N²·D·density / time (dense: density 1). FlexAttention gets the same block mask, built
from the block tables with ``BlockMask.from_kv_blocks`` (all kept blocks "full": no mask_mod),
so it does the same work as our kernel. Results are dicts (JSON-ready) naming the card.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import statistics
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
import torch.nn.functional as F

from .atomic_io import write_text_atomic
from .geometry import Geometry
from .patterns import SPARSE_FAMILIES, block_mask, density
from .plan import LayerPlan, Plan
from .runtime.block_tables import BlockTables, get_block_tables
from .telemetry import ClockSampler, smi_device_id

# --- building layer plans at a target density -----------------------------------------------------


def _bisect(make: Callable[[float], dict], lo: float, hi: float, pattern: str, geometry: Geometry,
            block_size: int, target: float, iters: int = 24) -> tuple[dict, float]:
    """Params of ``pattern`` from a monotone (increasing-density) one-number family, closest to target."""
    best, best_d = None, math.inf
    for _ in range(iters):
        mid = (lo + hi) / 2
        params = make(mid)
        d = density(block_mask(pattern, params, geometry, block_size))
        if abs(d - target) < abs(best_d - target):
            best, best_d = params, d
        lo, hi = (mid, hi) if d < target else (lo, mid)
    return best, best_d


def family_params(pattern: str, geometry: Geometry, block_size: int, target: float) -> tuple[dict, float]:
    """Parameters of ``pattern`` whose block-mask density is closest to ``target``, and that density."""
    g = geometry
    if pattern == "diagonal":
        return _bisect(lambda r: {"rows": r}, 0.0, float(g.frames * g.height), pattern, g, block_size, target)
    if pattern == "multi_diagonal":
        # Few neighbour frames with a wide band, or all frames with a thin one: take the closest.
        options = [_bisect(lambda r, f=f: {"rows": r, "frames": f}, 0.0, float(g.height), pattern, g,
                           block_size, target) for f in sorted({1, 2, max(1, g.frames // 4), g.frames - 1})
                   if f <= g.frames - 1]
        if not options:  # a single frame: multi_diagonal is the diagonal band
            return _bisect(lambda r: {"rows": r, "frames": 0}, 0.0, float(g.height), pattern, g, block_size,
                           target)
        return min(options, key=lambda o: abs(o[1] - target))
    if pattern == "energy_decay":
        options = [_bisect(lambda dec, s=s: {"decay": max(dec, 1e-6), "sink": s}, 0.0, 1.0, pattern, g,
                           block_size, target) for s in (False, True)]
        return min(options, key=lambda o: abs(o[1] - target))
    if pattern == "vertical_stripe":
        # A band worth ~half the target, the rest in evenly spaced global key blocks.
        nb = g.num_blocks(block_size)
        band, _ = _bisect(lambda r: {"rows": r}, 0.0, float(g.frames * g.height), "diagonal", g, block_size,
                          target / 2)
        best, best_d = None, math.inf
        lo, hi = 0, nb
        while lo <= hi:
            m = (lo + hi) // 2
            params = {"key_blocks": sorted({round(i * nb / m) % nb for i in range(m)}) if m else [],
                      "rows": band["rows"]}
            d = density(block_mask(pattern, params, g, block_size))
            if abs(d - target) < abs(best_d - target):
                best, best_d = params, d
            lo, hi = (m + 1, hi) if d < target else (lo, m - 1)
        return best, best_d
    if pattern in ("dense", "skip"):
        return {}, 1.0 if pattern == "dense" else 0.0
    raise ValueError(f"pattern: unknown {pattern!r}")


def mixed_layer_plan(geometry: Geometry, num_heads: int, block_size: int, target: float,
                     families: Sequence[str] = SPARSE_FAMILIES) -> LayerPlan:
    """A layer whose heads cycle through ``families``, each at the density closest to ``target``."""
    params = {f: family_params(f, geometry, block_size, target)[0] for f in families}
    heads = [(families[h % len(families)], params[families[h % len(families)]]) for h in range(num_heads)]
    return LayerPlan.from_heads(heads, geometry, block_size)


# --- timing -----------------------------------------------------------------------------------------


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
#: descriptors, the launch): the method of every figure before session 6, which cost the runtime's
#: ~1 ms layers 15-20% (reports/kernel/timing/). "sustained": calls back to back for seconds, as a
#: model's denoising loop runs them, timed once the card has reached its steady state. An H100 SXM
#: then sits at its 700 W cap with the SM clock at 1.37-1.68 GHz for every kernel measured, cuDNN and
#: a plain matmul included, and the runtime, cuDNN and Flex read 3-10% below their "queued" rates
#: (reports/kernel/power/).
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
    ±7% spread between calls with fresh inputs, reports/kernel/spread/)."""
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


def host_us(fn: Callable[[tuple], Any], inputs: Sequence[tuple], calls: int = 10) -> float:
    """The host's wall time per call of ``fn`` (µs) while the GPU is busy, so no call waits for it:
    what a call costs the CPU, and the GPU time under which a queued caller starves the GPU."""
    torch.cuda.synchronize()
    _spin(HEAD_START_MS + calls * 0.5)  # outlasts ``calls`` calls of up to 500 µs
    t0 = time.perf_counter()
    for i in range(calls):
        fn(inputs[i % len(inputs)])
    elapsed = time.perf_counter() - t0
    torch.cuda.synchronize()
    return elapsed / calls * 1e6


def flops(batch: int, heads: int, n: int, d: int, dens: float) -> float:
    """4·B·H·N²·D·density: QKᵀ and PV over the kept blocks."""
    return 4.0 * batch * heads * n * n * d * dens


def flex_block_mask(tables: BlockTables, n: int):
    """FlexAttention BlockMask with exactly the tables' kept blocks, all marked full (no mask_mod)."""
    from torch.nn.attention.flex_attention import BlockMask

    H, nb = tables.counts.shape
    idx = torch.zeros(1, H, nb, nb, dtype=torch.int32, device=tables.counts.device)
    idx[..., : tables.max_count] = tables.indices
    counts = tables.counts[None].contiguous()
    kwargs = dict(full_kv_num_blocks=counts, full_kv_indices=idx, BLOCK_SIZE=tables.block_size,
                  seq_lengths=(n, n))
    partial = (torch.zeros_like(counts), idx.clone())  # no partial blocks: nothing runs a mask_mod
    try:
        return BlockMask.from_kv_blocks(*partial, compute_q_blocks=False, **kwargs)
    except TypeError:  # older torch: no compute_q_blocks
        return BlockMask.from_kv_blocks(*partial, **kwargs)


_FLEX = None


def _flex():
    global _FLEX
    if _FLEX is None:
        from torch.nn.attention.flex_attention import flex_attention

        _FLEX = torch.compile(flex_attention, dynamic=False)
    return _FLEX


def flex_kernel_options(block_size: int) -> dict[str, int] | None:
    """Flex's tiles must divide the mask's block size (its default BLOCK_M is 128)."""
    return {"BLOCK_M": block_size, "BLOCK_N": block_size} if block_size < 128 else None


def cudnn_sdpa(q, k, v):
    from torch.nn.attention import SDPBackend, sdpa_kernel

    with sdpa_kernel(SDPBackend.CUDNN_ATTENTION):
        return F.scaled_dot_product_attention(q, k, v)


# --- benchmarks -----------------------------------------------------------------------------------


def dense_cudnn_ms(geometry: Geometry, num_heads: int, *, batch: int = 1, head_dim: int = 128,
                   dtype: torch.dtype = torch.bfloat16, warmup: int = 3, reps: int = 20,
                   timing: str = "queued") -> float:
    """Median ms of dense cuDNN SDPA for this shape (fresh random inputs; ``timing``: ``time_ms``'s mode)."""
    inputs = fresh_inputs((batch, num_heads, geometry.num_tokens, head_dim), dtype, 2)
    return time_ms(lambda x: cudnn_sdpa(*x), inputs, warmup, reps, mode=timing)["median"]


def bench_layer_plan(layer_plan: LayerPlan, *, batch: int = 1, head_dim: int = 128,
                     dtype: torch.dtype = torch.bfloat16, layout: str = "bhnd", warmup: int = 3,
                     reps: int = 20, input_sets: int = 2, cudnn: bool = True, flex: bool = True,
                     groups_alone: bool = True, config: Any = None,
                     dense_ms: float | None = None, timing: str = "queued",
                     sampler: ClockSampler | None = None) -> dict[str, Any]:
    """Time one layer plan on CUDA: our kernel, cuDNN dense, FlexAttention on the same blocks.

    Args:
        layer_plan: the layer (geometry gives N, num_heads gives H).
        batch, head_dim, dtype, layout: the inputs, [batch, H, N, head_dim] (``bnhd``: transposed
            views of [batch, N, H, head_dim]).
        config: a ``triton_kernel.KernelConfig`` (the triton backend with that config), or None
            for what ``sparse_attention`` runs: the backend "auto" picks (hopper on H100/H200 at
            block size 128, else triton with its tuned config).
        groups_alone: also time each head group as its own launch, to compare the fused layer
            with the sum of its groups.
        dense_ms: reuse a cuDNN time measured before for this shape (skips timing it again).
        timing: ``time_ms``'s mode for every timing ("queued": the GPU's time per call; "synced":
            each call alone, the host's launch work included; "sustained": seconds of calls each).
        sampler: a running ``ClockSampler`` (``clock_sampler``): sustained timings then come with
            "sparse_clock", "cudnn_clock" and "flex_clock" (SM MHz, watts, clock-limit reasons).
    Returns:
        JSON-ready dict: ms (median), effective TFLOP/s on kept blocks, speedups, per-group times.
    """
    from .runtime import triton_kernel
    from .runtime.dispatch import get_backend, select_backend

    geom, H = layer_plan.geometry, layer_plan.num_heads
    n = geom.num_tokens
    shape = (batch, H, n, head_dim)
    inputs = fresh_inputs(shape, dtype, input_sets, layout)
    scale = head_dim ** -0.5
    tables = get_block_tables(layer_plan, "cuda")
    out = torch.empty(shape, dtype=dtype, device="cuda")
    dens = layer_plan.density
    fl = flops(batch, H, n, head_dim, dens)
    dense_fl = flops(batch, H, n, head_dim, 1.0)
    backend = get_backend("triton") if config is not None else select_backend(*inputs[0], layer_plan)
    if backend.name == "triton":
        run = lambda x: triton_kernel.forward(*x, tables, scale, out=out, config=config)  # noqa: E731
    else:
        run = lambda x: backend.forward(*x, layer_plan, scale, out)  # noqa: E731
    run(inputs[0])  # tune (if config is None) and compile outside the timing
    tuned_key = (head_dim, layer_plan.block_size, dtype, triton_kernel.tma_supported(*inputs[0]),
                 out.device.index)
    used = config if config is not None else triton_kernel._TUNED.get(tuned_key)
    t = time_ms(run, inputs, warmup, reps, mode=timing, sampler=sampler)
    head_dens = layer_plan.head_densities()
    res: dict[str, Any] = {
        "card": card_name(), "shape": list(shape), "dtype": str(dtype).removeprefix("torch."),
        "layout": layout, "geometry": geom.to_dict(), "block_size": layer_plan.block_size, "density": dens,
        "groups": [{"pattern": g.pattern, "heads": len(g.heads),
                    "density": float(head_dens[list(g.heads)].mean())} for g in layer_plan.groups],
        "backend": backend.name,
        "config": None if backend.name != "triton" or used is None else vars(used),
        "timing": t["mode"], "sparse_ms": t["median"], "sparse_ms_min": t["min"],
        "sparse_tflops": fl / t["median"] / 1e9, "sparse_host_us": host_us(run, inputs),
        "target_speedup": 0.8 / dens if dens > 0 else None,
    }
    if "clock" in t:
        res["sparse_clock"] = t["clock"]
    if cudnn:
        if dense_ms is None:
            td = time_ms(lambda x: cudnn_sdpa(*x), inputs, warmup, reps, mode=timing, sampler=sampler)
            dense_ms = td["median"]
            if "clock" in td:
                res["cudnn_clock"] = td["clock"]
        res.update(cudnn_ms=dense_ms, cudnn_tflops=dense_fl / dense_ms / 1e9,
                   speedup_vs_cudnn=dense_ms / t["median"])
    if flex:
        bm = flex_block_mask(tables, n)
        fx = _flex()
        opts = flex_kernel_options(layer_plan.block_size)
        fn = lambda x: fx(*x, block_mask=bm, scale=scale, kernel_options=opts)  # noqa: E731
        fn(inputs[0])
        tf = time_ms(fn, inputs, warmup, reps, mode=timing, sampler=sampler)
        res.update(flex_ms=tf["median"], flex_tflops=fl / tf["median"] / 1e9,
                   flex_host_us=host_us(fn, inputs), speedup_vs_flex=tf["median"] / t["median"])
        if "clock" in tf:
            res["flex_clock"] = tf["clock"]
    computed_groups = [g for g in layer_plan.groups if g.pattern != "skip"]
    if groups_alone and (used is not None or backend.name == "hopper") and len(computed_groups) > 1:
        gt = get_block_tables(layer_plan, "cuda", "group")
        per = []
        for launch in gt.launches:
            def alone(x, work=launch.work):
                if backend.name == "hopper":
                    from .runtime import hopper_kernel

                    hopper_kernel.launch(*x, out, gt, work, scale)
                else:
                    triton_kernel.launch(*x, out, gt, work, scale, used)

            ms = time_ms(alone, inputs, warmup, reps, mode=timing)["median"]
            per.append({"heads": list(launch.heads), "ms": ms})
        total = sum(p["ms"] for p in per)
        res.update(groups_alone=per, groups_sum_ms=total, mixed_over_sum=t["median"] / total)
    return res


def bench_layer_plans(layer_plans: Sequence[LayerPlan], *,
                      on_layer: Callable[[int, int], None] | None = None, **kwargs: Any) -> list[dict[str, Any]]:
    """``bench_layer_plan`` of each, in order, timing dense cuDNN once (the layer plans share a shape)
    and reusing it; ``on_layer(done, total)`` after each (progress)."""
    rows: list[dict[str, Any]] = []
    dense_ms = None
    for lp in layer_plans:
        rows.append(bench_layer_plan(lp, dense_ms=dense_ms, **kwargs))
        dense_ms = rows[-1].get("cudnn_ms")
        if on_layer is not None:
            on_layer(len(rows), len(layer_plans))
    return rows


def bench_plan(plan: Plan, *, head_dim: int = 128, batch: int = 1, dtype: torch.dtype = torch.bfloat16,
               on_layer: Callable[[int, int], None] | None = None, **kwargs: Any) -> dict[str, Any]:
    """Every distinct layer plan of ``plan`` timed once; totals over all steps × layers vs dense cuDNN.
    ``on_layer(done, total)`` is called after each distinct layer plan (progress)."""
    uses: dict[LayerPlan, int] = {}
    for e in plan.schedule:
        for layer in range(plan.num_layers):
            lp = plan.layer_plan(e.start, layer)
            uses[lp] = uses.get(lp, 0) + (e.stop - e.start)
    dense_ms = dense_cudnn_ms(plan.geometry, plan.num_heads, batch=batch, head_dim=head_dim, dtype=dtype,
                              reps=kwargs.get("reps", 20), timing=kwargs.get("timing", "queued"))
    from .runtime.dense import dense_kernel_reasons

    n = plan.geometry.num_tokens
    probe = torch.empty(batch, plan.num_heads, n, head_dim, dtype=dtype, device="cuda")  # as apply's q, k, v
    rows = []
    for i, (lp, count) in enumerate(uses.items()):
        dense = all(g.pattern == "dense" for g in lp.groups)
        if dense and dense_kernel_reasons(probe, probe, probe, lp, {}):
            # apply() runs this through SDPA itself (cuDNN first on Hopper): the baseline's time.
            rows.append({"density": 1.0, "runs": "sdpa", "sparse_ms": dense_ms, "calls": count,
                         "sparse_tflops": flops(batch, plan.num_heads, n, head_dim, 1.0) / dense_ms / 1e9,
                         "shape": [batch, plan.num_heads, n, head_dim]})
        else:  # sparse, or all-dense on the Hopper kernel with every key block kept, as apply() runs it
            r = bench_layer_plan(lp, head_dim=head_dim, batch=batch, dtype=dtype, groups_alone=False,
                                 dense_ms=dense_ms, **kwargs)
            rows.append({**r, "runs": "dense kernel" if dense else "sparse", "calls": count})
        if on_layer is not None:
            on_layer(i + 1, len(uses))
    calls = plan.num_steps * plan.num_layers
    sparse_total = sum(r["sparse_ms"] * r["calls"] for r in rows)
    return {"card": card_name(), "layer_plans": rows, "calls": calls, "sparse_total_ms": sparse_total,
            "dense_total_ms": dense_ms * calls, "speedup_vs_cudnn": dense_ms * calls / sparse_total}


# --- command line -----------------------------------------------------------------------------------


def clock_cell(clock: dict[str, Any] | None) -> str:
    """"MHz, W" of a sustained timing's ``ClockSampler.window`` ("–" where none was taken)."""
    if not clock or clock.get("sm_mhz") is None:
        return "–"
    watts = clock.get("power_w")
    return f"{clock['sm_mhz']:.0f}, {'?' if watts is None else f'{watts:.0f}'}"


def _markdown(rows: list[dict[str, Any]]) -> str:
    head = ("| shape (B,H,N,D) | density | sparse ms | TFLOP/s (kept) | host µs per call | cuDNN ms "
            "| cuDNN TFLOP/s | Flex ms | speedup vs cuDNN | target 0.8/density | mixed / Σ groups "
            "| SM MHz, W (sparse) |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        def f(key: str, fmt: str = "{:.2f}", r: dict = r) -> str:
            return fmt.format(r[key]) if r.get(key) is not None else "–"

        shape = ",".join(map(str, r["shape"]))
        if r.get("layout", "bhnd") != "bhnd":
            shape += f" ({r['layout']} view)"
        cells = [shape, f"{r['density']:.3f}", f("sparse_ms"), f("sparse_tflops", "{:.0f}"),
                 f("sparse_host_us", "{:.0f}"), f("cudnn_ms"),
                 f("cudnn_tflops", "{:.0f}"), f("flex_ms"), f("speedup_vs_cudnn") + "×",
                 f("target_speedup") + "×", f("mixed_over_sum", "{:.3f}"), clock_cell(r.get("sparse_clock"))]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m attnsearch.bench", description=__doc__.split("\n\n")[0])
    ap.add_argument("--plan", type=Path, help="bench every distinct layer plan of this plan file")
    ap.add_argument("--pattern", help="one pattern for every head (default: all families mixed)")
    ap.add_argument("--params", default="{}", help="JSON params of --pattern")
    ap.add_argument("--density", type=float, nargs="*", default=[0.1, 0.25, 0.5],
                    help="target densities of the mixed-family layer (ignored with --pattern/--plan)")
    ap.add_argument("--frames", type=int, default=21)
    ap.add_argument("--height", type=int, default=30)
    ap.add_argument("--width", type=int, default=52)
    ap.add_argument("--text-tokens", type=int, default=0)
    ap.add_argument("--heads", type=int, default=12)
    ap.add_argument("--head-dim", type=int, default=128)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--block-size", type=int, default=128)
    ap.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16"])
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--timing", choices=TIMING_MODES, default="queued", help="time_ms's mode")
    ap.add_argument("--no-flex", action="store_true")
    ap.add_argument("--out", type=Path, help="JSON output (default reports/runtime/bench_<card>.json)")
    args = ap.parse_args(argv)
    if not torch.cuda.is_available():
        raise SystemExit("attnsearch.bench needs a CUDA device")
    dtype = getattr(torch, args.dtype)
    with clock_sampler(args.timing) as sampler:
        common = dict(head_dim=args.head_dim, batch=args.batch, dtype=dtype, reps=args.reps, timing=args.timing,
                      flex=not args.no_flex, sampler=sampler)
        if args.plan:
            from .plan import load_plan

            result: Any = bench_plan(load_plan(args.plan), **common)
            rows = result["layer_plans"]
        else:
            geom = Geometry(args.frames, args.height, args.width, args.text_tokens)
            if args.pattern:
                params = json.loads(args.params)
                plans = [LayerPlan.single(args.pattern, params, geom, args.heads, args.block_size)]
            else:
                plans = [mixed_layer_plan(geom, args.heads, args.block_size, d) for d in args.density]
            rows = bench_layer_plans(plans, **common)
            result = {"card": card_name(), "rows": rows}
    out = write_text_atomic(args.out or Path("reports/runtime") / f"bench_{card_name().replace(' ', '_')}.json",
                            json.dumps(result, indent=1) + "\n")
    print(f"{card_name()}\n{_markdown(rows)}\nwrote {out}")


if __name__ == "__main__":
    main()
