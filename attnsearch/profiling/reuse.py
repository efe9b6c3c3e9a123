"""Measuring residual reuse along a trajectory (docs/design.md, "Residual reuse").

Under a plan entry that reuses a residual, a call's output at a later step s is planned(s) + R(a),
R(a) = exact(a) − planned(a) kept at the entry's exact step a, so its error is R(a) − R(s) (the
drift of what the mask misses), not R(s). :class:`ReuseTracker` carries, across the calls of one
trajectory, what the profiler needs to measure that per candidate: each span's sampled rows (every
step of a span samples the rows of its exact step), each span's stripe candidates (chosen at its
exact step, so a candidate is the same mask over the span), and each candidate's candidate − exact
outputs on those rows at the exact step. Keys hold the call's ordinal among its layer's calls in
the step, so CFG branches profiled as separate forwards keep their own.
"""

from __future__ import annotations

import bisect
from collections import Counter
from typing import Any, Callable

import torch

from .errors import ProfileError


class ReuseTracker:
    """State of one trajectory's residual-reuse measurement at exact steps ``exact_steps``."""

    def __init__(self, exact_steps) -> None:
        self.exact = tuple(sorted(exact_steps))
        self._diffs: dict[tuple, tuple[int, torch.Tensor]] = {}
        self._stripes: dict[tuple, tuple[int, Any]] = {}
        self._ordinal: Counter = Counter()

    def anchor(self, step: int) -> int | None:
        """The exact step of ``step``'s span (the latest exact step ≤ ``step``), None before the first."""
        i = bisect.bisect_right(self.exact, step)
        return self.exact[i - 1] if i else None

    def begin(self, step: int, layer: int) -> int:
        """The ordinal of a new call of ``layer`` in ``step`` (0 for the first)."""
        ordinal = self._ordinal[(step, layer)]
        self._ordinal[(step, layer)] += 1
        return ordinal

    def stripes(self, key: tuple, step: int, make: Callable[[], Any]) -> Any:
        """The stripe candidates of ``key`` (layer, ordinal, head chunk): made at the span's exact
        step (or at any step before the first), reused at the span's later steps."""
        anchor = self.anchor(step)
        if anchor is None:
            return make()
        if step == anchor:
            self._stripes[key] = (anchor, make())
        return self._kept(self._stripes, key, anchor, step)

    def error(self, key: tuple, step: int, diff: torch.Tensor, o_full: torch.Tensor,
              rel_err: torch.Tensor) -> torch.Tensor:
        """[h, C] error under reuse of candidates whose outputs minus the exact ones are ``diff``
        [h, C, Q, D] (exact: ``o_full`` [h, Q, D]; their own error ``rel_err`` [h, C]): their own
        error before the first exact step, 0 at an exact step (whose ``diff`` is kept), the drift
        ‖diff − kept‖ / ‖o_full‖ after it."""
        anchor = self.anchor(step)
        if anchor is None:
            return rel_err
        if step == anchor:
            self._diffs[key] = (anchor, diff)
            return torch.zeros_like(rel_err)
        kept = self._kept(self._diffs, key, anchor, step)
        ref = o_full.flatten(1).norm(dim=1).clamp_min(1e-30)
        return (diff - kept).flatten(2).norm(dim=2) / ref[:, None]

    @staticmethod
    def _kept(store: dict, key: tuple, anchor: int, step: int) -> Any:
        kept = store.get(key)
        if kept is None or kept[0] != anchor:
            raise ProfileError(f"step {step} layer {key[0]}: residual reuse is measured against the exact step "
                               f"{anchor} of its span, which was not profiled before it in this run (profile "
                               "whole spans, in step order)")
        return kept[1]


__all__ = ["ReuseTracker"]
