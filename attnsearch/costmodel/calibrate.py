"""Calibration: the grid of layers to time (pure CPU), their measurement through ``bench`` (GPU),
and the table fitted to them (``fit``).

    table_path = calibrate("kernels")          # on a CUDA machine: kernels/<gpu-slug>.json

* :func:`default_grid` — for each kernel (head_dim ∈ {64, 128} × block size ∈ {64, 128}) several
  shapes from N = 512 to 75 600 and 8 to 40 heads; per shape single-family layers over densities
  2–100 %, layers mixing the four families (several groups fused in one launch), layers with a few
  dense heads among very sparse ones (the longest-row term), plus cuDNN dense and zero fills of
  skip heads. Where the device runs FP8 products (compute capability ≥ 8.9: on Hopper the Hopper
  kernel, else the Triton kernel, as "auto" picks), the same layers on a subset
  of each kernel's shapes with ``precision = "fp8"`` (the kernel's launches alone; held out: the
  whole call) and the FP8 quantization pass (kind "quantize") over 10 kB … 1 GB of q, k and v.
  Parameters are found by bisection on exact block masks (``bench.family_params``).
* :func:`describe_spec` — a spec's point before timing: its features (CPU).
* :func:`measure` — every spec timed on the GPU with ``bench.time_device`` (CUDA-graph replay of
  several calls over rotating input sets bigger than L2), each op as the runtime runs it; calls of
  under HOST_MAX_MS also get their host dispatch time (``bench.host_us``): a sparse layer as it
  is and with a skip head, an FP8 layer all FP8 and half native (the parts ``fit.fit_host``
  separates), cuDNN as it is.

Points marked ``role = "holdout"`` are measured but never fitted: they are the accuracy check.
A spec's ``precision`` ("native" where absent) is what its sparse kernel's products run in.
"""

from __future__ import annotations

import json
import math
import random
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

from ..atomic_io import write_text_atomic
from ..bench import family_params, fresh_inputs, host_us, time_device
from ..geometry import Geometry
from ..patterns import SPARSE_FAMILIES
from ..runtime.backends import TritonBackend
from ..layer_plan import PRECISIONS
from ..runtime.schedule import DEFAULT_ORDER
from .fit import build_table, spec_layer_plan
from .model import layer_features, quantize_bytes
from .table import HOST_PARTS, HardwareError, gpu_slug

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
#: Shapes of the held-out accuracy check (Wan2.1-1.3B's and Wan2.1-14B's 720p layers), never in the fit.
HOLDOUT_SHAPES = [(Geometry(13, 45, 56), 12), (Geometry(21, 45, 80), 40)]
#: The FP8 quantization pass over q, k and v of these (geometry, heads) at head_dim 128: 12 kB … 1.2 GB.
QUANTIZE_SHAPES = [(Geometry(1, 4, 4), 1), (Geometry(4, 8, 16), 1), (Geometry(8, 16, 16), 4),
                   (Geometry(8, 32, 32), 12), (Geometry(13, 45, 56), 12), (Geometry(21, 45, 80), 20)]
#: Calls of at most this device time also get their host dispatch cost measured (``bench.host_us``,
#: median of HOST_REPS rounds): where it can bound an eager call's latency.
HOST_MAX_MS = 2.0
HOST_REPS = 3
#: What a point times: a sparse layer, cuDNN dense, the skip heads' zero fill, the FP8 quantization pass.
POINT_KINDS = ("sparse", "dense", "fill", "quantize")


# --- the grid (CPU) ---------------------------------------------------------------------------------


def _heads_spec(heads: Iterable[tuple[str, dict]]) -> list[list]:
    return [[p, dict(q)] for p, q in heads]


def _family_layer(geom: Geometry, block_size: int, num_heads: int, target: float,
                  families: Sequence[str], cache: dict) -> list[list]:
    """Heads cycling through ``families``, each at the density closest to ``target``."""
    out = []
    for h in range(num_heads):
        fam = families[h % len(families)]
        key = (geom, block_size, fam, round(target, 4))
        if key not in cache:
            cache[key] = family_params(fam, geom, block_size, target)[0]
        out.append([fam, dict(cache[key])])
    return out


def _spec(kind: str, geom: Geometry, heads: int, head_dim: int, block_size: int | None, *, layer=None,
          label: str, role: str = "grid", batch: int = 1, precision: str = "native", **extra) -> dict[str, Any]:
    return _in_precision({"kind": kind, "label": label, "role": role, "geometry": geom.to_dict(), "heads": heads,
                          "head_dim": head_dim, "block_size": block_size, "batch": batch, "layer": layer, **extra},
                         precision)


def _in_precision(spec: dict[str, Any], precision: str) -> dict[str, Any]:
    """``spec`` with its products in ``precision`` (the field is written only where not native)."""
    if precision == "native":
        return spec
    return dict(spec, precision=precision, label=f"{precision} {spec['label']}")


def _shape_specs(geom: Geometry, H: int, d: int, bs: int, first: bool, cache: dict,
                 precision: str = "native") -> list[dict[str, Any]]:
    """The sparse layers timed on one shape of a kernel (``first``: its tuning shape)."""
    specs: list[dict[str, Any]] = []
    big = geom.num_tokens * H > 2_000_000
    lay = lambda t, f=list(SPARSE_FAMILIES): _family_layer(geom, bs, H, t, f, cache)  # noqa: E731
    add = lambda layer, label, **kw: specs.append(  # noqa: E731
        _spec("sparse", geom, H, d, bs, layer=layer, label=label, precision=precision, **kw))
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
    if first and bs == 128 and d == 128:
        add(lay(0.15), "mixed 15% batch 2", batch=2)
    return specs


def fp8_shapes(shapes: Sequence[tuple[Geometry, int]], quick: bool = False) -> list[tuple[Geometry, int]]:
    """The shapes of a kernel whose layers are also timed in FP8: its tuning shape, every other
    shape after it and its last one (quick: the quick grid's two)."""
    if quick:
        return list(shapes[:2])
    picked = [0, *range(1, len(shapes), 2)]
    if picked[-1] != len(shapes) - 1:
        picked.append(len(shapes) - 1)
    return [shapes[i] for i in picked]


def fp8_kernels(capability: Sequence[int] | None, dtype: str = "bfloat16") -> list[tuple[int, int]]:
    """The (head_dim, block size) of GRID_SHAPES whose FP8 kernel ``TritonBackend`` runs on a CUDA
    device of ``capability`` (None: no CUDA device, none) with ``dtype`` inputs."""
    if capability is None:
        return []
    import torch

    cap = tuple(int(c) for c in capability)
    return [(d, bs) for d, bs in GRID_SHAPES
            if not TritonBackend.not_supported_reasons(device="cuda", capability=cap, dtype=getattr(torch, dtype),
                                                       head_dim=d, block_size=bs, precision="fp8")]


#: Extra cuDNN-only shapes, so each head_dim's dense model has points from one wave to hundreds.
DENSE_SHAPES = [(Geometry(4, 8, 16), 8), (Geometry(8, 16, 16), 8), (Geometry(8, 16, 16), 40),
                (Geometry(8, 32, 32), 12), (Geometry(8, 32, 32), 40), (Geometry(13, 30, 45, 226, "prefix"), 24),
                (Geometry(13, 45, 56), 12), (Geometry(13, 45, 56), 40), (Geometry(21, 45, 80), 12),
                (Geometry(21, 45, 80), 40)]


def default_grid(*, holdout: bool | None = None, seed: int = 0, quick: bool = False,
                 capability: Sequence[int] | None = None, dtype: str = "bfloat16") -> list[dict[str, Any]]:
    """The calibration specs (JSON-ready dicts), grid first; ``quick``: two shapes per kernel and every
    other dense shape, still at least ``fit.MIN_POINTS`` points for every kernel the fit needs.
    ``holdout``: add the held-out layers (never fitted: the accuracy check); default: unless quick.
    ``capability``: the CUDA device's compute capability; for each kernel whose FP8 variant it runs
    (:func:`fp8_kernels`), its layers on :func:`fp8_shapes` in FP8 and the quantization pass
    (QUANTIZE_SHAPES) follow the native grid (None, or a device without FP8: the native grid alone)."""
    holdout = not quick if holdout is None else holdout
    cache: dict = {}
    specs: list[dict[str, Any]] = []
    for (d, bs), shapes in GRID_SHAPES.items():
        for i, (geom, H) in enumerate(shapes[:2] if quick else shapes):
            specs += _shape_specs(geom, H, d, bs, i == 0, cache)
    for d in (128, 64):
        for geom, H in (DENSE_SHAPES[::2] if quick else DENSE_SHAPES):
            if d == 64 and geom.num_tokens * H > 2_000_000:
                continue
            specs.append(_spec("dense", geom, H, d, None, label="cuDNN dense"))
    # Zero fills of skip heads: the op the runtime runs, over 10 kB … 1 GB.
    for geom, H in [(Geometry(4, 8, 16), 1), (Geometry(8, 16, 16), 4), (Geometry(8, 32, 32), 12),
                    (Geometry(13, 45, 56), 6), (Geometry(21, 45, 80), 20)]:
        specs.append(_spec("fill", geom, H, 128, None, label=f"fill {H} heads"))
    fp8 = fp8_kernels(capability, dtype)
    for d, bs in fp8:
        for i, (geom, H) in enumerate(fp8_shapes(GRID_SHAPES[d, bs], quick)):
            specs += _shape_specs(geom, H, d, bs, i == 0, cache, precision="fp8")
    if fp8:
        specs += [_spec("quantize", geom, H, 128, 128, label=f"quantize {H} heads") for geom, H in QUANTIZE_SHAPES]
    if holdout:
        held = holdout_specs(seed=seed, count=6 if quick else 16, cache=cache)
        specs += held
        if (128, 128) in fp8:  # the first held-out layer of each shape (they come shape by shape) in FP8
            specs += [_in_precision(h, "fp8") for i, h in enumerate(held)
                      if i == 0 or h["geometry"] != held[i - 1]["geometry"]]
    return specs


def holdout_specs(*, seed: int = 0, count: int = 20, cache: dict | None = None) -> list[dict[str, Any]]:
    """Random mixed-family layers at 5–60 % density on the Wan shapes of HOLDOUT_SHAPES (B = 128, D 128):
    per head a random family and its own density around the layer's; one layer in five also has a
    dense head, one in five a few skip heads."""
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
            lp = spec_layer_plan(geom, H, 128, heads)
            if 0.05 <= lp.density <= 0.6:
                out.append(_spec("sparse", geom, H, 128, 128, layer=heads, role="holdout",
                                 label=f"holdout {made}", density=lp.density))
                made += 1
    return out


# --- measurement (GPU) ------------------------------------------------------------------------------


def describe_spec(spec: dict[str, Any]) -> dict[str, Any]:
    """The point of ``spec`` before timing: the spec, its N, and what the fit reads of it (sparse:
    kept tiles, items, longest row, density, heads; fill: bytes written; quantize: bytes moved)."""
    geom = Geometry.from_dict(spec["geometry"])
    point = dict(spec, num_tokens=geom.num_tokens)
    if spec["kind"] == "dense":
        point.update(tiles=None, items=None, max_row=None)
    elif spec["kind"] == "fill":
        point.update(bytes=spec.get("batch", 1) * spec["heads"] * geom.num_tokens * spec["head_dim"] * 2)
    elif spec["kind"] == "quantize":
        nbytes = quantize_bytes(spec.get("batch", 1), spec["heads"], geom.num_tokens, spec["head_dim"])
        point.update(bytes=int(nbytes))
    else:
        lp = spec_layer_plan(geom, spec["heads"], spec["block_size"], spec["layer"])
        f = layer_features(lp)
        point.update(tiles=f.tiles, items=f.items, max_row=f.max_row, density=lp.density,
                     computed_heads=f.computed_heads, skip_heads=f.skip_heads,
                     families=sorted({g.pattern for g in lp.groups}))
    return point


def _time_spec(point: dict[str, Any], inputs: list, sets: int) -> dict[str, Any]:
    """Device time of one spec, each op as the runtime runs it."""
    import torch
    import torch.nn.functional as F

    from ..bench import cudnn_sdpa
    from ..runtime import select_backend, sparse_attention

    geom = Geometry.from_dict(point["geometry"])
    if point["kind"] == "dense":
        got = time_device(lambda i: cudnn_sdpa(*inputs[i]), sets)
        if geom.num_tokens * point["heads"] <= 500_000:  # what SDPA picks on its own, for reference
            got["sdpa_default_ms"] = time_device(lambda i: F.scaled_dot_product_attention(*inputs[i]), sets)["ms"]
        if got["ms"] < HOST_MAX_MS:
            got["host_us"] = host_us(lambda x: cudnn_sdpa(*x), inputs, reps=HOST_REPS)
        return got
    if point["kind"] == "fill":
        # The runtime's op (BlockTables.zero_skip_heads): index_fill_ with a device-side index.
        batch, heads, n, d = inputs[0][0].shape
        out = torch.empty((batch, 2 * heads, n, d), device="cuda", dtype=inputs[0][0].dtype)
        skip = torch.arange(0, 2 * heads, 2, device="cuda")
        return time_device(lambda i: out.index_fill_(1, skip, 0), 1)
    if point["kind"] == "quantize":
        from ..runtime.quantize import quantize_fp8

        from ..runtime.backends import backend_for

        # the pass as the FP8 kernel "auto" picks wants it
        order = backend_for(*inputs[0], point["block_size"], precision="fp8").fp8_key_order
        return time_device(lambda i: quantize_fp8(*inputs[i], point["block_size"], key_order=order), sets)
    lp = spec_layer_plan(geom, point["heads"], point["block_size"], point["layer"])
    if point.get("precision", "native") == "fp8":
        got = _time_fp8(lp, inputs, sets, holdout=point.get("role") == "holdout")
        half = lp.computed_heads[: len(lp.computed_heads) // 2]
        variants = (lp.with_precision("fp8"), lp.with_precision("fp8").with_precision("native", half))
    else:
        got = time_device(lambda i: sparse_attention(*inputs[i], lp), sets)
        got["backend"] = select_backend(*inputs[0], lp).name  # what "auto" runs: hopper or triton
        variants = (lp, spec_layer_plan(geom, point["heads"], point["block_size"], point["layer"][:-1] + [["skip", {}]]))
    if got["ms"] < HOST_MAX_MS and not lp.is_dense:
        got["host"] = [{"parts": host_parts(v), "us": host_us(lambda x, v=v: sparse_attention(*x, v), inputs,
                                                              reps=HOST_REPS)} for v in variants]
    return got


def host_parts(layer_plan) -> list[str]:
    """The parts of a sparse call (``table.HOST_PARTS``) ``layer_plan`` has: a launch per precision
    of its computed heads, the skip heads' fill."""
    precisions = {layer_plan.head_precisions[h] for h in layer_plan.computed_heads}
    return [p for p in HOST_PARTS if p in precisions or (p == "fill" and layer_plan.skip_heads)]


def _time_fp8(layer_plan, inputs: list, sets: int, holdout: bool) -> dict[str, Any]:
    """Device time of ``layer_plan`` with every computed head in FP8 (``with_precision("fp8")``).
    A grid point times what the runtime runs after the quantization pass (timed apart, kind
    "quantize"): the skip heads' fill and the FP8 kernel's launches, on operands quantized once
    outside the timing. A held-out point times the whole call, pass included (what a plan pays).
    A first call through the runtime tunes the kernel."""
    import torch

    from ..runtime import get_block_tables, select_backend, sparse_attention
    from ..runtime.quantize import quantize_fp8

    fp8 = layer_plan.with_precision("fp8")
    q = inputs[0][0]
    chosen = select_backend(*inputs[0], fp8, "auto", "fp8")
    sparse_attention(*inputs[0], fp8)
    if holdout:
        got = time_device(lambda i: sparse_attention(*inputs[i], fp8), sets)
        got["backend"] = chosen.name
        return got
    tables = get_block_tables(fp8, q.device, chosen.fusion)
    block, scale = fp8.block_size, q.shape[-1] ** -0.5
    quantized = [quantize_fp8(*x, block, heads=tables.head_index("fp8"), key_order=chosen.fp8_key_order)
                 for x in inputs]
    out = torch.empty_like(q)

    def kernel(i: int) -> None:
        tables.prepare_output(out, "fp8")
        chosen.run_quantized(*quantized[i], out, tables, scale)

    got = time_device(kernel, sets)
    got["backend"] = chosen.name
    return got


def gpu_timer(dtype: str = "bfloat16") -> Callable[[dict[str, Any]], dict[str, Any]]:
    """The measurement of a described point on this machine's GPU (``_time_spec`` on fresh inputs of
    its shape, several sets when they are small, kept while consecutive specs share the shape)."""
    import torch

    from ..runtime import block_tables

    if not torch.cuda.is_available():
        raise HardwareError("calibrate needs a CUDA GPU (timing the kernels is the point); none is visible here")
    cache: dict[tuple, list] = {}
    timed = [0]

    def timer(point: dict[str, Any]) -> dict[str, Any]:
        shape = (point.get("batch", 1), point["heads"], point["num_tokens"], point["head_dim"])
        sets = int(min(4, max(1, math.ceil(120e6 / (3 * math.prod(shape) * 2)))))
        if (shape, sets) not in cache:
            cache.clear()
            torch.cuda.empty_cache()
            cache[(shape, sets)] = fresh_inputs(shape, getattr(torch, dtype), sets)
        timed[0] += 1
        if timed[0] % 20 == 0:
            block_tables.clear_cache()
        try:
            return _time_spec(point, cache[(shape, sets)], sets)
        except Exception:
            torch.cuda.synchronize()
            raise

    return timer


def measure(specs: Sequence[dict[str, Any]], *, timer: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
            budget_s: float = 1e9, progress: Callable[[str], None] | None = print) -> list[dict[str, Any]]:
    """One point per spec: :func:`describe_spec` plus ``timer(point)`` (default :func:`gpu_timer`: this
    machine's GPU; a dict with at least "ms" and "method"), or ``error`` where timing failed.

    Stops starting new specs after ``budget_s`` seconds (the points so far are returned)."""
    timer = gpu_timer() if timer is None else timer
    started = time.time()
    points = []
    for n_spec, spec in enumerate(specs):
        if time.time() - started > budget_s:
            if progress:
                progress(f"time budget {budget_s:.0f}s reached: {len(specs) - n_spec} specs not measured")
            break
        point = describe_spec(spec)
        t0 = time.time()
        try:
            point.update(timer(point))
            point["wall_s"] = round(time.time() - t0, 2)
        except Exception as err:  # noqa: BLE001  (one failing spec must not lose the others)
            point["error"] = f"{type(err).__name__}: {str(err)[:300]}"
        points.append(point)
        if progress:
            got = f"{point['ms']:.4f} ms ({point['method']})" if "ms" in point else point.get("error")
            progress(f"[{n_spec + 1}/{len(specs)} {time.time() - started:.0f}s] {spec['kind']} D={spec['head_dim']} "
                     f"B={spec.get('block_size')} H={spec['heads']} N={point['num_tokens']} {spec['label']}: {got}")
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

    src = sorted((Path(__file__).parents[1] / "runtime").rglob("*.py"))
    env["runtime_source_sha256"] = hashlib.sha256(b"".join(p.read_bytes() for p in src)).hexdigest()[:16]
    env["order"] = DEFAULT_ORDER
    try:
        from ..runtime.triton.launch import tuned_configs

        env["tuned_configs"] = tuned_configs()
    except ImportError:  # no triton: nothing was tuned
        pass
    return env


def calibrate(out_dir: str | Path = "kernels", *, specs: Sequence[dict[str, Any]] | None = None,
              quick: bool = False, budget_s: float = 1e9, dtype: str = "bfloat16", points_path: str | Path | None = None,
              timer: Callable[[dict[str, Any]], dict[str, Any]] | None = None, env: dict[str, Any] | None = None,
              progress: Callable[[str], None] | None = print) -> Path:
    """Time the kernels and write the fitted table ``<out_dir>/<gpu-slug>.json``.

    ``specs``: what to time (default :func:`default_grid`, holdout included, FP8 where the device
    runs it: ``env``'s capability, else this GPU's when ``timer`` is; neither: no FP8); ``quick``:
    the quick grid; ``budget_s``: stop starting new measurements after this many seconds;
    ``points_path``: also save the raw points there (:func:`save_points`; they never go into the
    table). ``timer`` and ``env``: the device and its description (default: this machine's GPU,
    :func:`environment`).
    """
    on_gpu = timer is None
    if on_gpu:
        timer = gpu_timer(dtype)  # raises without a GPU, before the grid is built
    if specs is None:
        capability = (env or {}).get("capability")
        if capability is None and on_gpu:
            capability = _device_capability()
        specs = default_grid(quick=quick, capability=capability, dtype=dtype)
    points = measure(specs, timer=timer, budget_s=budget_s, progress=progress)
    env = environment() if env is None else env
    if points_path is not None:
        save_points(points, env, points_path)
    path = build_table(points, env).save(Path(out_dir) / f"{gpu_slug(env['device'])}.json")
    if progress:
        progress(f"wrote {path}")
    return path


def _device_capability() -> tuple[int, int]:
    import torch

    return tuple(torch.cuda.get_device_capability())


def save_points(points: Sequence[dict[str, Any]], env: dict[str, Any], path: str | Path) -> Path:
    """Write measured points and their environment as JSON (atomically)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    clean = [{k: v for k, v in p.items() if not k.startswith("_")} for p in points]
    write_text_atomic(path, json.dumps({"env": env, "points": clean}, indent=1, default=str) + "\n")
    return path


def load_points(path: str | Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(environment, points) of a file :func:`save_points` wrote (ValueError naming what is wrong)."""
    try:
        data = json.loads(Path(path).read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not JSON ({err.msg} at line {err.lineno})") from None
    if not isinstance(data, dict) or not isinstance(data.get("env"), dict) or not isinstance(data.get("points"), list):
        raise ValueError(f"{path}: not a calibration points file (needs an 'env' object and a 'points' list)")
    env, points = data["env"], data["points"]
    if not isinstance(env.get("device"), str) or not isinstance(env.get("sm_count"), int) or env["sm_count"] < 1:
        raise ValueError(f"{path}: env must name the device and its sm_count (an integer ≥ 1)")
    for i, p in enumerate(points):
        if not isinstance(p, dict) or p.get("kind") not in POINT_KINDS:
            raise ValueError(f"{path}: points[{i}] is not a {', '.join(POINT_KINDS[:-1])} or {POINT_KINDS[-1]} point")
        if p.get("precision", "native") not in PRECISIONS:
            raise ValueError(f"{path}: points[{i}] ({p.get('label', '?')}): precision must be one of {PRECISIONS}, "
                             f"got {p['precision']!r}")
        if "ms" in p and not (isinstance(p["ms"], (int, float)) and math.isfinite(p["ms"]) and p["ms"] > 0):
            raise ValueError(f"{path}: points[{i}] ({p.get('label', '?')}): ms must be a finite number > 0, "
                             f"got {p['ms']!r}")
        where = f"{path}: points[{i}] ({p.get('label', '?')})"
        if "host_us" in p and not _is_us(p["host_us"]):
            raise ValueError(f"{where}: host_us must be a finite number ≥ 0, got {p['host_us']!r}")
        for j, h in enumerate(p.get("host", []) if isinstance(p.get("host", []), list) else [None]):
            if not (isinstance(h, dict) and isinstance(h.get("parts"), list) and set(h["parts"]) <= set(HOST_PARTS)
                    and _is_us(h.get("us"))):
                raise ValueError(f"{where}: host[{j}] must be {{\"parts\": [a subset of {', '.join(HOST_PARTS)}], "
                                 f"\"us\": a finite number ≥ 0}}, got {h!r}")
    return env, points


def _is_us(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value >= 0


def refit(points_path: str | Path, out_dir: str | Path = "kernels") -> Path:
    """Fit the table ``<out_dir>/<gpu-slug>.json`` from points :func:`calibrate` saved, without a GPU
    (after a change to the cost model's form, the same measurements give the new table)."""
    env, points = load_points(points_path)
    try:
        table = build_table(points, env)
    except KeyError as err:
        raise ValueError(f"{points_path}: a point lacks the field {err.args[0]!r} the fit needs") from None
    return table.save(Path(out_dir) / f"{gpu_slug(env['device'])}.json")


__all__ = ["DENSE_SHAPES", "GRID_SHAPES", "HOLDOUT_SHAPES", "POINT_KINDS", "QUANTIZE_SHAPES", "calibrate",
           "default_grid", "describe_spec", "environment", "fp8_kernels", "fp8_shapes", "gpu_timer", "holdout_specs",
           "load_points", "measure", "refit", "save_points"]
