"""Work order and list scheduling: the one definition the runtime's block tables, the Hopper
kernel's tile table and the cost model all use.

A fused launch runs work items, one per (head, query block); an item of a [heads, nb] count table
is its row-major position ``i · nb + qb``. Work order (``order``):

    "head"  heads by total work, heaviest first; inside a head, query blocks in order. The
            programs in flight share one head's K/V (L2 reuse, like dense flash attention's
            grid) and the last wave is the lightest head's rows. Items keeping more than
            ``BIG_ITEM`` × the launch's mean go before all others, longest first: an item
            started near the end delays the launch by up to its length, and text tokens make
            such items (their query blocks keep every key block: 139 against a mean of 15 in
            CogVideoX-5B's layer at 10%), which head order put at the start of every head, the
            last heads' among the launch's last items.
    "lpt"   longest-first over all items (ties by head, query block): the least tail imbalance,
            but the programs in flight mix heads and their K/V.

List scheduling: items start in order, each on the first of ``slots`` workers to free up (what a
dynamic work counter does, without an atomic in the kernel).
"""

from __future__ import annotations

import heapq
from typing import Literal

import numpy as np

Order = Literal["head", "lpt"]
ORDERS = ("head", "lpt")
#: Work order used unless asked otherwise (chosen on H200 measurements, reports/runtime_sweep/).
DEFAULT_ORDER: Order = "head"
#: "head" order: items keeping more than this many times the launch's mean kept blocks go first.
BIG_ITEM = 2.0


def work_order(counts, order: str = DEFAULT_ORDER, big_item: float = BIG_ITEM) -> np.ndarray:
    """Items (row-major positions in ``counts`` [heads, nb], int64) in launch order under ``order``
    (``big_item``: the "head" order's threshold; ``inf`` leaves every item in head order)."""
    counts = np.asarray(counts, dtype=np.int64)
    nb = counts.shape[1] if counts.ndim == 2 else 0
    item = np.arange(counts.size, dtype=np.int64).reshape(counts.shape)
    if order == "lpt":
        flat = counts.reshape(-1)
        return item.reshape(-1)[np.argsort(-flat, kind="stable")]
    if order == "head":
        by_head = np.argsort(-counts.sum(1), kind="stable") if nb else np.arange(counts.shape[0])
        item, c = item[by_head].reshape(-1), counts[by_head].reshape(-1)
        if not c.size:
            return item
        big = c > big_item * c.mean()
        return np.concatenate([item[big][np.argsort(-c[big], kind="stable")], item[~big]])
    raise ValueError(f"order: must be one of {ORDERS}, got {order!r}")


def item_lengths(counts, order: str = DEFAULT_ORDER, batch: int = 1) -> np.ndarray:
    """Kept blocks of every item of a fused launch over ``counts`` [heads, nb], in launch order; the
    ``batch`` copies of an item run side by side (the kernels' program numbering)."""
    counts = np.asarray(counts, dtype=np.int64)
    lengths = counts.reshape(-1)[work_order(counts, order)]
    return np.repeat(lengths, batch) if batch > 1 else lengths


def list_schedule(durations, slots: int) -> float:
    """Makespan of greedy list scheduling of ``durations`` (in order) on ``slots`` workers."""
    durations = np.asarray(durations, dtype=np.float64)
    n = len(durations)
    if n == 0:
        return 0.0
    if n <= slots:
        return float(durations.max())
    free = durations[:slots].tolist()
    heapq.heapify(free)
    push = heapq.heapreplace
    for x in durations[slots:].tolist():
        push(free, free[0] + x)
    return max(free)


def assign(durations, slots: int) -> list[list[int]]:
    """Which items (indices into ``durations``, in order) each of ``slots`` workers runs under greedy
    list scheduling (ties: the lowest worker)."""
    heap = [(0.0, p) for p in range(slots)]
    owned: list[list[int]] = [[] for _ in range(slots)]
    for t, c in enumerate(np.asarray(durations, dtype=np.float64).tolist()):
        free, p = heapq.heappop(heap)
        owned[p].append(t)
        heapq.heappush(heap, (free + c, p))
    return owned


__all__ = ["BIG_ITEM", "DEFAULT_ORDER", "ORDERS", "Order", "assign", "item_lengths", "list_schedule", "work_order"]
