"""Block index tables: for every (head, query block) the key blocks it keeps, as kernels read them.

Built once per (LayerPlan, device, fusion) and cached (LRU): a model calls the same LayerPlan for
many layers and steps, and the tables never change. Layout (all int32, on the target device):

    counts   [H, nb]              number of kept key blocks of query block qb of head h
    indices  [H, nb, max_count]   their ids, ascending, padded with the last valid id
    launches tuple[Launch]        work lists; each launch runs its heads in one kernel call, in
                                  one precision (heads of another precision: another launch)

A work item is one (head, query block) pair, encoded ``head * nb + qb``, in the work order of
``runtime.schedule`` (``order``).

Skip heads appear in no launch: their output is zero-filled by the caller and never computed.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from functools import cached_property
from typing import Literal

import torch

from ..layer_plan import DEFAULT_PRECISION
from ..plan import LayerPlan
from .schedule import BIG_ITEM, DEFAULT_ORDER, ORDERS, Order, work_order

Fusion = Literal["layer", "group"]

#: How many table sets the cache keeps (one per distinct LayerPlan × device × fusion).
CACHE_SIZE = 256


@dataclass(frozen=True, eq=False)
class Launch:
    """One kernel launch: the heads it computes, its ordered work items (``head * nb + qb``) and the
    precision its products run in (``LayerPlan.head_precisions``)."""

    heads: tuple[int, ...]
    work: torch.Tensor  # int32 [num_items]
    precision: str = DEFAULT_PRECISION
    #: ``heads`` as int32 on the tables' device (what a kernel over the launch's heads reads, e.g.
    #: the FP8 quantization; built once, so a call copies nothing from the host).
    head_index: torch.Tensor | None = None

    @property
    def num_items(self) -> int:
        return self.work.numel()


@dataclass(frozen=True, eq=False)
class BlockTables:
    layer_plan: LayerPlan
    device: torch.device
    counts: torch.Tensor      # int32 [H, nb]
    indices: torch.Tensor     # int32 [H, nb, max_count]
    launches: tuple[Launch, ...]
    skip_heads: tuple[int, ...]
    kept_blocks: int          # Σ counts over computed heads: the work the kernel does
    skip_index: torch.Tensor  # int64 [len(skip_heads)], on the device: skip_heads for index_fill_

    @property
    def num_blocks(self) -> int:
        return self.counts.shape[1]

    @property
    def block_size(self) -> int:
        return self.layer_plan.block_size

    @property
    def max_count(self) -> int:
        return self.indices.shape[2]

    @cached_property
    def precisions(self) -> tuple[str, ...]:
        """The precisions of the launches, in launch order, each once (the default when none)."""
        return tuple(dict.fromkeys(launch.precision for launch in self.launches)) or (DEFAULT_PRECISION,)

    def launches_of(self, precision: str) -> tuple[Launch, ...]:
        """The launches whose products run in ``precision``."""
        return tuple(launch for launch in self.launches if launch.precision == precision)

    def head_index(self, precision: str) -> torch.Tensor:
        """int32 heads of the launches of ``precision`` on the tables' device (one launch's own tensor;
        several launches' joined on the device)."""
        launches = self.launches_of(precision)
        if len(launches) == 1:
            return launches[0].head_index
        return torch.cat([launch.head_index for launch in launches]) if launches else \
            torch.empty(0, dtype=torch.int32, device=self.device)

    def prepare_output(self, out: torch.Tensor, precision: str) -> None:
        """What a kernel's ``forward`` over this precision's launches does to ``out`` first: the run
        of the first precision zeroes the skip heads (once per call however many precisions run)."""
        if precision == self.precisions[0]:
            self.zero_skip_heads(out)

    def zero_skip_heads(self, out: torch.Tensor) -> None:
        """Zero the skip heads of ``out`` [batch, H, N, D] (any strides) with a device-side index, so
        the call stays capturable in a CUDA graph (a Python list index would be copied from the host
        on every call)."""
        if self.skip_heads:
            out.index_fill_(1, self.skip_index, 0)


def launch_work(heads: tuple[int, ...], counts: torch.Tensor, order: Order = DEFAULT_ORDER,
                big_item: float = BIG_ITEM) -> torch.Tensor:
    """Work items ``head * nb + qb`` (int64) of ``heads`` in ``schedule.work_order``."""
    nb = counts.shape[1]
    h = torch.tensor(heads, dtype=torch.int64)
    pos = torch.from_numpy(work_order(counts[h].numpy(), order, big_item))
    return h[pos // nb] * nb + pos % nb


def build_block_tables(layer_plan: LayerPlan, device: torch.device | str = "cpu",
                       fusion: Fusion = "layer", order: Order | None = None) -> BlockTables:
    """Build tables without the cache (use :func:`get_block_tables`).

    ``fusion="layer"``: all computed heads of one precision in one launch (the default: one launch,
    one work queue across heads; a layer with native and FP8 heads has two). ``fusion="group"``: one
    launch per head group, as the plan lists them (for benchmarks that compare against groups run
    alone). ``order``: see the module docstring (default :data:`DEFAULT_ORDER`).
    """
    if fusion not in ("layer", "group"):
        raise ValueError(f"fusion: must be 'layer' or 'group', got {fusion!r}")
    order = DEFAULT_ORDER if order is None else order
    if order not in ORDERS:
        raise ValueError(f"order: must be one of {ORDERS}, got {order!r}")
    masks = layer_plan.block_masks()  # bool [H, nb, nb], CPU
    H, nb, _ = masks.shape
    counts = masks.sum(-1, dtype=torch.int32)
    max_count = max(int(counts.max()), 1)
    # Stable sort of "not kept" puts the kept ids first, in ascending order.
    kept_first = torch.argsort((~masks).to(torch.int8), dim=-1, stable=True)[..., :max_count].to(torch.int32)
    # Pad each row with its last valid id (or 0): harmless if ever read, and keeps loads in bounds.
    last = kept_first.gather(-1, (counts.clamp(min=1) - 1).long().unsqueeze(-1))
    slot = torch.arange(max_count, dtype=torch.int32)
    indices = torch.where(slot < counts.unsqueeze(-1), kept_first, last)

    skip = layer_plan.skip_heads
    if fusion == "layer":
        head_sets = [(layer_plan.precision_heads(p), p) for p in layer_plan.precisions]
    else:
        head_sets = [(tuple(g.heads), g.precision) for g in layer_plan.groups if g.pattern != "skip"]
    launches = [Launch(tuple(heads), launch_work(tuple(heads), counts, order).to(torch.int32).to(device), precision,
                       torch.tensor(heads, dtype=torch.int32, device=device))
                for heads, precision in head_sets]
    kept = int(counts[list(layer_plan.computed_heads)].sum()) if layer_plan.computed_heads else 0
    return BlockTables(layer_plan, torch.device(device), counts.to(device), indices.contiguous().to(device),
                       tuple(launches), skip, kept, torch.tensor(skip, dtype=torch.long, device=device))


_CACHE: OrderedDict[tuple, BlockTables] = OrderedDict()
_STATS = {"hits": 0, "builds": 0}


def _canonical_device(device: torch.device | str) -> torch.device:
    device = torch.device(device)
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    return device


def get_block_tables(layer_plan: LayerPlan, device: torch.device | str, fusion: Fusion = "layer",
                     order: Order | None = None) -> BlockTables:
    """Cached :func:`build_block_tables`, keyed by the LayerPlan's content, device, fusion and order."""
    device = _canonical_device(device)
    order = DEFAULT_ORDER if order is None else order
    key = (layer_plan.key, device, fusion, order)
    tables = _CACHE.get(key)
    if tables is not None:
        _CACHE.move_to_end(key)
        _STATS["hits"] += 1
        return tables
    tables = build_block_tables(layer_plan, device, fusion, order)
    _STATS["builds"] += 1
    _CACHE[key] = tables
    if len(_CACHE) > CACHE_SIZE:
        _CACHE.popitem(last=False)
    return tables


def cache_info() -> dict[str, int]:
    """Hits, builds and current size of the table cache."""
    return {**_STATS, "size": len(_CACHE)}


def clear_cache() -> None:
    _CACHE.clear()
    _STATS.update(hits=0, builds=0)
