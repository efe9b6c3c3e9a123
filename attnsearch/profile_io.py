"""Profile files: one Parquet table (long format) with everything else in its metadata.

The table is what ``pandas.read_parquet`` shows: one row per (step, layer, head, candidate).
The file metadata (key ``attnsearch``) holds JSON: schema version, geometry, model name and
fingerprint, sampling settings, timing; key ``attnsearch.maps`` holds the block-level attention
maps as zlib-compressed float16 with their (layer, head) index. Written to a temporary file beside
the target and renamed, so an interrupted run never leaves a half-written profile.
"""

from __future__ import annotations

import base64
import json
import os
import zlib
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from .atomic_io import replacing
from .geometry import Geometry
from .profiler import TABLE_COLUMNS, Profile, ProfileError, ProfileSettings

FORMAT = "attnsearch-profile"
SCHEMA_VERSION = 1


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
