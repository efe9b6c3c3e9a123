"""The error of profiling and of profile files."""

from __future__ import annotations

from ..messages import one_line


class ProfileError(ValueError):
    """Bad profiler input (shapes, settings, an attention call the profiler cannot measure) or a
    profile file that is not usable data; the message is one line."""

    def __init__(self, message: str) -> None:
        super().__init__(one_line(message))


__all__ = ["ProfileError"]
