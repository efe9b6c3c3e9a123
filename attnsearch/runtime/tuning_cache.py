"""Tuned kernel configs kept across runs, so a process does not re-time every candidate tile.

The first call that needs a config for (GPU, head_dim, block size, dtype, TMA) times the
candidates and stores the winner here; later processes read it back. An entry is valid only for
the exact GPU model, Triton version and kernel source it was measured with (all in the key), so
upgrading Triton or changing the kernel re-tunes instead of trusting a stale pick.

    file     $ATTNSEARCH_CACHE_DIR/tuning.json  (default: $XDG_CACHE_HOME/attnsearch, else ~/.cache/attnsearch)
    disable  ATTNSEARCH_TUNING_CACHE=0

Writes go to a temporary file renamed over the old one after re-reading it, so concurrent
processes never leave a half-written file and lose at most each other's newest entry. A file that
cannot be read as a tuning cache is reported once and ignored (then overwritten by the next store).
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from typing import Any

from ..atomic_io import write_text_atomic

FORMAT = "attnsearch-tuning"
VERSION = 1
_WARNED: set[str] = set()


def enabled() -> bool:
    return os.environ.get("ATTNSEARCH_TUNING_CACHE", "1").strip().lower() not in ("0", "off", "false", "no")


def cache_path() -> Path | None:
    """Where the cache lives (None: no home directory to put it in, and none named)."""
    root = os.environ.get("ATTNSEARCH_CACHE_DIR")
    if not root:
        xdg = os.environ.get("XDG_CACHE_HOME")
        if xdg:
            root = str(Path(xdg) / "attnsearch")
        else:
            try:
                root = str(Path.home() / ".cache" / "attnsearch")
            except RuntimeError:  # no HOME and no passwd entry (some containers)
                _warn_once("attnsearch: no home directory for the tuning cache; set ATTNSEARCH_CACHE_DIR "
                           "to keep tuned configs across runs")
                return None
    return Path(root) / "tuning.json"


def make_key(device: str, capability: tuple[int, int], triton_version: str, source_hash: str, head_dim: int,
             block_size: int, dtype: str, use_tma: bool) -> str:
    """One cache key: everything a measured pick depends on."""
    return (f"{device}|sm{capability[0]}{capability[1]}|triton {triton_version}|src {source_hash}|"
            f"d{head_dim} b{block_size} {dtype} tma{int(bool(use_tma))}")


def load(path: Path | None = None) -> dict[str, dict[str, Any]]:
    """The entries of the cache file ({} when absent or unreadable: reported once)."""
    path = cache_path() if path is None else path
    if path is None:
        return {}
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as err:
        _warn_once(f"attnsearch: ignoring the tuning cache {path} ({type(err).__name__}: {err})")
        return {}
    if not isinstance(data, dict) or data.get("format") != FORMAT or data.get("version") != VERSION \
            or not isinstance(data.get("entries"), dict):
        _warn_once(f"attnsearch: ignoring the tuning cache {path} (not a {FORMAT} v{VERSION} file)")
        return {}
    return {k: v for k, v in data["entries"].items() if isinstance(v, dict)}


def lookup(key: str, path: Path | None = None) -> dict[str, Any] | None:
    return load(path).get(key) if enabled() else None


def store(key: str, config: dict[str, Any], path: Path | None = None) -> None:
    """Add or replace one entry (atomic replace of the whole file; a failure to write only warns)."""
    if not enabled():
        return
    path = cache_path() if path is None else path
    if path is None:
        return
    try:
        entries = load(path)
        entries[key] = config
        write_text_atomic(path, json.dumps({"format": FORMAT, "version": VERSION, "entries": entries}, indent=1,
                                           sort_keys=True))
    except OSError as err:
        _warn_once(f"attnsearch: could not write the tuning cache {path} ({err}); tuning again next run")


def _warn_once(message: str) -> None:
    if message not in _WARNED:
        _WARNED.add(message)
        warnings.warn(message, RuntimeWarning, stacklevel=3)
