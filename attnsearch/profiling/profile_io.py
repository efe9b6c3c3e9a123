"""The profile: what the profiler measured (:class:`Profile`), and its file format.

A profile file is one Parquet table (long format) with everything else in its metadata. The
table is what ``pandas.read_parquet`` shows: one row per (step, layer, head, candidate). The file
metadata (key ``attnsearch``) holds JSON: schema version, geometry, model name and
fingerprint (and its experts, :mod:`attnsearch.experts`), sampling settings, timing, the prompts;
key ``attnsearch.maps`` holds the block-level attention maps as zlib-compressed float16 with
their (layer, head) index. A profile of P prompts (each step's batch split into P equal shares)
has its ``recall`` and ``rel_err`` as the mean over all of them plus, per prompt i, the columns
``prompt{i}.recall`` and ``prompt{i}.rel_err`` (:func:`prompt_columns`); a candidate's density
is the same for every prompt (one mask serves them all). A profile whose settings name
precisions beyond ``native`` has one error column per such precision after ``rel_err``
(``rel_err_fp8``: the candidate with its kept blocks in FP8, :func:`precision_columns`), and per
prompt ``prompt{i}.rel_err_fp8`` after that prompt's ``rel_err``. A profile whose settings name
``residual_steps`` has, after those, ``rel_err_reuse``: the candidate's error at that step under
residual reuse at those exact steps (0 at an exact step, the drift of its residual from its span's
exact step after one, its own ``rel_err`` before the first; batch mean only, not per prompt;
docs/design.md, "Residual reuse"). Written to a temporary file beside
the target and renamed, so an interrupted run never leaves a half-written profile.
"""

from __future__ import annotations

import math

import base64
import json
import os
import zlib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from ..atomic_io import replacing
from ..geometry import Geometry, check_block_size
from ..jsondata import INT_LIMIT, JSONDataError, dumps, parse
from ..layer_plan import PRECISIONS
from .candidates import CandidateGrid
from .errors import ProfileError
from .profile_check import check_params, check_table

FORMAT = "attnsearch-profile"
SCHEMA_VERSION = 1
TABLE_COLUMNS = ["step", "layer", "head", "pattern", "params", "candidate", "density", "recall", "rel_err"]
#: The per-prompt statistics of a profile of several prompts (see the module docstring).
PROMPT_STATS = ("recall", "rel_err")
#: The optional column of a profile that measured FP8 kept blocks (``precisions`` with "fp8").
FP8_COLUMN = "rel_err_fp8"
#: The error column of each precision beyond native (whose error is ``rel_err``).
PRECISION_COLUMNS = {"fp8": FP8_COLUMN}
#: The optional column of a profile that measured residual reuse (``residual_steps``).
REUSE_COLUMN = "rel_err_reuse"
#: Integer fields of the metadata's `attention` (the profiled calls' shape).
ATTENTION_COUNTS = ("batch", "heads", "kv_heads", "head_dim")


def precision_columns(precisions: tuple[str, ...] = ("native",)) -> list[str]:
    """The error columns of ``precisions`` beyond ``native`` (:data:`PRECISION_COLUMNS`)."""
    return [PRECISION_COLUMNS[p] for p in precisions if p != "native"]


def prompt_columns(prompts: int, precisions: tuple[str, ...] = ("native",)) -> list[str]:
    """The table columns of ``prompts`` prompts' own statistics, in prompt order."""
    stats = (*PROMPT_STATS, *precision_columns(precisions))
    return [f"prompt{i}.{stat}" for i in range(prompts) for stat in stats]


def table_columns(prompts: int = 0, precisions: tuple[str, ...] = ("native",), reuse: bool = False) -> list[str]:
    """Every column of a profile table of ``prompts`` prompts measured at ``precisions`` (and under
    residual reuse, ``reuse``), in order."""
    return (TABLE_COLUMNS + precision_columns(precisions) + ([REUSE_COLUMN] if reuse else [])
            + prompt_columns(prompts, precisions))


def _precisions(value: Any) -> tuple[str, ...]:
    """``value`` as precisions in :data:`~attnsearch.layer_plan.PRECISIONS` order (once each)."""
    known = ", ".join(PRECISIONS)
    if not isinstance(value, (list, tuple)) or not all(isinstance(p, str) for p in value):
        raise ProfileError(f"precisions must be a list of names ({known}), got {str(value)[:60]!r}")
    unknown = [p for p in value if p not in PRECISIONS]
    if unknown:
        raise ProfileError(f"precisions: unknown precision {unknown[0][:40]!r} (known: {known})")
    if "native" not in value:
        raise ProfileError(f"precisions must include 'native' (the error of rel_err), got {list(value)}")
    return tuple(p for p in PRECISIONS if p in value)


@dataclass(frozen=True)
class ProfileSettings:
    """How a profile samples and what it measures. ``precisions``: the precisions whose error
    each candidate gets (``native``: ``rel_err``, always; ``fp8``: ``rel_err_fp8``), held in
    :data:`~attnsearch.layer_plan.PRECISIONS` order. ``residual_steps``: exact steps of residual
    reuse whose error each candidate also gets (``rel_err_reuse``; empty: none), ascending."""

    queries: int = 256
    seed: int = 0
    block_size: int = 128
    map_size: int = 64
    grid: CandidateGrid = field(default_factory=CandidateGrid)
    precisions: tuple[str, ...] = ("native",)
    residual_steps: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        check_block_size(self.block_size)
        if self.queries < 1:
            raise ProfileError(f"queries must be ≥ 1, got {self.queries}")
        if self.map_size < 1:
            raise ProfileError(f"map_size must be ≥ 1, got {self.map_size}")
        object.__setattr__(self, "precisions", _precisions(self.precisions))
        steps = self.residual_steps
        if not isinstance(steps, (list, tuple)) or any(isinstance(s, bool) or not isinstance(s, int) or s < 0
                                                        for s in steps) or len(set(steps)) != len(steps):
            raise ProfileError(f"residual_steps must be distinct step numbers ≥ 0, got {str(steps)[:60]!r}")
        object.__setattr__(self, "residual_steps", tuple(sorted(steps)))

    def to_dict(self) -> dict[str, Any]:
        """JSON data; ``precisions`` only where it names more than native, so a native profile's
        settings hold just the fields every reader of format version 1 takes."""
        out = asdict(self)
        out["grid"] = self.grid.to_dict()
        if self.precisions == ("native",):
            del out["precisions"]
        else:
            out["precisions"] = list(self.precisions)
        if self.residual_steps:
            out["residual_steps"] = list(self.residual_steps)
        else:
            del out["residual_steps"]
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ProfileSettings:
        """The settings of :meth:`to_dict`; without ``precisions`` (older files): native only."""
        data = dict(data)
        data["grid"] = CandidateGrid.from_dict(data.get("grid", {}))
        if "residual_steps" in data and isinstance(data["residual_steps"], list):
            data["residual_steps"] = tuple(data["residual_steps"])
        return cls(**data)


@dataclass
class Profile:
    """Measured statistics of one model (or one set of tensors).

    ``table``: long format, one row per (step, layer, head, candidate); columns TABLE_COLUMNS.
    ``maps``: {(layer, head): [m, m] float32} block-level attention maps (mean softmax mass per
    (query group, key group)), averaged over ``map_steps[(layer, head)]`` steps.
    ``prompts``: the profiled prompts (empty: inputs not split by prompt); with P of them the table
    also holds :func:`prompt_columns` (P). ``settings.precisions`` beyond native add
    :func:`precision_columns` (and their per-prompt columns): :meth:`columns` lists them all.
    """

    table: pd.DataFrame
    geometry: Geometry
    settings: ProfileSettings
    model: dict[str, str] = field(default_factory=lambda: {"name": "tensors", "fingerprint": ""})
    maps: dict[tuple[int, int], torch.Tensor] = field(default_factory=dict)
    map_steps: dict[tuple[int, int], int] = field(default_factory=dict)
    timing: dict[str, float] = field(default_factory=dict)
    #: Shape of the profiled calls: batch, heads, kv_heads, head_dim, dtype (the cost model needs it).
    attention: dict[str, Any] = field(default_factory=dict)
    prompts: tuple[str, ...] = ()

    @property
    def num_prompts(self) -> int:
        """Prompts with their own statistics (0: none, the inputs were not split by prompt)."""
        return len(self.prompts)

    @property
    def columns(self) -> list[str]:
        """The table's columns (:func:`table_columns` of its prompts and precisions)."""
        return table_columns(self.num_prompts, self.settings.precisions, bool(self.settings.residual_steps))

    def prompt_table(self, prompt: int) -> pd.DataFrame:
        """The table as prompt ``prompt`` alone measured it (TABLE_COLUMNS and the precisions' error
        columns, with that prompt's recall and errors)."""
        if not 0 <= prompt < self.num_prompts:
            raise ProfileError(f"prompt {prompt} is outside the profile's {self.num_prompts} prompt(s)")
        errors = precision_columns(self.settings.precisions)
        out = self.table[TABLE_COLUMNS + errors].copy()
        for stat in (*PROMPT_STATS, *errors):
            out[stat] = self.table[f"prompt{prompt}.{stat}"].to_numpy()
        return out

    @property
    def num_steps(self) -> int:
        return int(self.table["step"].max()) + 1 if len(self.table) else 0

    @property
    def num_layers(self) -> int:
        return int(self.table["layer"].max()) + 1 if len(self.table) else 0

    @property
    def num_heads(self) -> int:
        return int(self.table["head"].max()) + 1 if len(self.table) else 0

    @classmethod
    def concat(cls, parts: list[Profile]) -> Profile:
        """Join profiles of the same model, geometry and settings (e.g. per-call pieces)."""
        if not parts:
            raise ProfileError("nothing to concatenate")
        first = parts[0]
        for other in parts[1:]:
            if other.geometry != first.geometry or other.settings != first.settings:
                raise ProfileError("cannot join profiles with different geometry or settings")
            if list(other.table.columns) != list(first.table.columns):
                raise ProfileError("cannot join profiles of different prompt counts")
        table = pd.concat([p.table for p in parts], ignore_index=True)
        table = table.sort_values(["step", "layer", "head"], kind="stable", ignore_index=True)
        maps: dict[tuple[int, int], torch.Tensor] = {}
        counts: dict[tuple[int, int], int] = {}
        for part in parts:
            for key, m in part.maps.items():
                n = part.map_steps.get(key, 1)
                if key in maps:
                    total = counts[key] + n
                    maps[key] = (maps[key] * counts[key] + m * n) / total
                    counts[key] = total
                else:
                    maps[key], counts[key] = m.clone(), n
        timing = {k: sum(p.timing.get(k, 0.0) for p in parts) for k in first.timing}
        shapes = {json.dumps(p.attention, sort_keys=True) for p in parts}
        if len(shapes) > 1:
            raise ProfileError(f"cannot join profiles of different attention shapes: {sorted(shapes)}")
        return cls(table, first.geometry, first.settings, dict(first.model), maps, counts, timing,
                   dict(first.attention), tuple(first.prompts))

    def save(self, path, *, inputs=()) -> None:
        write_profile(self, path, inputs=inputs)

    @classmethod
    def load(cls, path) -> Profile:
        return read_profile(path)





def default_path(model_name: str) -> Path:
    """Where a model's profile goes unless told: ``profiles/<name>.parquet`` (``/`` and ``:`` → ``_``)."""
    return Path("profiles") / f"{model_name.replace('/', '_').replace(':', '_')}.parquet"


def write_profile(profile: Profile, path: str | os.PathLike, *, inputs=()) -> Path:
    """Write ``profile`` to ``path`` (Parquet, whole or not at all; never over one of ``inputs``).
    A profile whose table breaks the rules of :mod:`~attnsearch.profiling.profile_check` (e.g.
    non-finite statistics) is refused before anything is written."""
    path = Path(path)
    columns = profile.columns
    missing = [c for c in columns if c not in profile.table.columns]
    if missing:
        at = f" at precisions {', '.join(profile.settings.precisions)}" if len(profile.settings.precisions) > 1 else ""
        raise ProfileError(f"{path}: the profile of {profile.num_prompts} prompt(s){at} lacks column(s) "
                           f"{', '.join(missing)}")
    check_table(profile.table[columns], path)
    keys = sorted(profile.maps)
    maps = np.stack([profile.maps[k].numpy() for k in keys]).astype(np.float16) if keys else np.zeros((0, 0, 0), np.float16)
    meta = {
        "format": FORMAT,
        "version": SCHEMA_VERSION,
        "geometry": profile.geometry.to_dict(),
        "model": profile.model,
        "settings": profile.settings.to_dict(),
        "timing": profile.timing,
        "attention": profile.attention,
        **({"prompts": list(profile.prompts)} if profile.prompts else {}),
        "maps": {"sites": [list(k) for k in keys], "steps": [profile.map_steps.get(k, 1) for k in keys],
                 "shape": list(maps.shape), "dtype": "float16"},
    }
    table = pa.Table.from_pandas(profile.table[columns], preserve_index=False)
    table = table.replace_schema_metadata({
        **(table.schema.metadata or {}),
        b"attnsearch": dumps(meta).encode(),
        b"attnsearch.maps": base64.b64encode(zlib.compress(maps.tobytes(), 6)),
    })
    with replacing(path, inputs=inputs) as tmp:
        pq.write_table(table, tmp, compression="zstd")
    return path


def read_profile(path: str | os.PathLike) -> Profile:
    """Load a profile file; every way it can be unusable is one ProfileError line naming the file and
    the field (see :mod:`attnsearch.profiling.profile_check` for what the table must hold)."""
    path = Path(path)
    if path.is_dir():
        raise ProfileError(f"{path}: is a directory, not a profile file")
    if not path.exists():
        raise ProfileError(f"{path}: does not exist")
    try:
        table = pq.read_table(path)
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise ProfileError(f"{path}: not a Parquet file ({str(exc).splitlines()[0] if str(exc) else exc!r})") from None
    metadata = table.schema.metadata or {}
    raw = metadata.get(b"attnsearch")
    if raw is None:
        raise ProfileError(f"{path}: not an attnsearch profile (no 'attnsearch' metadata)")
    try:
        meta = parse(raw, f"{path}: metadata")
    except JSONDataError as err:
        raise ProfileError(str(err)) from None
    if not isinstance(meta, dict):
        raise ProfileError(f"{path}: metadata is not a JSON object")
    if meta.get("format") != FORMAT:
        raise ProfileError(f"{path}: format {meta.get('format')!r} is not {FORMAT!r}")
    if meta.get("version") != SCHEMA_VERSION:
        raise ProfileError(f"{path}: profile schema version {meta.get('version')!r} is not supported "
                           f"(this attnsearch reads version {SCHEMA_VERSION}); re-run `attnsearch profile`")
    missing = [k for k in ("geometry", "settings", "model", "maps") if k not in meta]
    if missing:
        raise ProfileError(f"{path}: metadata lacks {', '.join(missing)}")
    try:
        df = table.to_pandas()
    except (pa.ArrowException, ValueError, TypeError) as exc:
        raise ProfileError(f"{path}: the table cannot be read ({str(exc).splitlines()[0]})") from None
    prompts = _field(path, "prompts", _prompts, meta.get("prompts", []))
    settings = _field(path, "settings", lambda g: ProfileSettings.from_dict(_mapping(g)), meta["settings"])
    columns = table_columns(len(prompts), settings.precisions, bool(settings.residual_steps))
    missing = [c for c in columns if c not in df.columns]
    if missing:
        why = [f"metadata prompts names {len(prompts)}"] if prompts else []
        if len(settings.precisions) > 1:
            why.append(f"settings.precisions names {', '.join(settings.precisions)}")
        if settings.residual_steps:
            why.append(f"settings.residual_steps names {', '.join(map(str, settings.residual_steps))}")
        raise ProfileError(f"{path}: profile table lacks column(s) {', '.join(missing)}"
                           + (f" ({'; '.join(why)})" if why else ""))
    df = df[columns]
    check_table(df, path)
    geometry = _field(path, "geometry", lambda g: Geometry.from_dict(_mapping(g)), meta["geometry"])
    check_params(df, geometry, settings.block_size, path)
    model = _field(path, "model", _model, meta["model"])
    keys, steps, maps = _read_maps(path, meta["maps"], metadata.get(b"attnsearch.maps"))
    layers, heads = int(df["layer"].max()) + 1, int(df["head"].max()) + 1
    outside = [k for k in keys if not (0 <= k[0] < layers and 0 <= k[1] < heads)]
    if outside:
        raise ProfileError(f"{path}: maps.sites holds (layer, head) {outside[0]} outside the table's "
                           f"{layers} layers × {heads} heads")
    timing = meta.get("timing", {})
    attention = meta.get("attention", {})
    if not isinstance(timing, dict) or not isinstance(attention, dict):
        raise ProfileError(f"{path}: metadata fields timing and attention must be JSON objects")
    for key, value in timing.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
            raise ProfileError(f"{path}: metadata timing.{key} must be a finite number ≥ 0 (seconds), got {value!r}")
    for key in ATTENTION_COUNTS:
        value = attention.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or not 0 < value < INT_LIMIT):
            raise ProfileError(f"{path}: metadata attention.{key} must be a positive integer, got {value!r}")
    if "dtype" in attention and not isinstance(attention["dtype"], str):
        raise ProfileError(f"{path}: metadata attention.dtype must be a string, got {attention['dtype']!r}")
    return Profile(table=df, geometry=geometry, settings=settings, model=model,
                   maps={k: torch.from_numpy(maps[i].copy()) for i, k in enumerate(keys)},
                   map_steps=dict(zip(keys, steps)), timing=timing, attention=attention, prompts=prompts)


def _mapping(value: Any) -> dict:
    if not isinstance(value, dict):
        raise TypeError(f"must be a JSON object, got {type(value).__name__}")
    return value


def _model(value: Any) -> dict[str, Any]:
    """name (required) and fingerprint (strings), and optionally experts
    (:func:`attnsearch.experts.parse_experts`)."""
    from ..experts import ExpertError, parse_experts

    value = _mapping(value)
    if not all(isinstance(v, str) for k, v in value.items() if k != "experts"):
        raise TypeError("must map names to strings")
    if "name" not in value:
        raise ValueError("must hold the model's name")
    if "experts" in value:
        try:
            parse_experts(value["experts"], "experts")
        except ExpertError as err:
            raise ValueError(str(err)) from None
    return dict(value)


def _prompts(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise TypeError("must be a list of strings")
    return tuple(value)


def _field(path: Path, name: str, build, value: Any):
    """``build(value)``, its failure a ProfileError naming the file and the metadata field."""
    try:
        return build(value)
    except (TypeError, ValueError, KeyError, AttributeError) as exc:
        message = str(exc).removeprefix(f"{name}: ").removeprefix(f"{name} ")
        raise ProfileError(f"{path}: metadata {name}: {message}") from None


def _read_maps(path: Path, m: Any, blob: bytes | None) -> tuple[list[tuple[int, int]], list[int], np.ndarray]:
    """The maps' (layer, head) keys, step counts and values [n, side, side] from the metadata."""
    def bad(message: str) -> ProfileError:
        return ProfileError(f"{path}: metadata maps: {message}")

    if not isinstance(m, dict) or not all(k in m for k in ("sites", "steps", "shape")):
        raise bad("must be an object with sites, steps and shape")
    sites, steps, shape = m["sites"], m["steps"], m["shape"]
    if not (isinstance(sites, list) and all(isinstance(s, list) and len(s) == 2 and all(_count(x) for x in s)
                                            for s in sites)):
        raise bad("sites must be a list of [layer, head] pairs of integers ≥ 0")
    if not (isinstance(steps, list) and len(steps) == len(sites) and all(_count(x) and x >= 1 for x in steps)):
        raise bad("steps must hold one integer ≥ 1 per site")
    if not (isinstance(shape, list) and len(shape) == 3 and all(_count(x) for x in shape)
            and shape[0] == len(sites) and shape[1] == shape[2] and (shape[1] >= 1 or not sites)):
        raise bad(f"shape must be [sites, side, side] with {len(sites)} site(s), got {shape!r}")
    keys = [(int(a), int(b)) for a, b in sites]
    if len(set(keys)) != len(keys):
        raise bad("sites names one (layer, head) twice")
    if blob is None:
        raise bad("the 'attnsearch.maps' data is missing")
    expected = shape[0] * shape[1] * shape[2] * 2
    try:
        data = zlib.decompressobj().decompress(base64.b64decode(blob, validate=True), expected + 1)
    except (ValueError, zlib.error) as exc:
        raise bad(f"the stored data is not valid base64 zlib ({exc})") from None
    if len(data) != expected:
        raise bad(f"the stored data holds {len(data)} bytes, shape {shape} needs {expected}")
    arr = np.frombuffer(data, dtype=np.float16).reshape(shape).astype(np.float32)
    if not np.isfinite(arr).all():
        raise bad("the attention maps hold non-finite values")
    return keys, [int(x) for x in steps], arr


def _count(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool) and x >= 0


__all__ = ["FORMAT", "FP8_COLUMN", "PRECISION_COLUMNS", "PROMPT_STATS", "REUSE_COLUMN", "SCHEMA_VERSION", "TABLE_COLUMNS", "Profile",
           "ProfileError", "ProfileSettings", "default_path", "precision_columns", "prompt_columns", "read_profile",
           "table_columns", "write_profile"]
