"""The files a search writes: the plan and, with SQLite, the study. Both are checked as outputs
before any work (:func:`check_outputs_of`); a new study file whose first run fails before any
trial is removed again, with its lock file and the folders made for it."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from ..profiling.profile_io import Profile
from .space import SearchError
from .workers import check_workers, lock_path, sqlite_path, storage_kind


def check_outputs_of(profile_path, out: str | os.PathLike, storage: str | None, workers: int = 1
                     ) -> tuple[str, Path | None]:
    """What :func:`optimize` checks before any work: the worker count against the storage, the plan
    and a SQLite study file as outputs (never an input, a device or a folder); a SQLite URL given
    by the user must name a file in an existing folder (the default one, ``<out>.optuna.db``, is
    made beside the plan). Returns the storage URL and its SQLite file (None: a server database)."""
    from ..atomic_io import check_outputs

    out = Path(out)
    given = storage is not None
    storage = storage or f"sqlite:///{out.with_name(out.name + '.optuna.db')}"
    check_workers(storage, workers)

    given_profiles = [profile_path] if isinstance(profile_path, (str, os.PathLike, Profile)) else list(profile_path)
    inputs = [p for p in given_profiles if isinstance(p, (str, os.PathLike))]
    db = sqlite_path(storage) if storage_kind(storage) == "sqlite" else None
    if storage_kind(storage) == "sqlite" and db is None and storage.startswith("sqlite:///"):
        check_outputs([out], inputs)
        return storage, None  # in-memory
    if db is not None:
        if given and not db.parent.is_dir():
            raise SearchError(f"storage {storage!r}: folder {db.parent} does not exist (create it first)")
        check_outputs([out, db], inputs)
    else:
        check_outputs([out], inputs)
    return storage, db


def missing_folders(db: Path) -> list[Path]:
    """The folders above ``db`` that do not exist yet, outermost first."""
    return [p for p in reversed(db.parents) if not p.exists()]


def holds_no_trial(study) -> bool:
    """Whether ``study`` (None: not opened) has no trial at all; unsure counts as holding some."""
    if study is None:
        return True
    try:
        return not study.get_trials(deepcopy=False)
    except Exception:  # noqa: BLE001  (the storage may be what failed)
        return False


def remove_new_study(db: Path, made: list[Path]) -> None:
    """Remove a SQLite study this call created (with its lock file and the folders it made)."""
    for path in (db, lock_path(db), db.with_name(db.name + "-journal")):
        with contextlib.suppress(OSError):
            path.unlink()
    for folder in reversed(made):
        with contextlib.suppress(OSError):
            folder.rmdir()


__all__ = ["check_outputs_of", "holds_no_trial", "missing_folders", "remove_new_study"]
