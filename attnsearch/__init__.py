"""attnsearch: find and run the sparse attention structure of video diffusion transformers.

Pipeline (data flows one way): capture → profile → classify → search → plan → runtime.
The public names below are the stable API (see docs/design.md); heavy modules load on first use.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING

from .geometry import Geometry, GeometryError
from .patterns import PatternError, block_mask

__version__ = "0.1.0"

_LAZY = {
    "profile_tensors": "attnsearch.profiling.profiler",
    "Profile": "attnsearch.profiling.profile_io",
    "classify": "attnsearch.profiling.classify",
    "load_plan": "attnsearch.plan",
    "Plan": "attnsearch.plan",
    "sparse_attention": "attnsearch.runtime",
    "apply": "attnsearch.runtime",
}

if TYPE_CHECKING:  # pragma: no cover
    from .plan import Plan, load_plan
    from .profiling.classify import classify
    from .profiling.profile_io import Profile
    from .profiling.profiler import profile_tensors
    from .runtime import apply, sparse_attention


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'attnsearch' has no attribute {name!r}")


__all__ = ["Geometry", "GeometryError", "PatternError", "block_mask", *_LAZY]
