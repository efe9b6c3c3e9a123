"""The Hopper kernel's host side on the CPU: its tile schedule (``hopper_kernel.schedule``), a pure
function of the kept-block counts checked against its definition and brute force, and the reasons it
gives for calls it cannot run."""

from __future__ import annotations

import heapq
import itertools

import pytest
import torch

hopper_kernel = pytest.importorskip("attnsearch.runtime.hopper_kernel")
schedule = hopper_kernel.schedule


def _split(s: torch.Tensor, programs: int) -> list[list[int]]:
    offsets, tiles = s[: programs + 1].tolist(), s[programs + 1:].tolist()
    return [tiles[offsets[p]:offsets[p + 1]] for p in range(programs)]


@pytest.mark.parametrize("batch", [1, 3])
def test_every_tile_once_in_work_order(batch):
    g = torch.Generator().manual_seed(0)
    counts = torch.randint(0, 40, (5, 17), generator=g, dtype=torch.int32)
    work = torch.randperm(5 * 17, generator=g).to(torch.int32)[:60]
    programs = 7
    s = schedule(counts, work, batch, programs)
    assert s.dtype == torch.int32
    owned = _split(s, programs)
    assert sorted(t for ts in owned for t in ts) == list(range(60 * batch))
    for ts in owned:  # a program runs its tiles in the work list's order
        assert ts == sorted(ts)


def test_matches_list_scheduling_by_kept_blocks():
    """Each tile goes to the program that frees up first (cost: kept blocks + overhead)."""
    counts = torch.tensor([[9, 1, 1, 7, 3, 3, 0, 12]], dtype=torch.int32)
    work = torch.arange(8, dtype=torch.int32)
    owned = _split(schedule(counts, work, 1, 3), 3)
    free = [(0.0, p) for p in range(3)]
    expect: list[list[int]] = [[] for _ in range(3)]
    for t, c in enumerate(counts[0].tolist()):
        f, p = heapq.heappop(free)
        expect[p].append(t)
        heapq.heappush(free, (f + c + hopper_kernel.TILE_OVERHEAD, p))
    assert owned == expect


def test_makespan_within_graham_bound_of_optimum():
    """List scheduling's makespan is ≤ (2 - 1/m) × the optimum (Graham 1966): brute force on a
    small instance."""
    costs = [5, 3, 8, 2, 7, 4, 6]
    counts = torch.tensor([costs], dtype=torch.int32)
    work = torch.arange(len(costs), dtype=torch.int32)
    m = 3
    c = [x + hopper_kernel.TILE_OVERHEAD for x in costs]
    makespan = max(sum(c[t] for t in ts) for ts in _split(schedule(counts, work, 1, m), m))
    best = min(max(sum(c[t] for t, a in enumerate(assign) if a == p) for p in range(m))
               for assign in itertools.product(range(m), repeat=len(c)))
    assert best <= makespan <= (2 - 1 / m) * best


def test_reasons_name_every_unsupported_property():
    q = torch.randn(1, 2, 300, 160)[..., ::2]  # fp32, head_dim 80, a strided last dim (no TMA)
    reasons = " | ".join(hopper_kernel.not_supported_reasons(q, q, q, block_size=64))
    for expected in ("built for Hopper (sm_90)", "dtype torch.float32", "head_dim 80", "block size 64",
                     "q: TMA needs"):
        assert expected in reasons, reasons
