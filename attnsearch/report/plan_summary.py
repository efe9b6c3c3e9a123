"""Numbers that describe a plan: how its head-steps divide among patterns, its mean block density."""

from __future__ import annotations

from ..plan import Plan


def pattern_shares(plan: Plan) -> dict[str, float]:
    """Share of the sparse entries' head-steps run by each pattern, sorted by name (empty when
    every step runs dense layers)."""
    counts: dict[str, int] = {}
    for e in plan.schedule:
        for lp in e.layers or ():
            for pattern, _ in lp.head_specs:
                counts[pattern] = counts.get(pattern, 0) + (e.stop - e.start)
    total = sum(counts.values())
    return {k: v / total for k, v in sorted(counts.items())}


__all__ = ["pattern_shares"]
