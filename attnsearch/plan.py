"""Sparse-attention plans: which pattern every (step, layer, head) runs, as JSON and in memory.

A plan file (format ``attnsearch-plan``, version 3; versions 1 and 2 load too; docs/design.md) holds a
schedule of step ranges [start, stop). Each entry runs every layer dense, or lists every layer with
its head groups: the heads of one layer that share a pattern family and a precision (native, or
FP8 kept blocks), each head with its own parameters. A listed entry may reuse a residual
(``residual``: its first step runs exact attention and keeps what the layer plans miss; the later
steps add it back; docs/design.md, "Residual reuse").

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

One call's part of a plan is a :class:`~attnsearch.layer_plan.LayerPlan` (:mod:`attnsearch.layer_plan`).
"""

from __future__ import annotations

import bisect
import os
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Iterable, Mapping

from .atomic_io import write_json_atomic
from .geometry import Geometry, GeometryError
from .jsondata import JSONDataError, read_json
from .layer_plan import HeadGroup, LayerPlan
from .plan_checks import (INT_MAX, MAX_HEADS, MAX_TOKENS, NULL_WHEN_NOT_FINITE, PlanError, as_int, as_list,
                          as_object, check_geometry, check_json_data, check_keys, compact_ranges, strict_meta)
from .retarget import check_target

FORMAT = "attnsearch-plan"
#: The newest version. Version 2 adds a head group's optional ``precision``, version 3 an entry's
#: optional ``residual``, version 4 a head group's optional ``reuse``; older plans load unchanged. A
#: plan is written as the oldest version that holds it (:meth:`Plan.format_version`), so plans
#: without residual entries stay readable by attnsearch releases that know version 2.
VERSION = 4
READABLE_VERSIONS = (1, 2, 3, 4)

_TOP_REQUIRED = ("format", "version", "geometry", "block_size", "num_steps", "num_layers", "num_heads",
                 "schedule")
_TOP_OPTIONAL = ("model", "hardware", "predicted", "search")
#: Optional fields that are not metadata: whether other geometries may run the plan, and the
#: geometry it was searched at when that is not ``geometry`` (a retargeted plan).
_TOP_PORTABILITY = ("portable", "source_geometry")
#: Instantiated plans kept per Plan (one per geometry a model calls it at).
_GEOMETRY_CACHE = 16

# --- the plan -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ScheduleEntry:
    """Steps [start, stop) run ``layers``: one LayerPlan per layer (index = layer), or None = all dense.

    ``residual``: step ``start`` runs each layer's reusing heads (``LayerPlan.reuse_heads``: the
    inexact ones, all but native dense heads, whose group does not opt out) also exactly and keeps,
    per call, their exact output minus the layer plan's; steps (start, stop) add that residual to
    their layer plan's output (docs/design.md, "Residual reuse"). Only for listed entries of two
    steps or more."""

    start: int
    stop: int
    layers: tuple[LayerPlan, ...] | None
    residual: bool = False

    def refreshes(self, step: int) -> bool:
        """Whether ``step`` (in this entry) is a residual entry's exact step."""
        return self.residual and step == self.start


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
            if not isinstance(e.residual, bool):
                raise PlanError(f"{path}.residual: must be true or false, got {e.residual!r}")
            if e.residual and e.layers is None:
                raise PlanError(f"{path}.residual: a dense entry has no residual to reuse")
            if e.residual and e.stop - e.start < 2:
                raise PlanError(f"{path}.residual: the entry spans one step [{e.start}, {e.stop}), its exact step "
                                "only: a residual entry needs at least two steps")
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
        entry = self.entry_at(step)
        return self._dense_layer if entry.layers is None else entry.layers[layer]

    def entry_at(self, step: int) -> ScheduleEntry:
        """The schedule entry covering ``step`` (in [0, num_steps))."""
        return self.schedule[bisect.bisect_right(self._starts, step) - 1]

    @property
    def has_residual(self) -> bool:
        """Whether any entry reuses a residual (such a plan keeps state across steps)."""
        return any(e.residual for e in self.schedule)

    @property
    def format_version(self) -> int:
        """The oldest plan-file version that holds this plan (written by :meth:`to_dict`)."""
        if any(not g.reuse for lp in self.layer_plans() for g in lp.groups):
            return 4
        return 3 if self.has_residual else 2

    def with_residual(self, steps: Iterable[int]) -> Plan:
        """The plan with its listed entries split at the exact ``steps`` by :func:`residual_entries`;
        ``predicted`` left empty, ``search.residual_steps`` recorded."""
        exact = check_residual_steps(steps, self.num_steps)
        return Plan(self.geometry, self.block_size, self.num_steps, self.num_layers, self.num_heads,
                    residual_entries(self.schedule, exact), model=self.model, hardware=self.hardware, predicted={},
                    search={**self.search, "residual_steps": list(exact)}, portable=self.portable,
                    source_geometry=self.source_geometry)

    def reuse_counts(self) -> tuple[int, int]:
        """(reusing, inexact) heads summed over the layers of the residual entries: how many of the
        heads that could reuse a residual do (``LayerPlan.reuse_heads``); the others run their masks
        alone there. (0, 0) for a plan without residual entries."""
        layers = [lp for e in self.schedule if e.residual for lp in e.layers]
        return sum(len(lp.reuse_heads) for lp in layers), sum(len(lp.inexact_heads) for lp in layers)

    @property
    def residual_steps(self) -> tuple[int, ...]:
        """The exact steps of the plan's residual entries (their first steps)."""
        return tuple(e.start for e in self.schedule if e.residual)

    def residual_bytes(self, head_dim: int | None = None, batch: int | None = None, element_size: int = 2,
                       calls_per_layer: int = 1, precision: str = "native") -> int:
        """Bytes the residuals of a run of the plan hold at once (docs/design.md, "Residual reuse"):
        one tensor per layer and per attention call of a step (``calls_per_layer``: 2 for CFG
        branches run as separate forwards), [batch, reusing heads, tokens, head_dim] of
        ``element_size`` bytes, or with ``precision`` "fp8" one byte per value and a float32 scale
        per row, where a layer's reusing heads (``LayerPlan.reuse_heads``) are the most any of its
        residual entries has.
        ``head_dim`` and ``batch`` default to the plan's costed call (:meth:`costed_call`); 0 for a
        plan without residual entries."""
        costed_dim, costed_batch = self.costed_call()
        head_dim = costed_dim if head_dim is None else head_dim
        batch = costed_batch if batch is None else batch
        heads = [0] * self.num_layers
        for e in self.schedule:
            if e.residual:
                heads = [max(h, len(lp.reuse_heads)) for h, lp in zip(heads, e.layers)]
        row = head_dim + 4 if precision == "fp8" else head_dim * element_size
        return sum(heads) * calls_per_layer * batch * self.geometry.num_tokens * row

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
                                       tuple(carried(lp) for lp in e.layers), e.residual) for e in self.schedule)
        out = Plan(geometry, self.block_size, self.num_steps, self.num_layers, self.num_heads, schedule,
                   model=self.model, hardware=self.hardware, predicted={}, search=self.search,
                   source_geometry=self.searched_geometry)
        if len(self._instances) >= _GEOMETRY_CACHE:
            self._instances.pop(next(iter(self._instances)))
        self._instances[geometry] = out
        return out

    def precision_share(self, precision: str) -> float:
        """The share of computed (step, layer, head) sites whose kept blocks run in ``precision``
        (dense entries count as native heads); 0 for a plan that computes nothing."""
        mine = total = 0
        for e in self.schedule:
            for lp in (self._dense_layer,) * self.num_layers if e.layers is None else e.layers:
                mine += (e.stop - e.start) * len(lp.precision_heads(precision))
                total += (e.stop - e.start) * len(lp.computed_heads)
        return mine / total if total else 0.0

    def costed_call(self) -> tuple[int, int]:
        """(head_dim, batch) of the attention calls the search priced this plan's layers at
        (``search.settings``; 128 and 1 where the plan does not say). PlanError when a recorded
        value is not a positive integer."""
        settings = self.search.get("settings") or {}
        if not isinstance(settings, Mapping):
            raise PlanError(f"search.settings must be an object, got {type(settings).__name__}")
        shape = []
        for name, default in (("head_dim", 128), ("batch", 1)):
            value = settings.get(name)
            if value is None:
                value = default
            elif isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise PlanError(f"search.settings.{name} must be a positive integer, got {value!r}")
            shape.append(value)
        return shape[0], shape[1]

    def with_precision(self, precision: str) -> Plan:
        """The plan with every computed head of every sparse layer in ``precision`` (the same masks;
        dense entries stay dense); ``predicted`` left empty (its figures were for the plan's own
        precisions)."""
        done: dict[LayerPlan, LayerPlan] = {}

        def converted(lp: LayerPlan) -> LayerPlan:
            if lp not in done:
                done[lp] = lp if lp.is_dense else lp.with_precision(precision)
            return done[lp]

        schedule = tuple(ScheduleEntry(e.start, e.stop, None if e.layers is None else
                                       tuple(converted(lp) for lp in e.layers), e.residual) for e in self.schedule)
        return Plan(self.geometry, self.block_size, self.num_steps, self.num_layers, self.num_heads, schedule,
                    model=self.model, hardware=self.hardware, predicted={}, search=self.search,
                    portable=self.portable, source_geometry=self.source_geometry)

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
        share of dense attention FLOPs the plan computes. A residual entry's exact step also counts
        the exact call of each layer's reusing heads (``LayerPlan.reuse_heads``: their share of the
        layer's heads)."""
        total = 0.0
        for e in self.schedule:
            if e.layers is None:
                total += (e.stop - e.start) * float(self.num_layers)
                continue
            total += (e.stop - e.start) * sum(lp.density for lp in e.layers)
            if e.residual:
                total += sum(len(lp.reuse_heads) / self.num_heads for lp in e.layers)
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
        version = obj["version"]
        if version not in READABLE_VERSIONS or isinstance(version, bool) or not isinstance(version, int):
            raise PlanError(f"version: this attnsearch reads versions {', '.join(map(str, READABLE_VERSIONS))}, "
                            f"got {version!r}")
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
            check_keys(entry, path, ("steps", "layers"), ("residual",))
            steps = as_list(entry["steps"], f"{path}.steps")
            if len(steps) != 2:
                raise PlanError(f"{path}.steps: must be [start, stop), got {steps!r}")
            start = as_int(steps[0], f"{path}.steps[0]", 0, num_steps - 1)
            stop = as_int(steps[1], f"{path}.steps[1]", start + 1, num_steps)
            residual = entry.get("residual", False)  # its type and use: checked by the constructor
            if "residual" in entry and version < 3:
                raise PlanError(f"{path}.residual: a version {version} plan has no residual (it came with version 3)")
            layers = entry["layers"]
            if isinstance(layers, str):
                if layers != "dense":
                    raise PlanError(f"{path}.layers: must be \"dense\" or a list of layers, got {layers!r}")
                schedule.append(ScheduleEntry(start, stop, None, residual))
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
                for g, graw in enumerate(groups):
                    for key, since in (("precision", 2), ("reuse", 4)):
                        if version < since and isinstance(graw, Mapping) and key in graw:
                            raise PlanError(f"{lpath}.groups[{g}].{key}: a version {version} plan has no {key} "
                                            f"(it came with version {since})")
                try:
                    by_layer[layer] = LayerPlan(geometry, block_size, num_heads, tuple(groups))
                except PlanError as err:  # LayerPlan names fields relative to the layer
                    raise PlanError(f"{lpath}.{err}") from None
                where[layer] = j
            missing = [i for i in range(num_layers) if i not in by_layer]
            if missing:
                raise PlanError(f"{path}.layers: layer(s) {compact_ranges(missing)} of {num_layers} missing "
                                f"(list every layer, or use \"dense\")")
            schedule.append(ScheduleEntry(start, stop, tuple(by_layer[i] for i in range(num_layers)), residual))
        return cls(geometry, block_size, num_steps, num_layers, num_heads, tuple(schedule), **meta,
                   portable=portable, source_geometry=source)

    def to_dict(self) -> dict[str, Any]:
        """The plan-JSON object, strict JSON data (documented non-finite metadata as null)."""
        sched = []
        for e in self.schedule:
            layers: Any = "dense" if e.layers is None else [
                {"layer": j, "groups": lp.to_dict()} for j, lp in enumerate(e.layers)]
            sched.append({"steps": [e.start, e.stop], "layers": layers, **({"residual": True} if e.residual else {})})
        return {
            "format": FORMAT, "version": self.format_version,
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


def check_residual_steps(steps: Any, num_steps: int | None = None) -> tuple[int, ...]:
    """``steps`` as a sorted tuple if it names exact steps for residual reuse (distinct integers ≥ 0,
    below ``num_steps`` when given), else PlanError."""
    try:
        items = list(steps)
    except TypeError:
        raise PlanError(f"residual_steps: must be a list of step numbers, got {steps!r}") from None
    if not items:
        raise PlanError("residual_steps: must name at least one exact step")
    for s in items:
        if isinstance(s, bool) or not isinstance(s, int) or s < 0:
            raise PlanError(f"residual_steps: step numbers must be integers ≥ 0, got {s!r}")
        if num_steps is not None and s >= num_steps:
            raise PlanError(f"residual_steps: step {s} is outside the plan's steps [0, {num_steps})")
    if len(set(items)) != len(items):
        raise PlanError(f"residual_steps: a step is listed twice in {items}")
    return tuple(sorted(items))


def residual_entries(schedule: Iterable[ScheduleEntry], steps: Iterable[int]) -> tuple[ScheduleEntry, ...]:
    """``schedule`` with each listed entry split at the exact ``steps`` inside it: a part that
    starts at one and spans two steps or more reuses a residual (its first step runs exactly, the
    others add what their layer plans missed there); a part before the entry's first exact step, or
    of one step, runs its layer plans alone. Dense entries, and entries that already reuse one,
    stay as they are. PlanError for steps that are not distinct integers ≥ 0."""
    exact = check_residual_steps(steps)
    out = []
    for e in schedule:
        if e.layers is None or e.residual:
            out.append(e)
            continue
        cuts = sorted({e.start, e.stop, *(s for s in exact if e.start < s < e.stop)})
        for a, b in zip(cuts, cuts[1:]):
            out.append(ScheduleEntry(a, b, e.layers, residual=a in exact and b - a >= 2))
    return tuple(out)


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


__all__ = ["FORMAT", "MAX_HEADS", "READABLE_VERSIONS", "MAX_TOKENS", "NULL_WHEN_NOT_FINITE", "VERSION", "HeadGroup", "LayerPlan",
           "Plan", "PlanError", "ScheduleEntry", "check_residual_steps", "load_plan", "residual_entries", "validate_plan", "write_plan"]
