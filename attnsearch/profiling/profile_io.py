"""The profile: what the profiler measured (:class:`Profile`), and its file format.

A profile file is one Parquet table (long format) with everything else in its metadata. The
table is what ``pandas.read_parquet`` shows: one row per (step, layer, head, candidate). The file
metadata (key ``attnsearch``) holds JSON: schema version, geometry, model name and
fingerprint, sampling settings, timing; key ``attnsearch.maps`` holds the block-level attention
maps as zlib-compressed float16 with their (layer, head) index. Written to a temporary file beside
the target and renamed, so an interrupted run never leaves a half-written profile.
"""

from __future__ import annotations

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
from .candidates import CandidateGrid

FORMAT = "attnsearch-profile"
SCHEMA_VERSION = 1
TABLE_COLUMNS = ["step", "layer", "head", "pattern", "params", "candidate", "density", "recall", "rel_err"]


class ProfileError(ValueError):
    """Bad profiler input: shapes, settings or an attention call the profiler cannot measure."""


@dataclass(frozen=True)
class ProfileSettings:
    queries: int = 256
    seed: int = 0
    block_size: int = 128
    map_size: int = 64
    grid: CandidateGrid = field(default_factory=CandidateGrid)

    def __post_init__(self) -> None:
        check_block_size(self.block_size)
        if self.queries < 1:
            raise ProfileError(f"queries must be ≥ 1, got {self.queries}")
        if self.map_size < 1:
            raise ProfileError(f"map_size must be ≥ 1, got {self.map_size}")

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["grid"] = self.grid.to_dict()
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ProfileSettings:
        data = dict(data)
        data["grid"] = CandidateGrid.from_dict(data.get("grid", {}))
        return cls(**data)


@dataclass
class Profile:
    """Measured statistics of one model (or one set of tensors).

    ``table``: long format, one row per (step, layer, head, candidate); columns TABLE_COLUMNS.
    ``maps``: {(layer, head): [m, m] float32} block-level attention maps (mean softmax mass per
    (query group, key group)), averaged over ``map_steps[(layer, head)]`` steps.
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
                   dict(first.attention))

    def save(self, path) -> None:
        write_profile(self, path)

    @classmethod
    def load(cls, path) -> Profile:
        return read_profile(path)





def default_path(model_name: str) -> Path:
    """Where a model's profile goes unless told: ``profiles/<name>.parquet`` (``/`` and ``:`` → ``_``)."""
    return Path("profiles") / f"{model_name.replace('/', '_').replace(':', '_')}.parquet"


def write_profile(profile: Profile, path: str | os.PathLike) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
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
        "maps": {"sites": [list(k) for k in keys], "steps": [profile.map_steps.get(k, 1) for k in keys],
                 "shape": list(maps.shape), "dtype": "float16"},
    }
    table = pa.Table.from_pandas(profile.table[TABLE_COLUMNS], preserve_index=False)
    table = table.replace_schema_metadata({
        **(table.schema.metadata or {}),
        b"attnsearch": json.dumps(meta).encode(),
        b"attnsearch.maps": base64.b64encode(zlib.compress(maps.tobytes(), 6)),
    })
    with replacing(path) as tmp:
        pq.write_table(table, tmp, compression="zstd")
    return path


def read_profile(path: str | os.PathLike) -> Profile:
    path = Path(path)
    if not path.is_file():
        raise ProfileError(f"profile {str(path)!r} does not exist")
    try:
        table = pq.read_table(path)
    except (pa.ArrowInvalid, OSError) as exc:
        raise ProfileError(f"{path}: not a Parquet file ({exc})") from None
    raw = (table.schema.metadata or {}).get(b"attnsearch")
    if raw is None:
        raise ProfileError(f"{path}: not an attnsearch profile (no 'attnsearch' metadata)")
    meta = json.loads(raw)
    if meta.get("format") != FORMAT:
        raise ProfileError(f"{path}: format {meta.get('format')!r} is not {FORMAT!r}")
    if meta.get("version") != SCHEMA_VERSION:
        raise ProfileError(f"{path}: profile schema version {meta.get('version')!r} is not supported "
                           f"(this attnsearch reads version {SCHEMA_VERSION}); re-run `attnsearch profile`")
    df = table.to_pandas()
    missing = [c for c in TABLE_COLUMNS if c not in df.columns]
    if missing:
        raise ProfileError(f"{path}: profile table lacks column(s) {', '.join(missing)}")
    m = meta["maps"]
    blob = zlib.decompress(base64.b64decode(table.schema.metadata[b"attnsearch.maps"]))
    arr = np.frombuffer(blob, dtype=np.float16).reshape(m["shape"]).astype(np.float32)
    keys = [tuple(s) for s in m["sites"]]
    maps = {k: torch.from_numpy(arr[i].copy()) for i, k in enumerate(keys)}
    return Profile(
        table=df[TABLE_COLUMNS],
        geometry=Geometry.from_dict(meta["geometry"]),
        settings=ProfileSettings.from_dict(meta["settings"]),
        model=meta["model"],
        maps=maps,
        map_steps={k: n for k, n in zip(keys, m["steps"])},
        timing=meta.get("timing", {}),
        attention=meta.get("attention", {}),
    )


__all__ = ["FORMAT", "SCHEMA_VERSION", "TABLE_COLUMNS", "Profile", "ProfileError", "ProfileSettings",
           "default_path", "read_profile", "write_profile"]
