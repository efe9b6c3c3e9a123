"""Context parallelism: the slice of a plan one rank runs.

Under Ulysses sequence parallelism (diffusers' ``ContextParallelConfig(ulysses_degree=K)``, xDiT)
each rank holds N/K tokens of every layer's input; an all-to-all before attention gives rank r the
whole sequence for the contiguous heads [r·H/K, (r+1)·H/K), and another after it returns the
tokens. Attention on a rank is therefore the whole plan restricted to its heads:

    heads = head_range(num_heads=12, degree=2, rank=1)         # range(6, 12)
    local = slice_plan(plan, heads)                             # a Plan of 6 heads
    with apply(model, plan, heads=heads): ...                   # the same, chosen per call

:func:`slice_layer_plan` re-slices a layer's fused head groups (heads renumbered from 0, each keeping
its pattern and parameters), so the rank runs its heads as one fused launch, exactly the rows the
whole plan computes for them: run rank by rank, the slices reproduce the whole plan's output.

Which heads a rank holds is fixed by the all-to-all, so kept blocks are balanced across ranks by
the plan itself: ``attnsearch optimize --ulysses K`` costs a plan by its slowest rank
(:func:`rank_layer_plans` and the cost model), and :func:`kept_blocks_per_rank` reports the
balance a plan reaches (max / mean).

Ring attention splits the keys across ranks, which a block-sparse layer plan over the whole key
sequence cannot follow: it is refused (:class:`HeadLayout`, ``diffusers_dispatch``).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np

from ..plan import LayerPlan, Plan, PlanError, ScheduleEntry


def head_range(num_heads: int, degree: int, rank: int) -> range:
    """The query heads rank ``rank`` holds under Ulysses degree ``degree``."""
    for name, value, low in (("num_heads", num_heads, 1), ("degree", degree, 1), ("rank", rank, 0)):
        if not isinstance(value, int) or isinstance(value, bool) or value < low:
            raise PlanError(f"{name}: must be an integer ≥ {low}, got {value!r}")
    if num_heads % degree:
        raise PlanError(f"ulysses degree: {num_heads} attention heads are not divisible by the Ulysses degree "
                        f"{degree}; each rank must hold whole heads")
    if rank >= degree:
        raise PlanError(f"rank: {rank} is outside the Ulysses group of degree {degree}")
    per = num_heads // degree
    return range(rank * per, (rank + 1) * per)


def _check_heads(heads: range, num_heads: int) -> None:
    if not isinstance(heads, range) or heads.step != 1 or len(heads) == 0:
        raise PlanError(f"heads: expected a non-empty range of consecutive heads, got {heads!r}")
    if heads.start < 0 or heads.stop > num_heads:
        raise PlanError(f"heads: [{heads.start}, {heads.stop}) is outside the plan's heads [0, {num_heads})")


@lru_cache(maxsize=1024)
def _slice_layer_plan(layer_plan: LayerPlan, start: int, stop: int) -> LayerPlan:
    groups = []
    for g in layer_plan.groups:
        kept = [(h - start, p) for h, p in zip(g.heads, g.params, strict=True) if start <= h < stop]
        if kept:
            groups.append({"pattern": g.pattern, "heads": [h for h, _ in kept], "params": [dict(p) for _, p in kept],
                           "precision": g.precision})
    return LayerPlan(layer_plan.geometry, layer_plan.block_size, stop - start, tuple(groups))


def slice_layer_plan(layer_plan: LayerPlan, heads: range) -> LayerPlan:
    """``layer_plan`` restricted to ``heads`` (renumbered from 0), fused groups re-sliced."""
    _check_heads(heads, layer_plan.num_heads)
    if len(heads) == layer_plan.num_heads:
        return layer_plan
    return _slice_layer_plan(layer_plan, heads.start, heads.stop)


def slice_plan(plan: Plan, heads: range) -> Plan:
    """The whole ``plan`` restricted to ``heads``: what one rank runs (model and hardware kept; the
    predicted figures, which are the whole plan's, dropped)."""
    _check_heads(heads, plan.num_heads)
    schedule = tuple(ScheduleEntry(e.start, e.stop, None if e.layers is None else
                                   tuple(slice_layer_plan(lp, heads) for lp in e.layers)) for e in plan.schedule)
    return Plan(plan.geometry, plan.block_size, plan.num_steps, plan.num_layers, len(heads), schedule,
                model=plan.model, hardware=plan.hardware)


def rank_layer_plans(layer_plan: LayerPlan, degree: int) -> list[LayerPlan]:
    """The slice of ``layer_plan`` every rank of a Ulysses group of ``degree`` runs, by rank."""
    return [slice_layer_plan(layer_plan, head_range(layer_plan.num_heads, degree, r)) for r in range(degree)]


def kept_blocks_per_rank(plan: Plan, degree: int) -> np.ndarray:
    """int64 [degree]: kept blocks each rank computes over every (step, layer) call of ``plan``
    (a dense layer keeps all its blocks; skip heads none). Balance = max / mean."""
    dense_rank = len(head_range(plan.num_heads, degree, 0)) * plan.geometry.num_blocks(plan.block_size) ** 2
    per = np.zeros(degree, dtype=np.int64)
    for e in plan.schedule:
        steps = e.stop - e.start
        if e.layers is None:
            per += steps * plan.num_layers * dense_rank
            continue
        for lp in e.layers:
            counts = lp.block_masks().flatten(1).sum(1).numpy().astype(np.int64)  # [H]
            per += steps * counts.reshape(degree, -1).sum(1)
    return per


@dataclass(frozen=True)
class HeadLayout:
    """Which layer plan an attention call runs, given the heads it carries.

    A call with all ``num_heads`` heads runs the layer plan as is; a call with ``len(heads)`` heads
    (this rank's slice under Ulysses) runs :func:`slice_layer_plan`. ``heads`` None: no slice known.
    ``source`` says where the slice came from (for messages).
    """

    num_heads: int
    heads: range | None = None
    degree: int = 1
    source: str = ""

    def layer_plan(self, layer_plan: LayerPlan, call_heads: int) -> LayerPlan:
        if call_heads == layer_plan.num_heads or self.heads is None or call_heads != len(self.heads):
            if call_heads != layer_plan.num_heads and self.degree > 1 and layer_plan.num_heads % self.degree:
                head_range(layer_plan.num_heads, self.degree, 0)  # the one-line divisibility error
            return layer_plan  # check_inputs reports any other head-count mismatch
        return slice_layer_plan(layer_plan, self.heads)


def head_layout(model: Any, plan: Plan, heads: Any = None) -> HeadLayout:
    """The HeadLayout of ``model`` under ``plan``.

    ``heads``: a ``range`` (or ``(start, stop)``) of query heads: this process runs that slice; a
    ``torch.distributed`` process group: the Ulysses group, its size the degree and this process's
    rank in it the slice; None: diffusers' context-parallel config on the model's attention
    processors where one is set (ring attention refused), else the default process group where one
    is initialised with several ranks, else no slice.
    """
    H = plan.num_heads
    if heads is not None and not isinstance(heads, (range, tuple, list)):
        degree, rank = _group_rank(heads)
        return HeadLayout(H, head_range(H, degree, rank), degree, "process group")
    if heads is not None:
        if isinstance(heads, (tuple, list)):
            if len(heads) != 2 or not all(isinstance(x, int) and not isinstance(x, bool) for x in heads):
                raise PlanError(f"heads: expected a range or (start, stop), got {heads!r}")
            heads = range(heads[0], heads[1])
        _check_heads(heads, H)
        return HeadLayout(H, heads, 1, "heads=")
    from .diffusers_dispatch import context_parallel

    cp = context_parallel(model)
    if cp is not None:
        degree, rank = cp
        return HeadLayout(H, head_range(H, degree, rank), degree, "diffusers' ContextParallelConfig")
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        degree, rank = dist.get_world_size(), dist.get_rank()
        if H % degree == 0:
            return HeadLayout(H, head_range(H, degree, rank), degree, "the default process group")
        return HeadLayout(H, None, degree, "the default process group")
    return HeadLayout(H)


def _group_rank(group: Any) -> tuple[int, int]:
    import torch.distributed as dist

    if not (dist.is_available() and dist.is_initialized()):
        raise PlanError("heads: a process group was given but torch.distributed is not initialised")
    try:
        return dist.get_world_size(group), dist.get_rank(group)
    except (RuntimeError, ValueError, TypeError) as err:
        raise PlanError(f"heads: expected a range, (start, stop) or a torch.distributed process group, "
                        f"got {type(group).__name__} ({err})") from None


__all__ = ["HeadLayout", "head_layout", "head_range", "kept_blocks_per_rank", "rank_layer_plans",
           "slice_layer_plan", "slice_plan"]
