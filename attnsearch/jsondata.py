"""JSON as data: strict numbers, bounded nesting, and errors that name the file and the key path.

Every JSON file attnsearch writes is strict JSON (RFC 8259): no ``NaN``, ``Infinity`` or
``-Infinity``, which other readers reject. Where a file format gives a non-finite number a meaning,
that format documents the key and stores ``null`` there (:func:`nonfinite_to_null`); everywhere else
a non-finite number is an error. Readers get the same rules: :func:`read_json` turns every way a
file can fail to be JSON into one :class:`JSONDataError` line naming the file, and
:func:`check_data` names the first offending key path (``search.pareto[3].speedup``).

    >>> check_data({"a": [1.0, float("nan")]})
    Traceback (most recent call last):
    attnsearch.jsondata.JSONDataError: a[1]: NaN is not a JSON number (strict JSON has no NaN or Infinity)
"""

from __future__ import annotations

import json
import math
import os
import re
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any

from .messages import one_line

#: Deepest nesting of objects and lists accepted (the formats of attnsearch nest a handful deep).
MAX_DEPTH = 100
#: Integers must fit a signed 64-bit integer (every consumer stores them as int64 or float64).
INT_LIMIT = 2 ** 63


class JSONDataError(ValueError):
    """A value is not strict JSON data, or a file is not readable JSON; the message names where."""

    def __init__(self, message: str) -> None:
        super().__init__(one_line(message))


#: Key paths in messages name at most this many levels; deeper ones end in "…".
SHOWN_DEPTH = 12
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def key_path(path: str, key: Any) -> str:
    """``path`` extended by a list index (``[3]``), a name (``.rows``) or any other key, quoted
    (``["a.b"]``), so that a path names one place: ``schedule[0].layers``, ``search["odd key"]``."""
    if isinstance(key, int) and not isinstance(key, bool):
        return f"{path}[{key}]"
    if isinstance(key, str) and _NAME.fullmatch(key):
        return f"{path}.{key}" if path else key
    return f"{path}[{json.dumps(key) if isinstance(key, str) else repr(key)}]"


def _join(path: str, key: Any, depth: int) -> str:
    """key_path, shortened past SHOWN_DEPTH levels (``depth``: the levels of ``path``)."""
    if depth >= SHOWN_DEPTH:
        return path if path.endswith("…") else f"{path}…"
    return key_path(path, key)


def _where(path: str) -> str:
    return path or "(top level)"


def _number_problem(value: Any) -> str | None:
    """Why a bool/int/float cannot be a JSON number here, or None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        if -INT_LIMIT <= value < INT_LIMIT:
            return None
        return f"integer of {value.bit_length()} bits is outside the signed 64-bit range"
    if math.isnan(value):
        return "NaN is not a JSON number (strict JSON has no NaN or Infinity)"
    if math.isinf(value):
        return f"{'-' if value < 0 else ''}Infinity is not a JSON number (strict JSON has no NaN or Infinity)"
    return None


def check_data(obj: Any, path: str = "", *, max_depth: int = MAX_DEPTH) -> None:
    """Raise JSONDataError naming the first key path whose value is not strict JSON data.

    Accepted: None, bool, str, int within ±2^63, finite float, list/tuple and str-keyed mappings of
    these, nested at most ``max_depth`` deep. Iterative, so hostile nesting cannot overflow the stack.
    """
    stack: list[tuple[Any, str, int]] = [(obj, path, 0)]
    while stack:
        value, where, depth = stack.pop()
        if value is None or isinstance(value, str):
            continue
        if isinstance(value, (int, float)):
            problem = _number_problem(value)
            if problem:
                raise JSONDataError(f"{_where(where)}: {problem}")
            continue
        if isinstance(value, (Mapping, list, tuple)):
            if depth >= max_depth:
                raise JSONDataError(f"{_where(where)}: nested deeper than {max_depth} levels")
            if isinstance(value, Mapping):
                items = []
                for k, v in value.items():
                    if not isinstance(k, str):
                        raise JSONDataError(f"{_where(where)}: key {k!r} is not a string")
                    items.append((v, _join(where, k, depth), depth + 1))
            else:
                items = [(v, _join(where, i, depth), depth + 1) for i, v in enumerate(value)]
            stack.extend(reversed(items))  # report the first offender in document order
            continue
        raise JSONDataError(f"{_where(where)}: a {type(value).__name__} is not JSON data")


def nonfinite_to_null(obj: Any, keys: Collection[str] | None = None, path: str = "", *,
                      max_depth: int = MAX_DEPTH) -> Any:
    """A copy of ``obj`` with non-finite floats replaced by None: under the named ``keys`` only
    (an object member of that name, at any depth), or everywhere when ``keys`` is None.

    For formats that document what ``null`` means at those keys (e.g. a PSNR of +∞: identical
    output). Everything else is copied as is (containers as dict/list), for :func:`check_data`
    to judge. Raises JSONDataError (naming the key path below ``path``) when nested deeper than
    ``max_depth``.
    """
    def convert(value: Any, nullable: bool) -> Any:
        if nullable and isinstance(value, float) and not math.isfinite(value):
            return None
        return value

    def shell(value: Any) -> Any:
        if isinstance(value, Mapping):
            return {}
        if isinstance(value, (list, tuple)):
            return []
        return None

    everywhere = keys is None
    root = shell(obj)
    if root is None:
        return convert(obj, everywhere)
    stack: list[tuple[Any, Any, int, str]] = [(obj, root, 0, path)]
    while stack:
        src, dst, depth, where = stack.pop()
        if depth >= max_depth:
            raise JSONDataError(f"{_where(where)}: nested deeper than {max_depth} levels")
        pairs = src.items() if isinstance(src, Mapping) else enumerate(src)
        for k, v in pairs:
            child = shell(v)
            if child is None:
                nullable = everywhere or (isinstance(k, str) and k in keys)
                child = convert(v, nullable)
            else:
                stack.append((v, child, depth + 1, _join(where, k, depth)))
            if isinstance(dst, dict):
                dst[k] = child
            else:
                dst.append(child)
    return root


def dumps(obj: Any, **kwargs: Any) -> str:
    """``json.dumps`` of strict JSON data: checked first (JSONDataError naming the key path)."""
    check_data(obj)
    return json.dumps(obj, allow_nan=False, **kwargs)


def parse(text: str | bytes, source: str) -> Any:
    """Parse JSON text; every failure is one JSONDataError line starting with ``source``.

    Non-finite constants (``NaN``, ``Infinity``) are parsed as floats so that a format may map
    documented ones to None; :func:`check_data` refuses the rest.
    """
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as err:
            raise JSONDataError(f"{source}: not UTF-8 text (byte 0x{err.object[err.start]:02x} at offset "
                                f"{err.start})") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        where = f"line {err.lineno}, column {err.colno}"
        raise JSONDataError(f"{source}: not valid JSON ({where}: {err.msg})") from None
    except RecursionError:
        raise JSONDataError(f"{source}: not usable JSON (nested too deeply to parse)") from None
    except ValueError as err:  # e.g. an integer literal longer than Python converts
        raise JSONDataError(f"{source}: not usable JSON ({str(err).split(';')[0]})") from None


def read_json(path: str | os.PathLike, what: str = "file") -> Any:
    """Read and parse a JSON file; JSONDataError ``"PATH: ..."`` (one line) if it cannot be read,
    is not UTF-8, or is not JSON. The data itself is not checked (see :func:`check_data`)."""
    path = Path(path)
    if path.is_dir():
        raise JSONDataError(f"{path}: is a directory, not a {what}")
    try:
        raw = path.read_bytes()
    except OSError as err:
        raise JSONDataError(f"{path}: cannot read {what} ({err.strerror or err})") from None
    return parse(raw, str(path))


__all__ = ["INT_LIMIT", "MAX_DEPTH", "SHOWN_DEPTH", "JSONDataError", "check_data", "dumps", "key_path",
           "nonfinite_to_null", "parse", "read_json"]
