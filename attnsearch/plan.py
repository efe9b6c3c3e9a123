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

A plan runs at another geometry through :meth:`Plan.for_geometry` (:mod:`attnsearch.retarget`;
docs/design.md, "Plans at another geometry"): optional top-level ``portable`` (false: the plan's
geometry only) and ``source_geometry`` (where a retargeted plan was searched) say how.

A :class:`LayerPlan` is immutable and hashes by its content (:attr:`LayerPlan.key`), so runtime
caches (block tables, masks) are shared by every layer and step that runs the same plan.
"""

from __future__ import annotations

import bisect
import os
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import torch

from .atomic_io import write_json_atomic
from .geometry import Geometry, GeometryError
from .jsondata import JSONDataError, read_json
from .patterns import PatternError, block_mask, normalize_params, params_key
from .plan_checks import (INT_MAX, MAX_HEADS, MAX_TOKENS, NULL_WHEN_NOT_FINITE, PlanError, as_int, as_list,
                          as_object, check_extent, check_geometry, check_json_data, check_keys, compact_ranges,
                          pattern_error, strict_meta)
from .retarget import check_target, retarget_params

FORMAT = "attnsearch-plan"
VERSION = 1

_TOP_REQUIRED = ("format", "version", "geometry", "block_size", "num_steps", "num_layers", "num_heads",
                 "schedule")
_TOP_OPTIONAL = ("model", "hardware", "predicted", "search")
#: Optional fields that are not metadata: whether other geometries may run the plan, and the
#: geometry it was searched at when that is not ``geometry`` (a retargeted plan).
_TOP_PORTABILITY = ("portable", "source_geometry")
#: Instantiated plans kept per Plan (one per geometry a model calls it at).
_GEOMETRY_CACHE = 16

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
    obj = as_object(raw, path)
    check_keys(obj, path, ("pattern", "heads", "params"))
    pattern = obj["pattern"]
    if not isinstance(pattern, str):
        raise PlanError(f"{path}.pattern: must be a string, got {pattern!r}")
    heads = as_list(obj["heads"], f"{path}.heads")
    if not heads:
        raise PlanError(f"{path}.heads: must list at least one head")
    heads = tuple(as_int(h, f"{path}.heads[{i}]", 0, num_heads - 1) for i, h in enumerate(heads))
    params = as_list(obj["params"], f"{path}.params")
    if len(params) != len(heads):
        raise PlanError(f"{path}.params: {len(params)} entries for {len(heads)} heads (one per head)")
    norm = []
    for i, p in enumerate(params):
        ppath = f"{path}.params[{i}]"
        p = as_object(p, ppath)
        check_json_data(p, ppath)
        try:
            n = normalize_params(pattern, p, geometry, block_size)
        except PatternError as err:
            if "unknown pattern" in str(err):
                raise PlanError(f"{path}.pattern: {err}") from None
            raise pattern_error(err, ppath) from None
        check_extent(pattern, n, geometry, ppath)
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
        check_geometry(self.geometry, self.block_size)
        as_int(self.num_heads, "num_heads", 1, MAX_HEADS)
        groups = tuple(
            _parse_group(g, self.geometry, self.block_size, self.num_heads, f"groups[{i}]")
            for i, g in enumerate(as_list(self.groups, "groups"))
        )
        seen: dict[int, str] = {}
        for i, g in enumerate(groups):
            for j, h in enumerate(g.heads):
                if h in seen:
                    raise PlanError(f"groups[{i}].heads[{j}]: head {h} already listed in {seen[h]}")
                seen[h] = f"groups[{i}]"
        missing = [h for h in range(self.num_heads) if h not in seen]
        if missing:
            raise PlanError(f"groups: head(s) {compact_ranges(missing)} of {self.num_heads} appear in no group")
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

    def for_geometry(self, geometry: Geometry) -> LayerPlan:
        """This layer plan at another geometry (:mod:`attnsearch.retarget`): every head's parameters
        carried over in their own units; ``self`` at its own geometry. PlanError naming the field
        when the geometry cannot be served."""
        if geometry == self.geometry:
            return self
        check_target(self.geometry, geometry)
        groups = tuple({"pattern": g.pattern, "heads": list(g.heads),
                        "params": [retarget_params(g.pattern, p, self.geometry, geometry, self.block_size)
                                   for p in g.params]} for g in self.groups)
        return LayerPlan(geometry, self.block_size, self.num_heads, groups)


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

    ``portable``: other geometries may run the plan (:meth:`for_geometry`); False restricts it to
    ``geometry``. ``source_geometry``: the geometry the plan was searched at when it is not
    ``geometry`` (set by :meth:`for_geometry`), else None.
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
    portable: bool = True
    source_geometry: Geometry | None = None
    _instances: dict[Geometry, Plan] = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        check_geometry(self.geometry, self.block_size)
        if not isinstance(self.portable, bool):
            raise PlanError(f"portable: must be true or false, got {self.portable!r}")
        if self.source_geometry is not None and not isinstance(self.source_geometry, Geometry):
            raise PlanError("source_geometry: must be a Geometry or None, got "
                            f"{type(self.source_geometry).__name__}")
        if self.source_geometry == self.geometry:
            object.__setattr__(self, "source_geometry", None)  # searched at the geometry it holds
        as_int(self.num_steps, "num_steps", 1, INT_MAX)
        as_int(self.num_layers, "num_layers", 1, INT_MAX)
        as_int(self.num_heads, "num_heads", 1, MAX_HEADS)
        for name in _TOP_OPTIONAL:  # kept as given (a PSNR may be +inf); to_dict() gives the stored form
            strict_meta(name, getattr(self, name))
            object.__setattr__(self, name, dict(getattr(self, name)))
        schedule = tuple(as_list(self.schedule, "schedule"))
        if not schedule:
            raise PlanError("schedule: must hold at least one entry")
        for i, e in enumerate(schedule):
            path = f"schedule[{i}]"
            if not isinstance(e, ScheduleEntry):
                raise PlanError(f"{path}: must be a ScheduleEntry, got {type(e).__name__}")
            as_int(e.start, f"{path}.steps[0]", 0, self.num_steps - 1)
            as_int(e.stop, f"{path}.steps[1]", e.start + 1, self.num_steps)
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

    @property
    def searched_geometry(self) -> Geometry:
        """The geometry the plan was searched at (``source_geometry``, else ``geometry``)."""
        return self.source_geometry or self.geometry

    def for_geometry(self, geometry: Geometry) -> Plan:
        """The plan instantiated at ``geometry`` (:mod:`attnsearch.retarget`): same schedule, every
        head's parameters carried over in their own units, ``predicted`` left empty (its figures
        were for this geometry) and ``source_geometry`` recorded; ``self`` at its own geometry.
        Built once per geometry and cached, each distinct layer plan instantiated once.

        Raises PlanError naming the field: ``portable`` for a plan marked non-portable, the
        geometry field a target cannot be served by (:func:`attnsearch.retarget.check_target`).
        """
        if geometry == self.geometry:
            return self
        cached = self._instances.get(geometry)
        if cached is not None:
            return cached
        if not self.portable:
            raise PlanError(f"portable: the plan is marked non-portable (it runs at {self.geometry} only), "
                            f"so it does not run at {geometry}")
        check_target(self.geometry, geometry)
        done: dict[LayerPlan, LayerPlan] = {}

        def carried(lp: LayerPlan) -> LayerPlan:
            if lp not in done:
                done[lp] = lp.for_geometry(geometry)
            return done[lp]

        schedule = tuple(ScheduleEntry(e.start, e.stop, None if e.layers is None else
                                       tuple(carried(lp) for lp in e.layers)) for e in self.schedule)
        out = Plan(geometry, self.block_size, self.num_steps, self.num_layers, self.num_heads, schedule,
                   model=self.model, hardware=self.hardware, predicted={}, search=self.search,
                   source_geometry=self.searched_geometry)
        if len(self._instances) >= _GEOMETRY_CACHE:
            self._instances.pop(next(iter(self._instances)))
        self._instances[geometry] = out
        return out

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
        obj = as_object(data, "plan")
        check_keys(obj, "", _TOP_REQUIRED, _TOP_OPTIONAL + _TOP_PORTABILITY)
        obj.update({k: strict_meta(k, obj[k]) for k in _TOP_OPTIONAL if k in obj})
        check_json_data(obj, "")
        if obj["format"] != FORMAT:
            raise PlanError(f"format: expected {FORMAT!r}, got {obj['format']!r}")
        if obj["version"] != VERSION or isinstance(obj["version"], bool):
            raise PlanError(f"version: this attnsearch reads version {VERSION}, got {obj['version']!r}")
        try:
            geometry = Geometry.from_dict(as_object(obj["geometry"], "geometry"))
        except GeometryError as err:
            raise PlanError(f"geometry: {err}") from None
        block_size = obj["block_size"]
        check_geometry(geometry, block_size)
        num_steps = as_int(obj["num_steps"], "num_steps", 1, INT_MAX)
        num_layers = as_int(obj["num_layers"], "num_layers", 1, INT_MAX)
        num_heads = as_int(obj["num_heads"], "num_heads", 1, MAX_HEADS)
        meta = {k: obj.get(k, {}) for k in _TOP_OPTIONAL}
        portable = obj.get("portable", True)
        if not isinstance(portable, bool):
            raise PlanError(f"portable: must be true or false, got {portable!r}")
        source = obj.get("source_geometry")
        if source is not None:
            try:
                source = Geometry.from_dict(as_object(source, "source_geometry"))
            except GeometryError as err:
                raise PlanError(f"source_geometry: {err}") from None

        schedule = []
        for i, raw in enumerate(as_list(obj["schedule"], "schedule")):
            path = f"schedule[{i}]"
            entry = as_object(raw, path)
            check_keys(entry, path, ("steps", "layers"))
            steps = as_list(entry["steps"], f"{path}.steps")
            if len(steps) != 2:
                raise PlanError(f"{path}.steps: must be [start, stop), got {steps!r}")
            start = as_int(steps[0], f"{path}.steps[0]", 0, num_steps - 1)
            stop = as_int(steps[1], f"{path}.steps[1]", start + 1, num_steps)
            layers = entry["layers"]
            if isinstance(layers, str):
                if layers != "dense":
                    raise PlanError(f"{path}.layers: must be \"dense\" or a list of layers, got {layers!r}")
                schedule.append(ScheduleEntry(start, stop, None))
                continue
            by_layer: dict[int, LayerPlan] = {}
            where: dict[int, int] = {}
            for j, lraw in enumerate(as_list(layers, f"{path}.layers")):
                lpath = f"{path}.layers[{j}]"
                lobj = as_object(lraw, lpath)
                check_keys(lobj, lpath, ("layer", "groups"))
                layer = as_int(lobj["layer"], f"{lpath}.layer", 0, num_layers - 1)
                if layer in by_layer:
                    raise PlanError(f"{lpath}.layer: layer {layer} already listed at "
                                    f"{path}.layers[{where[layer]}]")
                groups = as_list(lobj["groups"], f"{lpath}.groups")
                try:
                    by_layer[layer] = LayerPlan(geometry, block_size, num_heads, tuple(groups))
                except PlanError as err:  # LayerPlan names fields relative to the layer
                    raise PlanError(f"{lpath}.{err}") from None
                where[layer] = j
            missing = [i for i in range(num_layers) if i not in by_layer]
            if missing:
                raise PlanError(f"{path}.layers: layer(s) {compact_ranges(missing)} of {num_layers} missing "
                                f"(list every layer, or use \"dense\")")
            schedule.append(ScheduleEntry(start, stop, tuple(by_layer[i] for i in range(num_layers))))
        return cls(geometry, block_size, num_steps, num_layers, num_heads, tuple(schedule), **meta,
                   portable=portable, source_geometry=source)

    def to_dict(self) -> dict[str, Any]:
        """The plan-JSON object, strict JSON data (documented non-finite metadata as null)."""
        sched = []
        for e in self.schedule:
            layers: Any = "dense" if e.layers is None else [
                {"layer": j, "groups": lp.to_dict()} for j, lp in enumerate(e.layers)]
            sched.append({"steps": [e.start, e.stop], "layers": layers})
        return {
            "format": FORMAT, "version": VERSION,
            "model": strict_meta("model", self.model),
            "geometry": self.geometry.to_dict(),
            "block_size": self.block_size,
            "num_steps": self.num_steps, "num_layers": self.num_layers, "num_heads": self.num_heads,
            "hardware": strict_meta("hardware", self.hardware),
            "schedule": sched,
            "predicted": strict_meta("predicted", self.predicted),
            "search": strict_meta("search", self.search),
            # written only when they say something: a plan without them reads as before
            **({} if self.portable else {"portable": False}),
            **({} if self.source_geometry is None else {"source_geometry": self.source_geometry.to_dict()}),
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
