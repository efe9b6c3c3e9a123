"""Profiling: capture a model's attention calls, measure every candidate pattern per head, store
the profile, and classify its heads.

Modules: ``capture`` (the SDPA calls of a model, layer by layer), ``candidates`` (the grid and its
block masks), ``profiler`` (per-head statistics from exact softmax rows), ``profile_io`` (the
:class:`Profile` and its file format), ``classify`` (the class rule), ``distributed`` (sharded
profiling under torchrun and the merge of shards). Names load on first use, so importing the
package (as the runtime does for ``capture``) pulls in nothing heavy.
"""

from __future__ import annotations

from importlib import import_module

_NAMES = {
    "capture_attention": "capture", "CaptureError": "capture", "SDPACall": "capture",
    "CandidateGrid": "candidates",
    "Profile": "profile_io", "ProfileError": "profile_io", "ProfileSettings": "profile_io",
    "profile_tensors": "profiler", "profile_model": "profiler",
    "class_counts": "classify", "pick_class": "classify",
    "merge_shards": "distributed",
}


def __getattr__(name: str):
    if name in _NAMES:
        return getattr(import_module(f"{__name__}.{_NAMES[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = sorted(_NAMES)
