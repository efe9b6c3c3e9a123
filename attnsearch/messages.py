"""Error messages are one line: user text inside them (field names, values, paths) cannot break it.

    >>> one_line("params.ro\\nws: unknown field")
    'params.ro\\\\nws: unknown field'
"""

from __future__ import annotations


def one_line(text: str) -> str:
    """``text`` with every character that is not printable (newlines, other control and format
    characters, line and paragraph separators) written as its Python escape; idempotent."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)


__all__ = ["one_line"]
