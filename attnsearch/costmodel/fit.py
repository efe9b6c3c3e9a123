"""Fitting the cost model's constants to measured points (pure CPU).

Per kernel (sparse (head_dim, block size, precision), cuDNN at a head_dim) the four constants of
:class:`LaunchParams` (item_tiles and slots_per_sm by grid search, launch and tile_ns by least
squares on relative error, so 20 µs and 200 ms layers weigh alike); each kernel's per-tile rate is
then tabulated over N from the residuals; the zero fill and the FP8 quantization pass by weighted
linear least squares. Points marked ``role = "holdout"`` and failed ones are never fitted.
"""

from __future__ import annotations

import datetime as _dt
import math
import statistics
from typing import Any, Callable, NamedTuple, Sequence

import numpy as np

from ..geometry import Geometry
from ..plan import LayerPlan
from ..runtime.schedule import item_lengths, list_schedule
from .model import layer_features
from .table import DENSE_TILE, HOST_PARTS, FillParams, HardwareTable, HostParams, LaunchParams, parse_variant_key, variant_key

#: Fewest points a kernel's fit takes (one per constant).
MIN_POINTS = 4


def spec_layer_plan(geom: Geometry, num_heads: int, block_size: int, heads: Sequence) -> LayerPlan:
    """The LayerPlan of a calibration spec's ``layer`` ([[pattern, params], ...] per head)."""
    lp = LayerPlan.from_heads([(p, q) for p, q in heads], geom, block_size)
    if lp.num_heads != num_heads:
        raise ValueError(f"layer: {lp.num_heads} heads listed for a {num_heads}-head spec")
    return lp


def point_lengths(p: dict[str, Any], order: str = "head") -> np.ndarray:
    """Kept tiles per item of a sparse point, in the runtime's launch order (batch copies included)."""
    if "_lengths" not in p:
        geom = Geometry.from_dict(p["geometry"])
        f = layer_features(spec_layer_plan(geom, p["heads"], p["block_size"], p["layer"]))
        p["_lengths"] = item_lengths(f.counts, order, p.get("batch", 1)).astype(np.float64)
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
    if len(ms) < MIN_POINTS:
        raise ValueError(f"fit needs at least {MIN_POINTS} points for 4 parameters, got {len(ms)}")

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
    """The per-tile rate drifts with N (cuDNN's kernel choice; L2 reuse of K/V): tabulate the
    measured/modelled ratio per N (geometric mean over that N's points), applied to the tile time,
    log-linear between."""
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


class Fitted(NamedTuple):
    """What :func:`fit` returns: params by variant key and "d<head_dim>", the fill, the quantization
    pass (None without quantize points) and the report (per-kernel errors)."""

    sparse: dict[str, LaunchParams]
    dense: dict[str, LaunchParams]
    fill: FillParams
    quantize: FillParams | None
    report: dict[str, Any]


def fit(points: Sequence[dict[str, Any]], sm_count: int, order: str = "head") -> Fitted:
    """Fit every variant from the grid points (holdout and failed points are ignored). A sparse
    point's variant is ``variant_key(head_dim, block_size, precision)`` (no precision: native).
    An FP8 variant with fewer than MIN_POINTS points (a time budget cut its grid short) is left out
    of the params, its report entry saying so; a native one raises ValueError."""
    good = [p for p in points if "ms" in p and p.get("role", "grid") == "grid" and p["ms"] > 0]
    sparse, dense, report = {}, {}, {}
    groups: dict[tuple[str, str], list] = {}
    for p in good:
        if p["kind"] == "sparse" and not p.get("skip_heads"):
            key = variant_key(p["head_dim"], p["block_size"], p.get("precision", "native"))
            groups.setdefault(("sparse", key), []).append(p)
        elif p["kind"] == "dense":
            groups.setdefault(("dense", f"d{p['head_dim']}"), []).append(p)
    for (kind, key), pts in sorted(groups.items()):
        ms = np.array([p["ms"] for p in pts])
        if kind == "sparse" and parse_variant_key(key)[2] != "native" and len(pts) < MIN_POINTS:
            report[f"{kind}.{key}"] = {"points": len(pts), "not_fitted": f"fewer than {MIN_POINTS} points"}
            continue
        if kind == "sparse":
            lengths = [point_lengths(p, order) for p in pts]
            spans = lambda a, occ, L=lengths: np.array([list_schedule(x + a, sm_count * occ) for x in L])  # noqa: E731
            params, pred = fit_launch(spans, ms)
            params, pred = _tabulate_n(params, [p["num_tokens"] for p in pts], pred, ms)
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
    passes = [p for p in good if p["kind"] == "quantize"]
    quantize = fit_fill([p["bytes"] for p in passes], [p["ms"] for p in passes]) if len(passes) >= 2 else None
    if quantize is not None:
        report["quantize"] = _errors(quantize.ms([p["bytes"] for p in passes]), [p["ms"] for p in passes])
    return Fitted(sparse, dense, fill, quantize, report)


def _nonnegative_lstsq(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Least squares of y on the columns of x with every coefficient ≥ 0: a column whose
    coefficient comes out negative is dropped (held at 0) and the rest refitted."""
    active = np.ones(x.shape[1], dtype=bool)
    coef = np.zeros(x.shape[1])
    while active.any():
        sol = np.linalg.lstsq(x[:, active], y, rcond=None)[0]
        if (sol >= 0).all():
            coef[active] = sol
            break
        active[np.flatnonzero(active)[np.argmin(sol)]] = False
    return coef


def fit_host(points: Sequence[dict[str, Any]]) -> tuple[HostParams | None, dict[str, Any]]:
    """Host dispatch costs (:class:`HostParams`) from the points' ``host`` measurements.

    A sparse point's ``host`` is a list of {"parts": [...], "us": µs} (the call as measured and the
    variations calibration timed beside it: a skip head added, half the heads in FP8); per variant
    (head_dim, block size) ``us`` is fitted by non-negative least squares as base + Σ over
    HOST_PARTS present. A part a variant never showed (no FP8 kernel, say) gets the coefficient of
    the fit over every variant's calls. cuDNN: the median of the dense points' ``host_us`` per
    head_dim. None where no point carries a host measurement."""
    rows: dict[str, list[tuple[list[str], float]]] = {}
    dense: dict[str, list[float]] = {}
    for p in points:
        if "ms" not in p:
            continue
        if p["kind"] == "sparse":
            for h in p.get("host", ()):
                rows.setdefault(variant_key(p["head_dim"], p["block_size"]), []).append((list(h["parts"]), float(h["us"])))
        elif p["kind"] == "dense" and "host_us" in p:
            dense.setdefault(f"d{p['head_dim']}", []).append(float(p["host_us"]))
    if not rows:
        return None, {}

    def design(calls):
        x = np.array([[1.0] + [float(part in parts) for part in HOST_PARTS] for parts, _ in calls])
        return x, np.array([us for _, us in calls])

    pooled = _nonnegative_lstsq(*design([c for calls in rows.values() for c in calls]))
    sparse, report = {}, {}
    for key, calls in sorted(rows.items()):
        x, y = design(calls)
        coef = _nonnegative_lstsq(x, y)
        unseen = [i + 1 for i, part in enumerate(HOST_PARTS) if not x[:, i + 1].any()]
        for i in unseen:
            coef[i] = pooled[i]
        sparse[key] = dict(zip(HostParams.FIELDS, (float(c) for c in coef)))
        report[f"host.{key}"] = {**_errors(x @ coef, y), **({"pooled": [HOST_PARTS[i - 1] for i in unseen]}
                                                              if unseen else {})}
    return HostParams(sparse, {k: float(statistics.median(v)) for k, v in sorted(dense.items())}), report


def build_table(points: Sequence[dict[str, Any]], env: dict[str, Any]) -> HardwareTable:
    """A HardwareTable from measured points and the machine's environment dict."""
    order = env.get("order", "head")
    fitted = fit(points, env["sm_count"], order)
    extra = {"tuned_configs": env.get("tuned_configs", {}), "dtype": "bfloat16",
             "timing": "device time: CUDA-graph replays of several calls over rotating input sets (> L2), "
                       "median; queued CUDA events where capture is impossible; host: wall time per eager call "
                       "dispatched with the GPU held busy"}
    host, host_report = fit_host(points)
    return HardwareTable(
        device=env["device"], sm_count=env["sm_count"], sparse=fitted.sparse, dense=fitted.dense, fill=fitted.fill,
        quantize=fitted.quantize, host=host,
        software={k: env[k] for k in ("torch", "triton", "cuda", "cudnn", "capability", "runtime_source_sha256")
                  if k in env},
        date=_dt.date.today().isoformat(), measured=True, fit={**fitted.report, **host_report}, extra=extra, order=order)


__all__ = ["MIN_POINTS", "Fitted", "build_table", "fit", "fit_fill", "fit_host", "fit_launch", "point_lengths", "spec_layer_plan"]
