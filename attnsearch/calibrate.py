"""Calibration: time the runtime's kernels over a grid that spans what plans contain, fit the cost model.

    table_path = calibrate("kernels")          # on a CUDA machine: kernels/<gpu-slug>.json

Three steps, each usable alone:

* :func:`default_grid` — the layers to time (pure CPU): for each kernel variant (head_dim ∈ {64, 128}
  × block size ∈ {64, 128}) several shapes from N = 512 to 75 600 and 8 to 40 heads; per shape
  single-family layers over densities 2–100 %, layers mixing the four families (several groups
  fused in one launch), layers with a few dense heads among very sparse ones (the longest-row term),
  plus cuDNN dense for the same shape and zero fills of skip heads. Parameters are found by
  bisection on exact block masks (:func:`attnsearch.bench.family_params`), so densities are real.
* :func:`measure` — time every spec on the GPU (device time: a CUDA graph of several calls over
  rotating input sets bigger than L2, median of replays; event timing where capture is impossible).
* :func:`fit` — per kernel variant, the five constants of :class:`~attnsearch.costmodel.LaunchParams`
  by least squares on log latency (relative error, so 20 µs and 200 ms layers weigh alike), with
  LBFGS from several starts; the fill by weighted linear least squares.

Points marked ``role = "holdout"`` are measured but never fitted: they are the accuracy check.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import random
import statistics
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from .costmodel import (DENSE_TILE, FillParams, HardwareError, HardwareTable, LaunchParams, gpu_slug, layer_features,
                        list_schedule, variant_key, work_order)
from .geometry import Geometry
from .patterns import SPARSE_FAMILIES

#: (head_dim, block size) → [(geometry, heads)] the grid times; the first shape of a variant is where
#: the runtime's autotuner picks its config (a mid/large one, as in real use).
GRID_SHAPES: dict[tuple[int, int], list[tuple[Geometry, int]]] = {
    (128, 128): [(Geometry(13, 30, 45, 226, "prefix"), 24), (Geometry(8, 16, 16), 8), (Geometry(8, 16, 16), 40),
                 (Geometry(8, 32, 32), 12), (Geometry(8, 32, 32), 40), (Geometry(13, 45, 56), 12),
                 (Geometry(13, 45, 56), 40), (Geometry(21, 45, 80), 12), (Geometry(21, 45, 80), 40)],
    (128, 64): [(Geometry(13, 30, 45, 226, "prefix"), 24), (Geometry(8, 16, 16), 8), (Geometry(8, 32, 32), 12),
                (Geometry(13, 45, 56), 12)],
    (64, 128): [(Geometry(8, 32, 32), 24), (Geometry(8, 16, 16), 8), (Geometry(13, 45, 56), 12)],
    (64, 64): [(Geometry(8, 32, 32), 24), (Geometry(4, 8, 16), 8), (Geometry(8, 16, 16), 8),
               (Geometry(13, 45, 56), 12)],
}
#: Shapes of the held-out accuracy check (the issue's acceptance shapes), never in the fit.
HOLDOUT_SHAPES = [(Geometry(13, 45, 56), 12), (Geometry(21, 45, 80), 40)]


# --- the grid (CPU) ---------------------------------------------------------------------------------


def _heads_spec(heads: Iterable[tuple[str, dict]]) -> list[list]:
    return [[p, dict(q)] for p, q in heads]


def _family_layer(geom: Geometry, block_size: int, num_heads: int, target: float,
                  families: Sequence[str], cache: dict) -> list[list]:
    """Heads cycling through ``families``, each at the density closest to ``target``."""
    from .bench import family_params

    out = []
    for h in range(num_heads):
        fam = families[h % len(families)]
        key = (geom, block_size, fam, round(target, 4))
        if key not in cache:
            cache[key] = family_params(fam, geom, block_size, target)[0]
        out.append([fam, dict(cache[key])])
    return out


def _spec(kind: str, geom: Geometry, heads: int, head_dim: int, block_size: int | None, *, layer=None,
          label: str, role: str = "grid", batch: int = 1, **extra) -> dict[str, Any]:
    return {"kind": kind, "label": label, "role": role, "geometry": geom.to_dict(), "heads": heads,
            "head_dim": head_dim, "block_size": block_size, "batch": batch, "layer": layer, **extra}


#: Extra cuDNN-only shapes, so each head_dim's dense model has points from one wave to hundreds.
DENSE_SHAPES = [(Geometry(4, 8, 16), 8), (Geometry(8, 16, 16), 8), (Geometry(8, 16, 16), 40),
                (Geometry(8, 32, 32), 12), (Geometry(8, 32, 32), 40), (Geometry(13, 30, 45, 226, "prefix"), 24),
                (Geometry(13, 45, 56), 12), (Geometry(13, 45, 56), 40), (Geometry(21, 45, 80), 12),
                (Geometry(21, 45, 80), 40)]


def default_grid(*, holdout: bool = True, seed: int = 0, quick: bool = False) -> list[dict[str, Any]]:
    """The calibration specs (JSON-ready dicts), grid first; ``quick``: two shapes per variant."""
    cache: dict = {}
    specs: list[dict[str, Any]] = []
    for (d, bs), shapes in GRID_SHAPES.items():
        for i, (geom, H) in enumerate(shapes[:2] if quick else shapes):
            big = geom.num_tokens * H > 2_000_000
            lay = lambda t, f=list(SPARSE_FAMILIES): _family_layer(geom, bs, H, t, f, cache)  # noqa: E731
            add = lambda layer, label, **kw: specs.append(  # noqa: E731
                _spec("sparse", geom, H, d, bs, layer=layer, label=label, **kw))
            add(lay(0.25), "mixed 25% (tunes)")
            for t in (0.03, 0.25, 0.6):
                add(lay(t, ["diagonal"]), f"diagonal {t:.0%}")
            for t in (0.05, 0.4):
                add(lay(t), f"mixed {t:.0%}")
            if d == 128 and bs == 128 and not big:
                for f, t in (("energy_decay", 0.12), ("vertical_stripe", 0.05)):
                    add(lay(t, [f]), f"{f} {t:.0%}")
            add([["dense", {}]] * H, "dense heads in kernel")
            add([["dense", {}]] + lay(0.03, ["diagonal"])[1:], "1 dense + diagonal 3%")
            quarter = max(1, H // 4)
            add([["dense", {}]] * quarter + lay(0.1)[quarter:], "1/4 dense + mixed 10%")
            if i == 0 and bs == 128 and d == 128:
                add(lay(0.15), "mixed 15% batch 2", batch=2)
    for d in (128, 64):
        for geom, H in (DENSE_SHAPES[::3] if quick else DENSE_SHAPES):
            if d == 64 and geom.num_tokens * H > 2_000_000:
                continue
            specs.append(_spec("dense", geom, H, d, None, label="cuDNN dense"))
    # Zero fills of skip heads: the op the runtime runs, over 10 kB … 1 GB.
    for geom, H in [(Geometry(4, 8, 16), 1), (Geometry(8, 16, 16), 4), (Geometry(8, 32, 32), 12),
                    (Geometry(13, 45, 56), 6), (Geometry(21, 45, 80), 20)]:
        specs.append(_spec("fill", geom, H, 128, None, label=f"fill {H} heads"))
    if holdout:
        specs += holdout_specs(seed=seed, count=6 if quick else 16, cache=cache)
    return specs


def holdout_specs(*, seed: int = 0, count: int = 20, cache: dict | None = None) -> list[dict[str, Any]]:
    """Random mixed-family layers at 5–60 % density on the acceptance shapes (B = 128, head_dim 128):
    per head a random family and its own density around the layer's; one layer in five also has a
    dense head, one in five a few skip heads."""
    from .bench import family_params

    cache = {} if cache is None else cache
    rng = random.Random(seed)
    out = []
    for geom, H in HOLDOUT_SHAPES:
        made = 0
        while made < count:
            target = rng.uniform(0.05, 0.6)
            heads = []
            for _ in range(H):
                fam = rng.choice(SPARSE_FAMILIES)
                t = min(0.95, max(0.01, target * math.exp(rng.gauss(0.0, 0.5))))
                t = round(t, 2)
                key = (geom, 128, fam, t)
                if key not in cache:
                    cache[key] = family_params(fam, geom, 128, t)[0]
                heads.append([fam, dict(cache[key])])
            kind = rng.random()
            if kind < 0.2:
                heads[rng.randrange(H)] = ["dense", {}]
            elif kind < 0.4:
                for h in rng.sample(range(H), max(1, H // 6)):
                    heads[h] = ["skip", {}]
            lp = _layer_plan(geom, H, 128, heads)
            if 0.05 <= lp.density <= 0.6:
                out.append(_spec("sparse", geom, H, 128, 128, layer=heads, role="holdout",
                                 label=f"holdout {made}", density=lp.density))
                made += 1
    return out


def _layer_plan(geom: Geometry, H: int, bs: int, heads: Sequence):
    from .plan import LayerPlan

    lp = LayerPlan.from_heads([(p, q) for p, q in heads], geom, bs)
    assert lp.num_heads == H
    return lp


# --- measurement (GPU) ------------------------------------------------------------------------------


def _inputs(shape, dtype, sets, seed=0):
    import torch

    gen = torch.Generator(device="cuda").manual_seed(seed)
    return [tuple(torch.randn(shape, device="cuda", dtype=dtype, generator=gen) for _ in range(3))
            for _ in range(sets)]


def _time_device(fn: Callable[[int], Any], sets: int, *, graph: bool, target_ms: float = 8.0) -> dict[str, Any]:
    """Device ms per call: CUDA-graph replays of ``calls`` calls (cycling input sets) when ``graph``,
    else CUDA events around calls queued behind a GPU sleep (so host dispatch stays out of the
    numbers, as in a graph). Median of replays."""
    import torch

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
        if g is None:  # hold the GPU ~20 ms so every call below is queued before the start event runs
            torch.cuda._sleep(int(3.5e7))
        a.record()
        runner()
        b.record()
        b.synchronize()
        times.append(a.elapsed_time(b) / calls)
    del g
    return {"ms": statistics.median(times), "min_ms": min(times), "max_ms": max(times), "calls": calls,
            "reps": reps, "method": method, "eager_ms": rough}


def measure(specs: Sequence[dict[str, Any]], *, dtype: str = "bfloat16", budget_s: float = 1e9,
            progress: Callable[[str], None] | None = print) -> list[dict[str, Any]]:
    """Time every spec on this machine's GPU; returns one point per spec (``error`` set if it failed).

    Stops starting new specs after ``budget_s`` seconds (the points so far are returned)."""
    import torch
    import torch.nn.functional as F
    from torch.nn.attention import SDPBackend, sdpa_kernel

    from .runtime import block_tables, select_backend, sparse_attention

    if not torch.cuda.is_available():
        raise HardwareError("calibrate needs a CUDA GPU (timing the kernels is the point); none is visible here")
    tdtype = getattr(torch, dtype)
    started = time.time()
    points = []
    cache: dict[tuple, list] = {}
    for n_spec, spec in enumerate(specs):
        if time.time() - started > budget_s:
            if progress:
                progress(f"time budget {budget_s:.0f}s reached: {len(specs) - n_spec} specs not measured")
            break
        geom = Geometry.from_dict(spec["geometry"])
        n, H, d, batch = geom.num_tokens, spec["heads"], spec["head_dim"], spec.get("batch", 1)
        shape = (batch, H, n, d)
        set_bytes = 3 * math.prod(shape) * 2
        sets = int(min(4, max(1, math.ceil(120e6 / set_bytes))))
        key = (shape, sets)
        if key not in cache:
            cache.clear()
            torch.cuda.empty_cache()
            cache[key] = _inputs(shape, tdtype, sets)
        inputs = cache[key]
        point = dict(spec)
        point.update(num_tokens=n)
        t0 = time.time()
        try:
            if spec["kind"] == "dense":
                def fn(i):
                    with sdpa_kernel(SDPBackend.CUDNN_ATTENTION):
                        return F.scaled_dot_product_attention(*inputs[i])
                point.update(_time_device(fn, sets, graph=True))
                point.update(tiles=None, items=None, max_row=None)
                if n * H <= 500_000:  # what an all-dense layer under apply() runs: SDPA's own choice
                    point["sdpa_default_ms"] = _time_device(lambda i: F.scaled_dot_product_attention(*inputs[i]),
                                                            sets, graph=True)["ms"]
            elif spec["kind"] == "fill":
                # The runtime's own op (triton_kernel.forward): a list index, so no graph capture.
                out = torch.empty((batch, 2 * H, n, d), device="cuda", dtype=tdtype)
                skip = list(range(0, 2 * H, 2))
                point.update(_time_device(lambda i: out.__setitem__((slice(None), skip), 0), 1, graph=False))
                point.update(bytes=math.prod(shape) * 2)
            else:
                lp = _layer_plan(geom, H, spec["block_size"], spec["layer"])
                f = layer_features(lp)
                point.update(tiles=f.tiles, items=f.items, max_row=f.max_row, density=lp.density,
                             computed_heads=f.computed_heads, skip_heads=f.skip_heads,
                             families=sorted({g.pattern for g in lp.groups}))
                # What the runtime runs: the backend "auto" dispatch picks (hopper or triton).
                point["backend"] = select_backend(*inputs[0], lp).name
                fn = lambda i: sparse_attention(*inputs[i], lp)  # noqa: E731
                point.update(_time_device(fn, sets, graph=f.skip_heads == 0))
            point["wall_s"] = round(time.time() - t0, 2)
        except Exception as err:  # noqa: BLE001  (one failing spec must not lose the others)
            point["error"] = f"{type(err).__name__}: {str(err)[:300]}"
            torch.cuda.synchronize()
        points.append(point)
        if progress:
            got = f"{point['ms']:.4f} ms ({point['method']})" if "ms" in point else point.get("error")
            progress(f"[{n_spec + 1}/{len(specs)} {time.time() - started:.0f}s] {spec['kind']} D={d} "
                     f"B={spec.get('block_size')} {shape} {spec['label']}: {got}")
        if n_spec % 20 == 19:
            block_tables.clear_cache()
    return points


def environment() -> dict[str, Any]:
    """Device and software of this machine (for the table header)."""
    import torch
    import triton

    props = torch.cuda.get_device_properties(0)
    env = {"device": props.name, "sm_count": props.multi_processor_count,
           "capability": list(torch.cuda.get_device_capability()), "torch": torch.__version__,
           "triton": triton.__version__, "cuda": torch.version.cuda,
           "cudnn": torch.backends.cudnn.version(), "memory_gb": round(props.total_memory / 2**30, 1)}
    import hashlib

    src = sorted((Path(__file__).parent / "runtime").glob("*.py"))
    env["runtime_source_sha256"] = hashlib.sha256(b"".join(p.read_bytes() for p in src)).hexdigest()[:16]
    try:
        from .runtime import block_tables, triton_kernel

        env["order"] = block_tables.DEFAULT_ORDER

        env["tuned_configs"] = {f"d{k[0]}_b{k[1]}_{str(k[2])[6:]}_tma{int(bool(k[3]))}": vars(v)
                                for k, v in triton_kernel._TUNED.items()}
    except Exception:  # noqa: BLE001  (informational only)
        pass
    return env


# --- fitting (CPU) ------------------------------------------------------------------------------------


def point_lengths(p: dict[str, Any], order: str = "head") -> np.ndarray:
    """Kept tiles per item of a sparse point, in the runtime's launch order (batch copies included)."""
    if "_lengths" not in p:
        geom = Geometry.from_dict(p["geometry"])
        f = layer_features(_layer_plan(geom, p["heads"], p["block_size"], p["layer"]))
        p["_lengths"] = work_order(f.counts, order, p.get("batch", 1)).astype(np.float64)
    return p["_lengths"]


def _scale_fit(span: np.ndarray, ms: np.ndarray) -> tuple[float, float, np.ndarray]:
    """(launch ms, ms per tile) of ms ≈ launch + span · per_tile, least squares on relative error."""
    A = np.stack([np.ones_like(span), span], 1) / ms[:, None]
    (launch, per_tile), *_ = np.linalg.lstsq(A, np.ones_like(ms), rcond=None)
    if launch < 0:  # launch ≥ 0: refit through the origin
        launch, per_tile = 0.0, float(np.sum(span / ms) / np.sum((span / ms) ** 2))
    pred = launch + span * per_tile
    return float(launch), float(per_tile), pred


def fit_launch(spans: Callable[[float, int], np.ndarray], ms: np.ndarray, *,
               item_grid: Sequence[float] = (0.0, 1.0, 2.0, 3.0, 4.0, 6.0, 8.0),
               slot_grid: Sequence[int] = (1, 2, 3, 4)) -> tuple[LaunchParams, np.ndarray]:
    """Fit LaunchParams: ``spans(item_tiles, slots_per_sm)`` gives every point's makespan in tiles;
    item_tiles and slots_per_sm by grid search (coarse, then ±0.5 in quarters), launch and tile_ns
    by least squares on relative error. Returns the params and their predictions."""
    ms = np.asarray(ms, dtype=np.float64)
    if len(ms) < 4:
        raise ValueError(f"fit needs at least 4 points for 4 parameters, got {len(ms)}")

    def score(a: float, occ: int):
        launch, per_tile, pred = _scale_fit(spans(a, occ), ms)
        return float(np.mean(np.log(pred / ms) ** 2)), a, occ, launch, per_tile, pred

    best = min((score(a, occ) for a in item_grid for occ in slot_grid), key=lambda r: r[0])
    fine = [best[1] + d for d in (-0.5, -0.25, 0.25, 0.5) if best[1] + d >= 0]
    best = min([best] + [score(a, best[2]) for a in fine], key=lambda r: r[0])
    _, a, occ, launch, per_tile, pred = best
    return LaunchParams(launch * 1e3, per_tile * 1e6, float(a), int(occ)), pred


def _tabulate_n(params: LaunchParams, num_tokens: Sequence[int], pred: np.ndarray,
                ms: np.ndarray) -> tuple[LaunchParams, np.ndarray]:
    """cuDNN's per-tile rate drifts with N (kernel choice, L2 reuse): tabulate the measured/modelled
    ratio per N (geometric mean over that N's points), applied to the tile time, log-linear between."""
    ratio: dict[int, list[float]] = {}
    for n, p, m in zip(num_tokens, pred, ms):
        ratio.setdefault(int(n), []).append(float(np.log(m / p)))
    launch = params.launch_us * 1e-3
    scale = []
    for n in sorted(ratio):
        scale.append((float(n), float(np.exp(np.mean(ratio[n])))))
    out = LaunchParams(params.launch_us, params.tile_ns, params.item_tiles, params.slots_per_sm, tuple(scale))
    f = np.interp(np.log(np.asarray(num_tokens, dtype=np.float64)), np.log([n for n, _ in scale]),
                  [x for _, x in scale])
    return out, launch + (pred - launch) * f


def fit_fill(nbytes, ms) -> FillParams:
    """ms = a + bytes·b by least squares on relative error (rows weighted 1/ms)."""
    nbytes, ms = np.asarray(nbytes, dtype=np.float64), np.asarray(ms, dtype=np.float64)
    A = np.stack([np.ones_like(nbytes), nbytes], 1) / ms[:, None]
    (a, b), *_ = np.linalg.lstsq(A, np.ones_like(ms), rcond=None)
    a, b = max(a, 0.0), max(b, 1e-15)
    return FillParams(float(a * 1e3), float(1.0 / (b * 1e6)))


def _errors(pred, meas) -> dict[str, float]:
    rel = np.abs(np.asarray(pred) / np.asarray(meas) - 1)
    return {"points": int(len(rel)), "median_abs_rel_err": float(np.median(rel)),
            "p90_abs_rel_err": float(np.quantile(rel, 0.9)), "max_abs_rel_err": float(rel.max()),
            "within_10pct": float((rel <= 0.10).mean())}


def fit(points: Sequence[dict[str, Any]], sm_count: int, order: str = "head") -> tuple[dict, dict, FillParams, dict]:
    """Fit every variant from the grid points (holdout and failed points are ignored).

    Returns (sparse params by variant key, dense params by "d<head_dim>", fill params, fit report)."""
    good = [p for p in points if "ms" in p and p.get("role", "grid") == "grid" and p["ms"] > 0]
    sparse, dense, report = {}, {}, {}
    groups: dict[tuple[str, str], list] = {}
    for p in good:
        if p["kind"] == "sparse" and not p.get("skip_heads"):
            groups.setdefault(("sparse", variant_key(p["head_dim"], p["block_size"])), []).append(p)
        elif p["kind"] == "dense":
            groups.setdefault(("dense", f"d{p['head_dim']}"), []).append(p)
    for (kind, key), pts in sorted(groups.items()):
        ms = np.array([p["ms"] for p in pts])
        if kind == "sparse":
            lengths = [point_lengths(p, order) for p in pts]
            spans = lambda a, occ, L=lengths: np.array([list_schedule(x + a, sm_count * occ) for x in L])  # noqa: E731
            params, pred = fit_launch(spans, ms)
            sparse[key] = params
        else:
            nq = np.array([math.ceil(p["num_tokens"] / DENSE_TILE) for p in pts], dtype=np.float64)
            items = np.array([p.get("batch", 1) * p["heads"] for p in pts]) * nq
            spans = lambda a, occ, nq=nq, items=items: np.ceil(items / (sm_count * occ)) * (nq + a)  # noqa: E731
            params, pred = fit_launch(spans, ms)
            params, pred = _tabulate_n(params, [p["num_tokens"] for p in pts], pred, ms)
            dense[key] = params
        report[f"{kind}.{key}"] = _errors(pred, ms)
    fills = [p for p in good if p["kind"] == "fill"]
    if not fills:
        raise ValueError("no zero-fill points measured: cannot fit the skip-head fill")
    fill = fit_fill([p["bytes"] for p in fills], [p["ms"] for p in fills])
    report["fill"] = _errors(fill.ms([p["bytes"] for p in fills]), [p["ms"] for p in fills])
    return sparse, dense, fill, report


def build_table(points: Sequence[dict[str, Any]], env: dict[str, Any]) -> HardwareTable:
    """A HardwareTable from measured points and the machine's environment dict."""
    order = env.get("order", "head")
    sparse, dense, fill, report = fit(points, env["sm_count"], order)
    graph = [p for p in points if p.get("method") == "graph" and p.get("kind") == "sparse"]
    extra = {"tuned_configs": env.get("tuned_configs", {}), "dtype": "bfloat16",
             "timing": "device time: CUDA-graph replays of several calls over rotating input sets (> L2), "
                       "median; CUDA events where capture is impossible (skip heads)"}
    if graph:  # host dispatch cost of one eager call, for reference (not in predictions)
        small = [p["eager_ms"] - p["ms"] for p in graph if p["ms"] < 0.05]
        if small:
            extra["host_overhead_ms"] = float(statistics.median(small))
    return HardwareTable(
        device=env["device"], sm_count=env["sm_count"], sparse=sparse, dense=dense, fill=fill,
        software={k: env[k] for k in ("torch", "triton", "cuda", "cudnn", "capability", "runtime_source_sha256")
                  if k in env},
        date=_dt.date.today().isoformat(), measured=True, fit=report, extra=extra, order=order,
        points=[{k: v for k, v in p.items() if not k.startswith("_")} for p in points])


def calibrate(out_dir: str | Path = "kernels", *, specs: Sequence[dict[str, Any]] | None = None,
              quick: bool = False, budget_s: float = 1e9, dtype: str = "bfloat16",
              progress: Callable[[str], None] | None = print) -> Path:
    """Time the kernels on this machine's GPU and write ``<out_dir>/<gpu-slug>.json``.

    ``specs``: what to time (default :func:`default_grid`, holdout included); ``quick``: two shapes
    per kernel variant; ``budget_s``: stop starting new measurements after this many seconds.
    """
    import torch

    if not torch.cuda.is_available():
        raise HardwareError("calibrate needs a CUDA GPU; none is visible here (the cost model then uses a "
                            "shipped table from kernels/)")
    specs = default_grid(quick=quick) if specs is None else specs
    points = measure(specs, dtype=dtype, budget_s=budget_s, progress=progress)
    env = environment()
    table = build_table(points, env)
    path = table.save(Path(out_dir) / f"{gpu_slug(env['device'])}.json")
    if progress:
        progress(f"wrote {path}")
    return path


def calibrate_command(out_dir: str = "kernels", quick: bool = False, budget_s: float = 1e9) -> Path:
    """Body of ``attnsearch calibrate``: the same as :func:`calibrate` with printed progress."""
    return calibrate(out_dir, quick=quick, budget_s=budget_s)


def save_points(points: Sequence[dict[str, Any]], env: dict[str, Any], path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"env": env, "points": list(points)}, indent=1, default=str) + "\n")
    return path


__all__ = ["GRID_SHAPES", "HOLDOUT_SHAPES", "build_table", "calibrate", "calibrate_command", "default_grid",
           "environment", "fit", "fit_fill", "fit_launch", "holdout_specs", "measure", "save_points"]
