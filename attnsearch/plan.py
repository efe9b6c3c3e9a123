"""Sparse-attention plans: which pattern every (step, layer, head) runs, as JSON and in memory.

A plan file (format ``attnsearch-plan``, version 1; docs/design.md) holds a schedule of step ranges
[start, stop). Each entry runs every layer dense, or lists every layer with its head groups: the
heads of one layer that share a pattern family, each head with its own parameters.

    >>> plan = load_plan("plans/wan.json")
    >>> lp = plan.layer_plan(step=3, layer=12)      # LayerPlan: geometry, block size, head groups
    >>> lp.block_masks().shape                      # [num_heads, nb, nb] bool
    >>> out = sparse_attention(q, k, v, lp)

Everything is checked on load, as structure and as data: a bad plan raises :class:`PlanError`
whose one-line message starts with the offending field, e.g.
``schedule[1].layers[3].groups[0].params[2].rows: diagonal.rows must be …``. The data rules:

* strict JSON data throughout: every number finite, integers within ±2^63, nesting at most
  :data:`~attnsearch.jsondata.MAX_DEPTH` deep (a file is read as UTF-8 JSON; every way it can fail to
  be one is a PlanError naming the file);
* steps [0, num_steps), layers [0, num_layers) and heads [0, num_heads) each covered exactly once;
  known pattern families only, each parameter of the right type and within what the geometry can
  mean (a band of at most frames × height rows, stripe key blocks below the number of blocks,
  multi_diagonal frames below the geometry's frames, energy_decay decay in (0, 1]);
  at most :data:`MAX_TOKENS` tokens and :data:`MAX_HEADS` heads;
* ``predicted`` holds numbers only (the cost model's figures); ``model.name`` and
  ``model.fingerprint`` are strings;
* in the metadata (``model``, ``hardware``, ``predicted``, ``search``), a number under a key that
  names a density, recall or ``tau`` lies in [0, 1]; an error (``error``, ``rel_err``, ``rel_l2``,
  ``*_error``, ``budget``) is ≥ 0; a speedup is > 0; a time (``*_ms``) is ≥ 0.

Non-finite numbers with a documented meaning are stored as null: ``psnr_db`` (anywhere) is null
when the PSNR is not finite: +∞, the output equals the dense reference (its ``rel_l2`` is then 0);
in ``search.pareto`` (the Pareto front as a table), null is a figure the trial did not record.
:meth:`Plan.to_dict` and the plan file hold those nulls (strict JSON); a Plan built in memory keeps
the metadata as given (e.g. ``psnr_db`` = inf), so ``Plan.from_dict(plan.to_dict())`` is the plan as
stored.

A :class:`LayerPlan` is immutable and hashes by its content (:attr:`LayerPlan.key`), so runtime
caches (block tables, masks) are shared by every layer and step that runs the same plan.
"""

from __future__ import annotations

import bisect
import math
import os
import re
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import torch

from .atomic_io import write_json_atomic
from .geometry import BLOCK_SIZES, Geometry, GeometryError
from .jsondata import INT_LIMIT, JSONDataError, check_data, key_path, nonfinite_to_null, read_json
from .messages import one_line
from .patterns import PatternError, block_mask, normalize_params, params_key

FORMAT = "attnsearch-plan"
VERSION = 1

_TOP_REQUIRED = ("format", "version", "geometry", "block_size", "num_steps", "num_layers", "num_heads",
                 "schedule")
_TOP_OPTIONAL = ("model", "hardware", "predicted", "search")

#: Most tokens one attention call of a plan may hold: the runtime indexes tokens in 32-bit integers.
MAX_TOKENS = 2 ** 31 - 1
#: Most query heads a plan may describe; far above any attention layer (a larger count is a corrupt
#: file, and a dense layer lists every head).
MAX_HEADS = 65535
#: Metadata keys whose non-finite value is stored as null (see the module docstring).
NULL_WHEN_NOT_FINITE = ("psnr_db",)


class PlanError(ValueError):
    """A plan is malformed or does not fit the call it is used for; the one-line message names
    the field."""

    def __init__(self, message: str) -> None:
        super().__init__(one_line(message))


# --- small checkers: each raises PlanError naming ``path`` ---------------------------------------


def _check_geometry(geometry: Any, block_size: Any) -> None:
    if not isinstance(geometry, Geometry):
        raise PlanError(f"geometry: must be a Geometry, got {type(geometry).__name__}")
    if geometry.num_tokens > MAX_TOKENS:
        raise PlanError(f"geometry: {geometry.num_tokens} tokens, more than the runtime's {MAX_TOKENS}")
    if block_size not in BLOCK_SIZES or isinstance(block_size, bool):
        raise PlanError(f"block_size: must be one of {BLOCK_SIZES}, got {block_size!r}")


def _data(value: Any, path: str) -> None:
    """Raise PlanError unless ``value`` is strict JSON data (finite numbers, bounded nesting)."""
    try:
        check_data(value, path)
    except JSONDataError as err:
        raise PlanError(str(err)) from None


def _int(value: Any, path: str, lo: int, hi: float = math.inf) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
        rng = f"[{lo}, {hi}]" if math.isfinite(hi) else f"≥ {lo}"
        raise PlanError(f"{path}: must be an integer {rng}, got {value!r}")
    return value


def _obj(value: Any, path: str) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        raise PlanError(f"{path}: must be an object, got {type(value).__name__}")
    return dict(value)


def _list(value: Any, path: str) -> list[Any]:
    if not isinstance(value, (list, tuple)):
        raise PlanError(f"{path}: must be a list, got {type(value).__name__}")
    return list(value)


def _keys(obj: Mapping[str, Any], path: str, required: Iterable[str], optional: Iterable[str] = ()) -> None:
    required = tuple(required)
    missing = [k for k in required if k not in obj]
    if missing:
        raise PlanError(f"{key_path(path, missing[0])}: missing")
    unknown = sorted(set(obj) - set(required) - set(optional), key=str)
    if unknown:
        allowed = ", ".join((*required, *optional))
        raise PlanError(f"{key_path(path, unknown[0])}: unknown field (allowed: {allowed})")


_PARAM_FIELD = re.compile(r"^(\w+)\.(\w+) ")


def _check_extent(pattern: str, params: Mapping[str, Any], geometry: Geometry, path: str) -> None:
    """Parameters within what the geometry can mean (beyond the family's own range checks)."""
    rows = params.get("rows")
    limit = geometry.frames * geometry.height
    if rows is not None and rows > limit:
        raise PlanError(f"{path}.rows: {pattern}.rows must be at most frames × height = {limit} (a band over "
                        f"the whole video), got {rows!r}")


def _pattern_error(err: PatternError, path: str) -> PlanError:
    """Prefix a PatternError with the plan path, down to the parameter when the message names one."""
    msg = str(err)
    m = _PARAM_FIELD.match(msg)
    return PlanError(f"{path}.{m.group(2)}: {msg}" if m else f"{path}: {msg}")


# --- metadata: free-form JSON objects, with ranges for the figures they name ------------------------

_INT_MAX = INT_LIMIT - 1
_UNIT = (0.0, False, 1.0, "in [0, 1]")
_NONNEG = (0.0, False, math.inf, "≥ 0")
_POSITIVE = (0.0, True, math.inf, "> 0")


def _meta_range(key: str) -> tuple[float, bool, float, str] | None:
    """(lo, lo_open, hi, wording) for a metadata number named ``key``, or None (any finite value)."""
    k = key.lower()
    if k in ("density", "tau", "density_cap") or k.endswith("_density") or k.startswith("recall"):
        return _UNIT
    if k in ("error", "rel_err", "rel_l2", "budget") or k.endswith(("_error", "_err")):
        return _NONNEG
    if k == "speedup" or k.endswith("_speedup"):
        return _POSITIVE
    if k == "ms" or k.endswith("_ms"):
        return _NONNEG
    return None


def _strict_meta(name: str, meta: Any) -> dict[str, Any]:
    """A metadata object in its stored form (documented non-finite values as null), checked."""
    meta = _obj(meta, name)
    try:
        meta = nonfinite_to_null(meta, NULL_WHEN_NOT_FINITE, name)
        if name == "search" and isinstance(meta.get("pareto"), list):
            meta["pareto"] = nonfinite_to_null(meta["pareto"], None, "search.pareto")
    except JSONDataError as err:
        raise PlanError(str(err)) from None
    _data(meta, name)
    if name == "predicted":  # the cost model's figures: each one a number
        for k, v in meta.items():
            if not isinstance(v, (int, float)) or isinstance(v, bool):
                raise PlanError(f"{key_path(name, k)}: must be a number, got {v!r}")
    if name == "model":
        for k in ("name", "fingerprint"):
            if k in meta and not isinstance(meta[k], str):
                raise PlanError(f"model.{k}: must be a string, got {meta[k]!r}")
    stack: list[tuple[Any, str]] = [(meta, name)]
    while stack:
        value, path = stack.pop()
        items = value.items() if isinstance(value, dict) else enumerate(value)
        for k, v in items:
            where = key_path(path, k)
            if isinstance(v, (dict, list)):
                stack.append((v, where))
                continue
            rng = _meta_range(k) if isinstance(k, str) else None
            if rng is None or not isinstance(v, (int, float)) or isinstance(v, bool):
                continue
            lo, lo_open, hi, wording = rng
            if not ((v > lo if lo_open else v >= lo) and v <= hi):
                raise PlanError(f"{where}: must be {wording}, got {v!r}")
    return meta


# --- head groups and layer plans ----------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class HeadGroup:
    """Heads of one layer that run one pattern family; ``params[i]`` belongs to ``heads[i]``.

    ``params`` are normalized (defaults filled in, canonical types) by the constructor.
    """

    pattern: str
    heads: tuple[int, ...]
    params: tuple[dict[str, Any], ...]

    @cached_property
    def key(self) -> tuple:
        return (self.pattern, self.heads, tuple(params_key(p) for p in self.params))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, HeadGroup) and self.key == other.key

    def __hash__(self) -> int:
        return hash(self.key)

    def to_dict(self) -> dict[str, Any]:
        return {"pattern": self.pattern, "heads": list(self.heads), "params": [dict(p) for p in self.params]}


def _parse_group(raw: Any, geometry: Geometry, block_size: int, num_heads: int, path: str) -> HeadGroup:
    if isinstance(raw, HeadGroup):
        raw = raw.to_dict()
    obj = _obj(raw, path)
    _keys(obj, path, ("pattern", "heads", "params"))
    pattern = obj["pattern"]
    if not isinstance(pattern, str):
        raise PlanError(f"{path}.pattern: must be a string, got {pattern!r}")
    heads = _list(obj["heads"], f"{path}.heads")
    if not heads:
        raise PlanError(f"{path}.heads: must list at least one head")
    heads = tuple(_int(h, f"{path}.heads[{i}]", 0, num_heads - 1) for i, h in enumerate(heads))
    params = _list(obj["params"], f"{path}.params")
    if len(params) != len(heads):
        raise PlanError(f"{path}.params: {len(params)} entries for {len(heads)} heads (one per head)")
    norm = []
    for i, p in enumerate(params):
        ppath = f"{path}.params[{i}]"
        p = _obj(p, ppath)
        _data(p, ppath)
        try:
            n = normalize_params(pattern, p, geometry, block_size)
        except PatternError as err:
            if "unknown pattern" in str(err):
                raise PlanError(f"{path}.pattern: {err}") from None
            raise _pattern_error(err, ppath) from None
        _check_extent(pattern, n, geometry, ppath)
        norm.append(n)
    return HeadGroup(pattern, heads, tuple(norm))


@dataclass(frozen=True, eq=False)
class LayerPlan:
    """What one attention call runs: per head a pattern and its parameters, in head groups.

    Args:
        geometry: token layout of the call (N = geometry.num_tokens).
        block_size: B ∈ {64, 128}; the sequence is tiled into nb = ceil(N / B) blocks.
        num_heads: H, query heads of the call.
        groups: head groups (HeadGroup or their dict form); every head in [0, H) exactly once.

    Equality and hashing go by :attr:`key` (content), so equal plans share runtime caches.
    """

    geometry: Geometry
    block_size: int
    num_heads: int
    groups: tuple[HeadGroup, ...]

    def __post_init__(self) -> None:
        _check_geometry(self.geometry, self.block_size)
        _int(self.num_heads, "num_heads", 1, MAX_HEADS)
        groups = tuple(
            _parse_group(g, self.geometry, self.block_size, self.num_heads, f"groups[{i}]")
            for i, g in enumerate(_list(self.groups, "groups"))
        )
        seen: dict[int, str] = {}
        for i, g in enumerate(groups):
            for j, h in enumerate(g.heads):
                if h in seen:
                    raise PlanError(f"groups[{i}].heads[{j}]: head {h} already listed in {seen[h]}")
                seen[h] = f"groups[{i}]"
        missing = [h for h in range(self.num_heads) if h not in seen]
        if missing:
            raise PlanError(f"groups: head(s) {_ranges(missing)} of {self.num_heads} appear in no group")
        object.__setattr__(self, "groups", groups)

    # -- identity --------------------------------------------------------------------------------

    @cached_property
    def key(self) -> tuple:
        return (self.geometry, self.block_size, self.num_heads, tuple(g.key for g in self.groups))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, LayerPlan) and self.key == other.key

    def __hash__(self) -> int:
        return hash(self.key)

    def __repr__(self) -> str:
        fams = ", ".join(f"{g.pattern}×{len(g.heads)}" for g in self.groups)
        return f"LayerPlan({self.geometry}, B={self.block_size}, H={self.num_heads}: {fams})"

    # -- constructors ----------------------------------------------------------------------------

    @classmethod
    def single(cls, pattern: str, params: Mapping[str, Any] | None, geometry: Geometry, num_heads: int,
               block_size: int) -> LayerPlan:
        """Every head runs ``pattern`` with the same ``params``."""
        heads = list(range(num_heads))
        group = {"pattern": pattern, "heads": heads, "params": [dict(params or {}) for _ in heads]}
        return cls(geometry, block_size, num_heads, (group,))

    @classmethod
    def dense(cls, geometry: Geometry, num_heads: int, block_size: int) -> LayerPlan:
        return cls.single("dense", {}, geometry, num_heads, block_size)

    @classmethod
    def from_heads(cls, heads: Sequence[tuple[str, Mapping[str, Any] | None]], geometry: Geometry,
                   block_size: int) -> LayerPlan:
        """One (pattern, params) per head; heads of one pattern family form one group."""
        by_pattern: dict[str, dict[str, list]] = {}
        for h, (pattern, params) in enumerate(heads):
            g = by_pattern.setdefault(pattern, {"pattern": pattern, "heads": [], "params": []})
            g["heads"].append(h)
            g["params"].append(dict(params or {}))
        return cls(geometry, block_size, len(heads), tuple(by_pattern.values()))

    # -- per-head views --------------------------------------------------------------------------

    @cached_property
    def head_specs(self) -> tuple[tuple[str, dict[str, Any]], ...]:
        """(pattern, normalized params) of every head, in head order."""
        spec: list[Any] = [None] * self.num_heads
        for g in self.groups:
            for h, p in zip(g.heads, g.params, strict=True):
                spec[h] = (g.pattern, p)
        return tuple(spec)

    @property
    def num_blocks(self) -> int:
        return self.geometry.num_blocks(self.block_size)

    @property
    def skip_heads(self) -> tuple[int, ...]:
        return tuple(h for h, (pat, _) in enumerate(self.head_specs) if pat == "skip")

    @property
    def computed_heads(self) -> tuple[int, ...]:
        return tuple(h for h, (pat, _) in enumerate(self.head_specs) if pat != "skip")

    @property
    def is_dense(self) -> bool:
        """Every head of the layer is dense (exact attention: the runtime runs it as such)."""
        return all(g.pattern == "dense" for g in self.groups)

    def block_masks(self) -> torch.Tensor:
        """Per-head block masks, bool [H, nb, nb] on CPU (built once per LayerPlan; do not mutate)."""
        return self._block_masks

    @cached_property
    def _block_masks(self) -> torch.Tensor:
        nb = self.num_blocks
        out = torch.empty(self.num_heads, nb, nb, dtype=torch.bool)
        built: dict[tuple[str, str], torch.Tensor] = {}
        for h, (pattern, params) in enumerate(self.head_specs):
            k = (pattern, params_key(params))
            if k not in built:  # heads with identical candidates share one mask build
                built[k] = block_mask(pattern, params, self.geometry, self.block_size)
            out[h] = built[k]
        return out

    def head_densities(self) -> torch.Tensor:
        """float64 [H]: kept blocks / nb² per head (skip heads 0)."""
        return self.block_masks().flatten(1).double().mean(1)

    @property
    def density(self) -> float:
        """Mean density over all heads: the fraction of dense attention FLOPs this layer computes."""
        return float(self.head_densities().mean())

    def check_inputs(self, num_tokens: int, num_heads: int) -> None:
        """Raise if an attention call's sequence length or head count does not match this plan."""
        try:
            self.geometry.check_tokens(num_tokens)
        except GeometryError as err:
            raise PlanError(f"geometry: {err}") from None
        if num_heads != self.num_heads:
            raise PlanError(f"num_heads: the call has {num_heads} query heads, the plan {self.num_heads}")

    def to_dict(self) -> list[dict[str, Any]]:
        """The ``groups`` list of this layer's plan-JSON entry."""
        return [g.to_dict() for g in self.groups]


def _ranges(values: Sequence[int]) -> str:
    """[0, 1, 2, 5] → '0-2, 5' (short error messages for long head/step lists)."""
    out, start, prev = [], None, None
    for v in list(values) + [None]:
        if start is not None and v == prev + 1:
            prev = v
            continue
        if start is not None:
            out.append(str(start) if start == prev else f"{start}-{prev}")
        start = prev = v
    return ", ".join(out)


# --- the plan -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ScheduleEntry:
    """Steps [start, stop) run ``layers``: one LayerPlan per layer (index = layer), or None = all dense."""

    start: int
    stop: int
    layers: tuple[LayerPlan, ...] | None


@dataclass(frozen=True)
class Plan:
    """A complete plan: for every step in [0, num_steps) and layer in [0, num_layers) a LayerPlan.

    Build one with :func:`load_plan`, :meth:`from_dict` or :meth:`dense`; the constructor checks
    the schedule (entries cover [0, num_steps) exactly once; every layer of a listed entry present).
    """

    geometry: Geometry
    block_size: int
    num_steps: int
    num_layers: int
    num_heads: int
    schedule: tuple[ScheduleEntry, ...]
    model: dict[str, Any] = field(default_factory=dict)
    hardware: dict[str, Any] = field(default_factory=dict)
    predicted: dict[str, Any] = field(default_factory=dict)
    search: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _check_geometry(self.geometry, self.block_size)
        _int(self.num_steps, "num_steps", 1, _INT_MAX)
        _int(self.num_layers, "num_layers", 1, _INT_MAX)
        _int(self.num_heads, "num_heads", 1, MAX_HEADS)
        for name in _TOP_OPTIONAL:  # kept as given (a PSNR may be +inf); to_dict() gives the stored form
            _strict_meta(name, getattr(self, name))
            object.__setattr__(self, name, dict(getattr(self, name)))
        schedule = tuple(_list(self.schedule, "schedule"))
        if not schedule:
            raise PlanError("schedule: must hold at least one entry")
        for i, e in enumerate(schedule):
            path = f"schedule[{i}]"
            if not isinstance(e, ScheduleEntry):
                raise PlanError(f"{path}: must be a ScheduleEntry, got {type(e).__name__}")
            _int(e.start, f"{path}.steps[0]", 0, self.num_steps - 1)
            _int(e.stop, f"{path}.steps[1]", e.start + 1, self.num_steps)
            if e.layers is None:
                continue
            if len(e.layers) != self.num_layers:
                raise PlanError(f"{path}.layers: {len(e.layers)} layers for num_layers = {self.num_layers}")
            for j, lp in enumerate(e.layers):
                lpath = f"{path}.layers[layer={j}]"
                if not isinstance(lp, LayerPlan):
                    raise PlanError(f"{lpath}: must be a LayerPlan, got {type(lp).__name__}")
                for name in ("geometry", "block_size", "num_heads"):
                    if getattr(lp, name) != getattr(self, name):
                        raise PlanError(f"{lpath}.{name}: {getattr(lp, name)} differs from the plan's "
                                        f"{getattr(self, name)}")
        # Coverage: sorted by start, the ranges must tile [0, num_steps) with no gap or overlap.
        order = sorted(range(len(schedule)), key=lambda i: schedule[i].start)
        expect, prev = 0, None
        for i in order:
            e = schedule[i]
            if e.start < expect:
                raise PlanError(f"schedule[{i}].steps: [{e.start}, {e.stop}) overlaps schedule[{prev}].steps "
                                f"[{schedule[prev].start}, {schedule[prev].stop})")
            if e.start > expect:
                raise PlanError(f"schedule: steps [{expect}, {e.start}) are covered by no entry")
            expect, prev = e.stop, i
        if expect != self.num_steps:
            raise PlanError(f"schedule: steps [{expect}, {self.num_steps}) are covered by no entry")
        object.__setattr__(self, "schedule", tuple(schedule[i] for i in order))

    # -- lookup ----------------------------------------------------------------------------------

    @cached_property
    def _starts(self) -> list[int]:
        return [e.start for e in self.schedule]

    @cached_property
    def _dense_layer(self) -> LayerPlan:
        return LayerPlan.dense(self.geometry, self.num_heads, self.block_size)

    def layer_plan(self, step: int, layer: int) -> LayerPlan:
        """The LayerPlan of attention call ``layer`` in model forward ``step``."""
        if not isinstance(step, int) or isinstance(step, bool) or not 0 <= step < self.num_steps:
            raise PlanError(f"step: {step!r} is outside the plan's steps [0, {self.num_steps})")
        if not isinstance(layer, int) or isinstance(layer, bool) or not 0 <= layer < self.num_layers:
            raise PlanError(f"layer: {layer!r} is outside the plan's layers [0, {self.num_layers})")
        entry = self.schedule[bisect.bisect_right(self._starts, step) - 1]
        return self._dense_layer if entry.layers is None else entry.layers[layer]

    def layer_plans(self) -> list[LayerPlan]:
        """The distinct LayerPlans of the plan, in schedule order."""
        seen: dict[LayerPlan, None] = {}
        for e in self.schedule:
            for lp in (self._dense_layer,) if e.layers is None else e.layers:
                seen.setdefault(lp, None)
        return list(seen)

    @property
    def mean_density(self) -> float:
        """Kept blocks / all blocks over every (step, layer) call, a dense layer counting 1: the
        share of dense attention FLOPs the plan computes."""
        total = sum((e.stop - e.start) * (float(self.num_layers) if e.layers is None
                                          else sum(lp.density for lp in e.layers)) for e in self.schedule)
        return total / (self.num_steps * self.num_layers)

    # -- constructors and serialisation ------------------------------------------------------------

    @classmethod
    def dense(cls, geometry: Geometry, num_steps: int, num_layers: int, num_heads: int,
              block_size: int = 128, **meta: Any) -> Plan:
        """Every step and layer dense: the identity plan (runs through the sparse runtime)."""
        return cls(geometry, block_size, num_steps, num_layers, num_heads,
                   (ScheduleEntry(0, num_steps, None),), **meta)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Plan:
        """Parse and validate a plan-JSON object; raises PlanError naming the offending field."""
        obj = _obj(data, "plan")
        _keys(obj, "", _TOP_REQUIRED, _TOP_OPTIONAL)
        obj.update({k: _strict_meta(k, obj[k]) for k in _TOP_OPTIONAL if k in obj})
        _data(obj, "")
        if obj["format"] != FORMAT:
            raise PlanError(f"format: expected {FORMAT!r}, got {obj['format']!r}")
        if obj["version"] != VERSION or isinstance(obj["version"], bool):
            raise PlanError(f"version: this attnsearch reads version {VERSION}, got {obj['version']!r}")
        try:
            geometry = Geometry.from_dict(_obj(obj["geometry"], "geometry"))
        except GeometryError as err:
            raise PlanError(f"geometry: {err}") from None
        block_size = obj["block_size"]
        _check_geometry(geometry, block_size)
        num_steps = _int(obj["num_steps"], "num_steps", 1, _INT_MAX)
        num_layers = _int(obj["num_layers"], "num_layers", 1, _INT_MAX)
        num_heads = _int(obj["num_heads"], "num_heads", 1, MAX_HEADS)
        meta = {k: obj.get(k, {}) for k in _TOP_OPTIONAL}

        schedule = []
        for i, raw in enumerate(_list(obj["schedule"], "schedule")):
            path = f"schedule[{i}]"
            entry = _obj(raw, path)
            _keys(entry, path, ("steps", "layers"))
            steps = _list(entry["steps"], f"{path}.steps")
            if len(steps) != 2:
                raise PlanError(f"{path}.steps: must be [start, stop), got {steps!r}")
            start = _int(steps[0], f"{path}.steps[0]", 0, num_steps - 1)
            stop = _int(steps[1], f"{path}.steps[1]", start + 1, num_steps)
            layers = entry["layers"]
            if isinstance(layers, str):
                if layers != "dense":
                    raise PlanError(f"{path}.layers: must be \"dense\" or a list of layers, got {layers!r}")
                schedule.append(ScheduleEntry(start, stop, None))
                continue
            by_layer: dict[int, LayerPlan] = {}
            where: dict[int, int] = {}
            for j, lraw in enumerate(_list(layers, f"{path}.layers")):
                lpath = f"{path}.layers[{j}]"
                lobj = _obj(lraw, lpath)
                _keys(lobj, lpath, ("layer", "groups"))
                layer = _int(lobj["layer"], f"{lpath}.layer", 0, num_layers - 1)
                if layer in by_layer:
                    raise PlanError(f"{lpath}.layer: layer {layer} already listed at "
                                    f"{path}.layers[{where[layer]}]")
                groups = _list(lobj["groups"], f"{lpath}.groups")
                try:
                    by_layer[layer] = LayerPlan(geometry, block_size, num_heads, tuple(groups))
                except PlanError as err:  # LayerPlan names fields relative to the layer
                    raise PlanError(f"{lpath}.{err}") from None
                where[layer] = j
            missing = [i for i in range(num_layers) if i not in by_layer]
            if missing:
                raise PlanError(f"{path}.layers: layer(s) {_ranges(missing)} of {num_layers} missing "
                                f"(list every layer, or use \"dense\")")
            schedule.append(ScheduleEntry(start, stop, tuple(by_layer[i] for i in range(num_layers))))
        return cls(geometry, block_size, num_steps, num_layers, num_heads, tuple(schedule), **meta)

    def to_dict(self) -> dict[str, Any]:
        """The plan-JSON object, strict JSON data (documented non-finite metadata as null)."""
        sched = []
        for e in self.schedule:
            layers: Any = "dense" if e.layers is None else [
                {"layer": j, "groups": lp.to_dict()} for j, lp in enumerate(e.layers)]
            sched.append({"steps": [e.start, e.stop], "layers": layers})
        return {
            "format": FORMAT, "version": VERSION,
            "model": _strict_meta("model", self.model),
            "geometry": self.geometry.to_dict(),
            "block_size": self.block_size,
            "num_steps": self.num_steps, "num_layers": self.num_layers, "num_heads": self.num_heads,
            "hardware": _strict_meta("hardware", self.hardware),
            "schedule": sched,
            "predicted": _strict_meta("predicted", self.predicted),
            "search": _strict_meta("search", self.search),
        }


def validate_plan(source: Mapping[str, Any] | str | os.PathLike) -> Plan:
    """Check a plan (a parsed JSON object or a file path); return it parsed, or raise PlanError."""
    if isinstance(source, (str, os.PathLike)):
        return load_plan(source)
    return Plan.from_dict(source)


def load_plan(path: str | os.PathLike) -> Plan:
    """Read and validate a plan JSON file (UTF-8); every failure is one PlanError line starting with
    the file's path."""
    path = Path(path)
    try:
        data = read_json(path, "plan file")
    except JSONDataError as err:
        raise PlanError(str(err)) from None
    try:
        return Plan.from_dict(data)
    except PlanError as err:
        raise PlanError(f"{path}: {err}") from None


def write_plan(plan: Plan, path: str | os.PathLike, *, inputs: Iterable[str | os.PathLike] = ()) -> Path:
    """Write ``plan`` as strict JSON, atomically and under the output policy of
    :mod:`attnsearch.atomic_io` (OutputError if ``path`` is not a regular file or is one of ``inputs``)."""
    return write_json_atomic(path, plan.to_dict(), inputs=inputs)


__all__ = ["FORMAT", "MAX_HEADS", "MAX_TOKENS", "NULL_WHEN_NOT_FINITE", "VERSION", "HeadGroup", "LayerPlan",
           "Plan", "PlanError", "ScheduleEntry", "load_plan", "validate_plan", "write_plan"]
