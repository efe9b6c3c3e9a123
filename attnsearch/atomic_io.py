"""Every file attnsearch writes goes through here: outputs are whole or absent, and only outputs.

The policy, the same for every writer:

* **Whole or absent.** An output is written to a temporary file ``.NAME.XXXXXXXX.tmp`` beside its
  target and renamed over it (``os.replace`` is atomic within one file system), so an interrupted or
  failed write never leaves a half-written plan, profile, report or benchmark result. Temporary
  files of that pattern older than :data:`STALE_AFTER_S` (left by a killed process) are removed
  beside the target on the next write.
* **Only outputs.** A target that exists must be a regular file (a symbolic link is followed and
  the file it points to replaced; the link stays): a directory, device, FIFO or socket is refused.
  A target that is one of the command's inputs (the same file, by device and inode, so hard links
  and links count) is refused, and so are two outputs naming one file (:func:`check_outputs`, to
  run before any work). A refused write creates nothing.
* **Ordinary permissions.** A new file gets mode ``0o666 & ~umask``; a replaced file keeps its mode.
* **Folders.** The target's missing parent folders are created when the write goes ahead, and
  removed again if the write fails; an existing path component that is not a folder is refused.
* **Strict JSON.** :func:`write_json_atomic` writes RFC 8259 JSON: no NaN or Infinity (see
  :mod:`attnsearch.jsondata`; formats that give a non-finite number a meaning store null).

Every refusal is an :class:`OutputError` (a ValueError) whose one-line message starts with the path.
"""

from __future__ import annotations

import contextlib
import os
import re
import stat
import tempfile
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from .jsondata import dumps
from .messages import one_line

#: Age (seconds since last modification) after which a temporary file of our pattern is stale.
STALE_AFTER_S = 3600.0

PathLike = str | os.PathLike


class OutputError(ValueError):
    """An output that must not be written (not a regular file, one of the inputs, not writable)."""

    def __init__(self, message: str) -> None:
        super().__init__(one_line(message))


_KINDS = ((stat.S_ISDIR, "a directory"), (stat.S_ISCHR, "a character device"),
          (stat.S_ISBLK, "a block device"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket"))


def _kind(mode: int) -> str:
    return next((name for test, name in _KINDS if test(mode)), "not a regular file")


def _stat(path: Path) -> os.stat_result | None:
    try:
        return os.stat(path)
    except FileNotFoundError:
        return None
    except NotADirectoryError:
        raise OutputError(f"{path}: a component of the path is not a folder") from None
    except OSError as err:
        raise OutputError(f"{path}: cannot examine the output ({err.strerror or err})") from None


def _target(path: Path) -> Path:
    """The file a write to ``path`` replaces: the path itself, or where its symbolic link points."""
    return Path(os.path.realpath(path)) if path.is_symlink() else path


def _missing_parents(path: Path, shown: Path) -> list[Path]:
    """Ancestors of ``path`` that do not exist yet, outermost first; refuses a non-folder on the way."""
    missing = []
    for parent in path.parents:
        st = _stat(parent)
        if st is None:
            missing.append(parent)
            continue
        if not stat.S_ISDIR(st.st_mode):
            raise OutputError(f"{shown}: {parent} is not a folder")
        break
    return missing[::-1]


def check_output(path: PathLike, inputs: Iterable[PathLike] = ()) -> Path:
    """Raise OutputError unless ``path`` may be written as an output of a command reading
    ``inputs``; returns ``path`` as a Path. Creates nothing."""
    return check_outputs([path], inputs)[0]


def check_outputs(outputs: Iterable[PathLike], inputs: Iterable[PathLike] = ()) -> list[Path]:
    """Check every output of a command before it starts work (see the module policy): each absent
    or a regular file, no path component a non-folder, none the same file as an input, no two the
    same file. Inputs that do not exist are ignored. Returns the outputs as Paths; creates nothing."""
    outs = [Path(p) for p in outputs]
    in_ids: dict[tuple[int, int], Path] = {}
    for p in inputs:
        st = _stat(Path(p))
        if st is not None:
            in_ids.setdefault((st.st_dev, st.st_ino), Path(p))
    seen: dict[str, Path] = {}
    for out in outs:
        target = _target(out)
        st = _stat(target)
        if st is not None:
            if not stat.S_ISREG(st.st_mode):
                raise OutputError(f"{out}: exists and is {_kind(st.st_mode)}, not a regular file; "
                                  f"refusing to replace it")
            same = in_ids.get((st.st_dev, st.st_ino))
            if same is not None:
                named = "" if Path(os.path.abspath(same)) == Path(os.path.abspath(out)) else f" ({same})"
                raise OutputError(f"{out}: is also an input of this command{named}; refusing to replace it")
        _missing_parents(target, out)
        key = os.path.realpath(target)
        if key in seen:
            raise OutputError(f"{out}: named twice as an output (also as {seen[key]})")
        seen[key] = out
    return outs


def _umask() -> int:
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)  # no read-only query exists elsewhere: set and restore at once
    os.umask(mask)
    return mask


def _remove_stale(folder: Path, name: str, suffix: str) -> None:
    """Remove our own temporary files for ``name`` in ``folder`` older than STALE_AFTER_S."""
    pattern = re.compile(rf"\.{re.escape(name)}\.[a-z0-9_]{{8}}{re.escape(suffix)}")
    cutoff = time.time() - STALE_AFTER_S
    uid = os.geteuid() if hasattr(os, "geteuid") else None
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return
    for entry in entries:
        if not pattern.fullmatch(entry.name):
            continue
        try:
            st = entry.stat(follow_symlinks=False)
            if stat.S_ISREG(st.st_mode) and st.st_mtime < cutoff and (uid is None or st.st_uid == uid):
                os.unlink(entry.path)
        except OSError:
            pass


@contextlib.contextmanager
def replacing(path: PathLike, suffix: str = ".tmp", *, inputs: Iterable[PathLike] = ()) -> Iterator[Path]:
    """A fresh temporary path beside ``path`` for the block to write; renamed over ``path`` when the
    block ends, removed (with any folder this call created) if it raises.

    Raises OutputError before anything is created if ``path`` is refused by the policy (not a regular
    file, one of ``inputs``, below a non-folder) or cannot be written.
    """
    shown = Path(path)
    check_output(shown, inputs)
    target = _target(shown)
    existing = _stat(target)
    mode = stat.S_IMODE(existing.st_mode) if existing is not None else 0o666 & ~_umask()
    created: list[Path] = []
    tmp: Path | None = None
    try:
        for folder in _missing_parents(target, shown):
            try:
                folder.mkdir()
            except FileExistsError:  # made meanwhile by a concurrent writer
                continue
            except OSError as err:
                raise OutputError(f"{shown}: cannot create folder {folder} ({err.strerror or err})") from None
            created.append(folder)
        _remove_stale(target.parent, target.name, suffix)
        try:
            fd, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=suffix, dir=target.parent)
        except OSError as err:
            raise OutputError(f"{shown}: cannot write in {target.parent} ({err.strerror or err})") from None
        tmp = Path(name)
        try:
            os.fchmod(fd, mode)
        finally:
            os.close(fd)
        yield tmp
        check_output(shown, inputs)  # the target may have changed while the block ran
        try:
            os.replace(tmp, target)
        except OSError as err:
            raise OutputError(f"{shown}: cannot replace the file ({err.strerror or err})") from None
    except BaseException:
        if tmp is not None:
            tmp.unlink(missing_ok=True)
        for folder in reversed(created):
            with contextlib.suppress(OSError):
                folder.rmdir()  # only if still empty
        raise


def write_bytes_atomic(path: PathLike, data: bytes, *, inputs: Iterable[PathLike] = ()) -> Path:
    """Write ``data`` to ``path`` through :func:`replacing`; returns the path."""
    with replacing(path, inputs=inputs) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_text_atomic(path: PathLike, text: str, *, inputs: Iterable[PathLike] = ()) -> Path:
    """Write ``text`` (UTF-8) to ``path`` through :func:`replacing`; returns the path."""
    with replacing(path, inputs=inputs) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def write_json_atomic(path: PathLike, obj: Any, *, indent: int | None = 1, sort_keys: bool = False,
                      inputs: Iterable[PathLike] = ()) -> Path:
    """Write ``obj`` as strict JSON (plus a final newline) through :func:`replacing`; returns the path.

    Raises :class:`~attnsearch.jsondata.JSONDataError` naming the key path of a NaN, an Infinity or
    a value that is not JSON data, before any file is touched (map documented non-finite values
    with :func:`~attnsearch.jsondata.nonfinite_to_null` first).
    """
    text = dumps(obj, indent=indent, sort_keys=sort_keys) + "\n"
    return write_text_atomic(path, text, inputs=inputs)


__all__ = ["STALE_AFTER_S", "OutputError", "check_output", "check_outputs", "replacing", "write_bytes_atomic",
           "write_json_atomic", "write_text_atomic"]
