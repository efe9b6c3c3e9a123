"""What a profile's table must hold to be used: checked on load, so bad data is refused, never planned.

Rules (each violation is one :class:`ProfileError` line naming the file and the column or field):

* columns ``step``, ``layer``, ``head`` are integers ≥ 0; ``pattern``, ``params`` and ``candidate``
  are strings, ``pattern`` a known pattern, ``params`` a JSON object (strict data); ``density``, ``recall`` and ``rel_err`` are finite
  numbers, density and recall in [0, 1] (a rounding margin of :data:`TOLERANCE`), rel_err ≥ 0; the
  same for the error columns of other precisions (``rel_err_fp8``) and for a profile's per-prompt
  columns ``prompt{i}.recall``, ``prompt{i}.rel_err`` and ``prompt{i}.rel_err_fp8``;
* every (pattern, params) pair is valid for its family at the profile's geometry and block size
  (:func:`check_params`, on load, once the metadata gives them);
* no two rows measure the same (step, layer, head, candidate);
* coverage: every step present holds every layer 0..L−1 and every head 0..H−1 (L, H: the largest
  numbers + 1), so layers and heads are contiguous from 0. Steps need not be: a shard of a sharded
  run holds some steps only. :func:`check_steps_complete` is the check for consumers that need
  every step 0..S−1 (a plan covers steps [0, S)).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..jsondata import JSONDataError, check_data, parse
from ..patterns import PATTERNS, PatternError, normalize_params
from .errors import ProfileError

#: Densities and recalls may exceed 1 by float rounding of sums of softmax mass.
TOLERANCE = 1e-6


def _error(path, message: str) -> ProfileError:
    return ProfileError(f"{path}: {message}")


def _gaps(present, n: int) -> str:
    """The numbers of 0..n−1 that ``present`` lacks as runs (``"0–2, 5, 7–8"``, at most 6 shown),
    found from the present values alone: n may be huge (a corrupt file can claim layer 10⁸)."""
    runs: list[tuple[int, int]] = []
    expect = 0
    for v in sorted(set(int(x) for x in present)):
        if v >= n:
            break
        if v > expect:
            runs.append((expect, v - 1))
        expect = v + 1
    if expect < n:
        runs.append((expect, n - 1))
    text = [f"{a}" if a == b else f"{a}–{b}" for a, b in runs[:6]]
    return ", ".join(text) + (", …" if len(runs) > 6 else "")


def _statistic(col) -> str | None:
    """What a column holds: ``recall``, or ``rel_err`` for rel_err and the error columns of other
    precisions (``rel_err_fp8``), each also per prompt (``prompt{i}.<name>``); None otherwise."""
    if not isinstance(col, str):
        return None
    name = col.split(".", 1)[1] if col.startswith("prompt") and "." in col else col
    if name == "recall":
        return "recall"
    return "rel_err" if name == "rel_err" or name.startswith("rel_err_") else None


def check_table(df: pd.DataFrame, path) -> None:
    """Raise ProfileError (naming ``path`` and the column) unless ``df`` holds usable statistics."""
    if not len(df):
        raise _error(path, "the profile table has no rows")
    for col in ("step", "layer", "head"):
        if not pd.api.types.is_integer_dtype(df[col]):
            raise _error(path, f"column {col!r} must hold integers, has {df[col].dtype}")
        if (df[col] < 0).any():
            raise _error(path, f"column {col!r} holds negative numbers (e.g. {int(df[col].min())})")
    for col in ("pattern", "params", "candidate"):
        if not df[col].map(lambda v: isinstance(v, str)).all():
            raise _error(path, f"column {col!r} must hold strings")
    for text in df["params"].unique():
        try:
            params = parse(text, "params")
            check_data(params)
        except JSONDataError as err:
            raise _error(path, f"column 'params' holds {text[:40]!r}: {err}") from None
        if not isinstance(params, dict):
            raise _error(path, f"column 'params' holds {text[:40]!r}, not a JSON object")
    unknown = sorted(set(df["pattern"]) - set(PATTERNS))
    if unknown:
        raise _error(path, f"column 'pattern' names unknown pattern(s) {', '.join(map(repr, unknown[:5]))} "
                           f"(known: {', '.join(PATTERNS)})")
    others = [(c, 0.0, 1.0 if _statistic(c) == "recall" else None) for c in df.columns
              if c not in ("recall", "rel_err") and _statistic(c)]
    for col, low, high in (("density", 0.0, 1.0), ("recall", 0.0, 1.0), ("rel_err", 0.0, None), *others):
        if not (pd.api.types.is_numeric_dtype(df[col]) and not pd.api.types.is_bool_dtype(df[col])):
            raise _error(path, f"column {col!r} must hold numbers, has {df[col].dtype}")
        values = df[col].astype("float64")
        bad = ~np.isfinite(values)  # NaN and ±inf
        if bad.any():
            row = df[bad].iloc[0]
            raise _error(path, f"column {col!r} holds a non-finite value ({float(values[bad].iloc[0])}) at step "
                               f"{row['step']} layer {row['layer']} head {row['head']}")
        out = (values < low - TOLERANCE) | ((values > high + TOLERANCE) if high is not None else False)
        if out.any():
            span = f"[{low:g}, {high:g}]" if high is not None else f"≥ {low:g}"
            raise _error(path, f"column {col!r} holds {float(values[out].iloc[0])!r}, outside {span}")
    dup = df.duplicated(["step", "layer", "head", "candidate"])
    if dup.any():
        row = df[dup].iloc[0]
        raise _error(path, f"duplicate rows: step {row['step']} layer {row['layer']} head {row['head']} "
                           f"candidate {row['candidate']!r} appears more than once")
    _check_coverage(df, path)


def check_params(df: pd.DataFrame, geometry, block_size: int, path) -> None:
    """Raise ProfileError unless every (pattern, params) pair of ``df`` is valid for its family at
    ``geometry`` and ``block_size`` (what the search and the plan will build from them)."""
    for pattern, text in df[["pattern", "params"]].drop_duplicates().itertuples(index=False):
        try:
            normalize_params(pattern, parse(text, "params"), geometry, block_size)
        except (PatternError, JSONDataError, ValueError, TypeError, KeyError) as err:
            raise _error(path, f"column 'params' holds {text[:40]!r}, not valid for {pattern}: {err}") from None


def _check_coverage(df: pd.DataFrame, path) -> None:
    layers, heads = int(df["layer"].max()) + 1, int(df["head"].max()) + 1
    sites = df[["step", "layer", "head"]].drop_duplicates()
    per_step = sites.groupby("step").size()
    short = per_step[per_step != layers * heads]
    if len(short):
        step = int(short.index[0])
        at = sites[sites["step"] == step]
        if at["layer"].nunique() != layers:
            raise _error(path, f"step {step} lacks layer(s) {_gaps(at['layer'], layers)} (the profile has layers "
                               f"0–{layers - 1}; layers must be numbered from 0 without gaps)")
        counts = at.groupby("layer").size()
        layer = int(counts[counts != heads].index[0])
        missing = _gaps(at[at["layer"] == layer]["head"], heads)
        raise _error(path, f"step {step} layer {layer} lacks head(s) {missing} (the profile has heads "
                           f"0–{heads - 1}; heads must be numbered from 0 without gaps)")


def check_steps_complete(df: pd.DataFrame, path) -> None:
    """Raise ProfileError unless the table holds every step 0..S−1 (S: the largest step + 1)."""
    steps = df["step"].unique()
    last = int(steps.max()) if len(steps) else -1
    if len(steps) != last + 1:
        raise _error(path, f"the profile lacks step(s) {_gaps(steps, last + 1)} of 0–{last} (a shard of a "
                           f"sharded run? join the shards with `attnsearch merge`)")


__all__ = ["TOLERANCE", "check_steps_complete", "check_table"]
