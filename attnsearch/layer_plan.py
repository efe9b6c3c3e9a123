"""One attention call's plan: per head a pattern family and its parameters, in head groups.

:class:`LayerPlan` is plain data (FlexAttention's ``BlockMask`` is the model): immutable, hashed by
its content (:attr:`LayerPlan.key`), so runtime caches (block tables, masks) are shared by every
layer and step that runs the same plan. The plan file that holds many of them is :mod:`attnsearch.plan`.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Any, Iterable, Mapping, Sequence

import torch

from .geometry import Geometry, GeometryError
from .patterns import PatternError, block_mask, normalize_params, params_key
from .plan_checks import (MAX_HEADS, PlanError, as_int, as_list, as_object, check_extent, check_geometry,
                          check_json_data, check_keys, compact_ranges, pattern_error)
from .retarget import check_target, retarget_params


#: What a head's kept blocks are computed in: "native" (the call's dtype, bf16 or fp16) or "fp8"
#: (e4m3 products with per-block scales; docs/design.md, "Precision"). The runtime's quantization
#: module defines the arithmetic; this tuple is the vocabulary plans use.
PRECISIONS = ("native", "fp8")
#: The precision of a group whose plan entry names none.
DEFAULT_PRECISION = "native"


@dataclass(frozen=True, eq=False)
class HeadGroup:
    """Heads of one layer that run one pattern family in one precision; ``params[i]`` belongs to
    ``heads[i]``.

    ``params`` are normalized (defaults filled in, canonical types) by the constructor. ``reuse``:
    whether the heads take part in a residual entry's reuse (docs/design.md, "Residual reuse"); False
    runs their masks alone there (no exact call, no residual kept). Outside residual entries it
    changes nothing.
    """

    pattern: str
    heads: tuple[int, ...]
    params: tuple[dict[str, Any], ...]
    precision: str = DEFAULT_PRECISION
    reuse: bool = True

    @cached_property
    def key(self) -> tuple:
        return (self.pattern, self.heads, tuple(params_key(p) for p in self.params), self.precision, self.reuse)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, HeadGroup) and self.key == other.key

    def __hash__(self) -> int:
        return hash(self.key)

    def to_dict(self) -> dict[str, Any]:
        """The group's plan-JSON object (``precision`` and ``reuse`` written only when they are not
        the default)."""
        out = {"pattern": self.pattern, "heads": list(self.heads), "params": [dict(p) for p in self.params]}
        if self.precision != DEFAULT_PRECISION:
            out["precision"] = self.precision
        if not self.reuse:
            out["reuse"] = False
        return out


def _parse_group(raw: Any, geometry: Geometry, block_size: int, num_heads: int, path: str) -> HeadGroup:
    if isinstance(raw, HeadGroup):
        raw = raw.to_dict()
    obj = as_object(raw, path)
    check_keys(obj, path, ("pattern", "heads", "params"), ("precision", "reuse"))
    pattern = obj["pattern"]
    if not isinstance(pattern, str):
        raise PlanError(f"{path}.pattern: must be a string, got {pattern!r}")
    precision = obj.get("precision", DEFAULT_PRECISION)
    if precision not in PRECISIONS:
        raise PlanError(f"{path}.precision: must be one of {', '.join(map(repr, PRECISIONS))}, got {precision!r}")
    if precision != DEFAULT_PRECISION and pattern == "skip":
        raise PlanError(f"{path}.precision: a skip group computes nothing; it takes no precision")
    reuse = obj.get("reuse", True)
    if not isinstance(reuse, bool):
        raise PlanError(f"{path}.reuse: must be true or false, got {reuse!r}")
    if not reuse and pattern == "dense" and precision == DEFAULT_PRECISION:
        raise PlanError(f"{path}.reuse: a native dense group is exact attention; it has no residual to opt out of")
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
    return HeadGroup(pattern, heads, tuple(norm), precision, reuse)


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
        fams = ", ".join(f"{g.pattern}×{len(g.heads)}" + ("" if g.precision == DEFAULT_PRECISION else f" {g.precision}")
                         + ("" if g.reuse else " no-reuse") for g in self.groups)
        return f"LayerPlan({self.geometry}, B={self.block_size}, H={self.num_heads}: {fams})"

    # -- constructors ----------------------------------------------------------------------------

    @classmethod
    def single(cls, pattern: str, params: Mapping[str, Any] | None, geometry: Geometry, num_heads: int,
               block_size: int, precision: str = DEFAULT_PRECISION) -> LayerPlan:
        """Every head runs ``pattern`` with the same ``params`` in ``precision``."""
        heads = list(range(num_heads))
        group = {"pattern": pattern, "heads": heads, "params": [dict(params or {}) for _ in heads],
                 "precision": precision}
        return cls(geometry, block_size, num_heads, (group,))

    @classmethod
    def dense(cls, geometry: Geometry, num_heads: int, block_size: int) -> LayerPlan:
        return cls.single("dense", {}, geometry, num_heads, block_size)

    @classmethod
    def from_heads(cls, heads: Sequence[tuple[str, Mapping[str, Any] | None]], geometry: Geometry,
                   block_size: int, precisions: Sequence[str] | None = None,
                   reuse: Sequence[bool] | None = None) -> LayerPlan:
        """One (pattern, params) per head, and optionally one precision per head (default: native)
        and whether it reuses residuals (default: yes; a native dense head is exact and always
        counts as yes); heads of one pattern family, precision and reuse form one group."""
        if precisions is not None and len(precisions) != len(heads):
            raise PlanError(f"precisions: {len(precisions)} entries for {len(heads)} heads (one per head)")
        if reuse is not None and len(reuse) != len(heads):
            raise PlanError(f"reuse: {len(reuse)} entries for {len(heads)} heads (one per head)")
        groups: dict[tuple[str, str, bool], dict[str, Any]] = {}
        for h, (pattern, params) in enumerate(heads):
            precision = DEFAULT_PRECISION if precisions is None or pattern == "skip" else precisions[h]
            reuses = (reuse is None or bool(reuse[h])
                      or (pattern == "dense" and precision == DEFAULT_PRECISION))
            g = groups.setdefault((pattern, precision, reuses),
                                  {"pattern": pattern, "heads": [], "params": [], "precision": precision,
                                   "reuse": reuses})
            g["heads"].append(h)
            g["params"].append(dict(params or {}))
        return cls(geometry, block_size, len(heads), tuple(groups.values()))

    # -- per-head views --------------------------------------------------------------------------

    @cached_property
    def head_specs(self) -> tuple[tuple[str, dict[str, Any]], ...]:
        """(pattern, normalized params) of every head, in head order."""
        spec: list[Any] = [None] * self.num_heads
        for g in self.groups:
            for h, p in zip(g.heads, g.params, strict=True):
                spec[h] = (g.pattern, p)
        return tuple(spec)

    def _per_head(self, field: str) -> tuple:
        """A head group attribute for every head, in head order."""
        out: list[Any] = [None] * self.num_heads
        for g in self.groups:
            for h in g.heads:
                out[h] = getattr(g, field)
        return tuple(out)

    @cached_property
    def head_precisions(self) -> tuple[str, ...]:
        """The precision of every head, in head order (skip heads: the default)."""
        return self._per_head("precision")

    @cached_property
    def head_reuse(self) -> tuple[bool, ...]:
        """Whether every head takes part in a residual entry's reuse, in head order."""
        return self._per_head("reuse")

    def precision_heads(self, precision: str) -> tuple[int, ...]:
        """The computed heads (not skip) that run in ``precision``, ascending."""
        return tuple(h for h in self.computed_heads if self.head_precisions[h] == precision)

    @property
    def precisions(self) -> tuple[str, ...]:
        """The precisions the layer's computed heads run in, in :data:`PRECISIONS` order."""
        used = {self.head_precisions[h] for h in self.computed_heads}
        return tuple(p for p in PRECISIONS if p in used)

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
    def inexact_heads(self) -> tuple[int, ...]:
        """Heads whose output is not exact attention: every head but the native dense ones."""
        return tuple(h for h, (pat, _) in enumerate(self.head_specs)
                     if not (pat == "dense" and self.head_precisions[h] == DEFAULT_PRECISION))

    @property
    def reuse_heads(self) -> tuple[int, ...]:
        """The inexact heads that reuse residuals in a residual entry (run exactly at its exact step,
        their residual added after it); the others run their masks alone there."""
        return tuple(h for h in self.inexact_heads if self.head_reuse[h])

    @property
    def is_dense(self) -> bool:
        """Every head of the layer is dense in native precision (exact attention: the runtime runs it
        as such, on cuDNN or the Hopper kernel)."""
        return all(g.pattern == "dense" and g.precision == DEFAULT_PRECISION for g in self.groups)

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

    def with_precision(self, precision: str, heads: Iterable[int] | None = None) -> LayerPlan:
        """This layer plan with the kept blocks of ``heads`` (default: every computed head) in
        ``precision``, every other head as it was (same masks; skip heads stay skip; heads grouped
        as :meth:`from_heads` groups them)."""
        chosen = set(self.computed_heads if heads is None else heads)
        precisions = [precision if h in chosen and pattern != "skip" else self.head_precisions[h]
                      for h, (pattern, _) in enumerate(self.head_specs)]
        return LayerPlan.from_heads(self.head_specs, self.geometry, self.block_size, precisions=precisions,
                                    reuse=self.head_reuse)

    def with_reuse(self, reuse: Sequence[bool]) -> LayerPlan:
        """This layer plan with ``reuse[h]`` saying whether head h takes part in residual reuse (a
        native dense head always does: it is exact); masks and precisions as they were."""
        return LayerPlan.from_heads(self.head_specs, self.geometry, self.block_size,
                                    precisions=self.head_precisions, reuse=reuse)

    def for_geometry(self, geometry: Geometry) -> LayerPlan:
        """This layer plan at another geometry (:mod:`attnsearch.retarget`): every head's parameters
        carried over in their own units; ``self`` at its own geometry. PlanError naming the field
        when the geometry cannot be served."""
        if geometry == self.geometry:
            return self
        check_target(self.geometry, geometry)
        groups = tuple({"pattern": g.pattern, "heads": list(g.heads), "precision": g.precision, "reuse": g.reuse,
                        "params": [retarget_params(g.pattern, p, self.geometry, geometry, self.block_size)
                                   for p in g.params]} for g in self.groups)
        return LayerPlan(geometry, self.block_size, self.num_heads, groups)


__all__ = ["DEFAULT_PRECISION", "PRECISIONS", "HeadGroup", "LayerPlan"]
