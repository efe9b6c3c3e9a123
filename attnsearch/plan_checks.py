"""The checks a plan is loaded through: its error type, the limits of what it may describe, and
the rules its fields and metadata must meet as data (docs/design.md, "Plan JSON"). :mod:`attnsearch.plan`
applies them while it parses."""

from __future__ import annotations

import math
import re
from typing import Any, Iterable, Mapping, Sequence

from .geometry import BLOCK_SIZES, Geometry
from .jsondata import INT_LIMIT, JSONDataError, check_data, key_path, nonfinite_to_null
from .messages import one_line
from .patterns import PatternError

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


def check_geometry(geometry: Any, block_size: Any) -> None:
    if not isinstance(geometry, Geometry):
        raise PlanError(f"geometry: must be a Geometry, got {type(geometry).__name__}")
    if geometry.num_tokens > MAX_TOKENS:
        raise PlanError(f"geometry: {geometry.num_tokens} tokens, more than the runtime's {MAX_TOKENS}")
    if block_size not in BLOCK_SIZES or isinstance(block_size, bool):
        raise PlanError(f"block_size: must be one of {BLOCK_SIZES}, got {block_size!r}")


def check_json_data(value: Any, path: str) -> None:
    """Raise PlanError unless ``value`` is strict JSON data (finite numbers, bounded nesting)."""
    try:
        check_data(value, path)
    except JSONDataError as err:
        raise PlanError(str(err)) from None


def as_int(value: Any, path: str, lo: int, hi: float = math.inf) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
        rng = f"[{lo}, {hi}]" if math.isfinite(hi) else f"≥ {lo}"
        raise PlanError(f"{path}: must be an integer {rng}, got {value!r}")
    return value


def as_object(value: Any, path: str) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        raise PlanError(f"{path}: must be an object, got {type(value).__name__}")
    return dict(value)


def as_list(value: Any, path: str) -> list[Any]:
    if not isinstance(value, (list, tuple)):
        raise PlanError(f"{path}: must be a list, got {type(value).__name__}")
    return list(value)


def check_keys(obj: Mapping[str, Any], path: str, required: Iterable[str], optional: Iterable[str] = ()) -> None:
    required = tuple(required)
    missing = [k for k in required if k not in obj]
    if missing:
        raise PlanError(f"{key_path(path, missing[0])}: missing")
    unknown = sorted(set(obj) - set(required) - set(optional), key=str)
    if unknown:
        allowed = ", ".join((*required, *optional))
        raise PlanError(f"{key_path(path, unknown[0])}: unknown field (allowed: {allowed})")


_PARAM_FIELD = re.compile(r"^(\w+)\.(\w+) ")


def check_extent(pattern: str, params: Mapping[str, Any], geometry: Geometry, path: str) -> None:
    """Parameters within what the geometry can mean (beyond the family's own range checks)."""
    rows = params.get("rows")
    limit = geometry.frames * geometry.height
    if rows is not None and rows > limit:
        raise PlanError(f"{path}.rows: {pattern}.rows must be at most frames × height = {limit} (a band over "
                        f"the whole video), got {rows!r}")


def pattern_error(err: PatternError, path: str) -> PlanError:
    """Prefix a PatternError with the plan path, down to the parameter when the message names one."""
    msg = str(err)
    m = _PARAM_FIELD.match(msg)
    return PlanError(f"{path}.{m.group(2)}: {msg}" if m else f"{path}: {msg}")


# --- metadata: free-form JSON objects, with ranges for the figures they name ------------------------

INT_MAX = INT_LIMIT - 1
_UNIT = (0.0, False, 1.0, "in [0, 1]")
_NONNEG = (0.0, False, math.inf, "≥ 0")
_POSITIVE = (0.0, True, math.inf, "> 0")


def meta_range(key: str) -> tuple[float, bool, float, str] | None:
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


def strict_meta(name: str, meta: Any) -> dict[str, Any]:
    """A metadata object in its stored form (documented non-finite values as null), checked."""
    meta = as_object(meta, name)
    try:
        meta = nonfinite_to_null(meta, NULL_WHEN_NOT_FINITE, name)
        if name == "search" and isinstance(meta.get("pareto"), list):
            meta["pareto"] = nonfinite_to_null(meta["pareto"], None, "search.pareto")
    except JSONDataError as err:
        raise PlanError(str(err)) from None
    check_json_data(meta, name)
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
            rng = meta_range(k) if isinstance(k, str) else None
            if rng is None or not isinstance(v, (int, float)) or isinstance(v, bool):
                continue
            lo, lo_open, hi, wording = rng
            if not ((v > lo if lo_open else v >= lo) and v <= hi):
                raise PlanError(f"{where}: must be {wording}, got {v!r}")
    return meta


# --- head groups and layer plans ----------------------------------------------------------------



def compact_ranges(values: Sequence[int]) -> str:
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

__all__ = ["INT_MAX", "MAX_HEADS", "MAX_TOKENS", "NULL_WHEN_NOT_FINITE", "PlanError", "as_int", "as_list", "as_object",
           "check_extent", "compact_ranges", "check_geometry", "check_json_data", "check_keys", "meta_range", "pattern_error", "strict_meta"]
