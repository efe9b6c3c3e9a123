"""The Hopper kernel's host side on the CPU: its tile schedule (``hopper.launch.schedule``, a pure
function of the kept-block counts, checked against its definition and brute force), the tile table
the kernel reads (against a decode written out here), and the reasons it gives for calls it cannot
run."""

from __future__ import annotations

import itertools

import pytest
import torch
from reference import list_schedule_by_steps

hopper_kernel = pytest.importorskip("attnsearch.runtime.hopper.launch")
schedule = hopper_kernel.schedule


@pytest.mark.parametrize("batch", [1, 3])
def test_every_tile_once_in_work_order(batch):
    g = torch.Generator().manual_seed(0)
    counts = torch.randint(0, 40, (5, 17), generator=g, dtype=torch.int32)
    work = torch.randperm(5 * 17, generator=g).to(torch.int32)[:60]
    programs = 7
    owned = schedule(counts, work, batch, programs)
    assert len(owned) == programs
    assert sorted(t for ts in owned for t in ts) == list(range(60 * batch))
    for ts in owned:  # a program runs its tiles in the work list's order
        assert ts == sorted(ts)


def test_matches_list_scheduling_by_kept_blocks():
    """Each tile goes to the program that frees up first (cost: kept blocks + overhead), against a
    unit-time simulation of the programs."""
    counts = torch.tensor([[9, 1, 1, 7, 3, 3, 0, 12]], dtype=torch.int32)
    work = torch.arange(8, dtype=torch.int32)
    owned = schedule(counts, work, 1, 3)
    overhead = hopper_kernel.TILE_OVERHEAD
    assert overhead == int(overhead)  # integer costs: the simulation steps one unit at a time
    _, expect = list_schedule_by_steps([c + int(overhead) for c in counts[0].tolist()], 3)
    assert owned == expect


def test_makespan_within_graham_bound_of_optimum():
    """List scheduling's makespan is ≤ (2 - 1/m) × the optimum (Graham 1966): brute force on a
    small instance."""
    costs = [5, 3, 8, 2, 7, 4, 6]
    counts = torch.tensor([costs], dtype=torch.int32)
    work = torch.arange(len(costs), dtype=torch.int32)
    m = 3
    c = [x + hopper_kernel.TILE_OVERHEAD for x in costs]
    makespan = max(sum(c[t] for t in ts) for ts in schedule(counts, work, 1, m))
    best = min(max(sum(c[t] for t, a in enumerate(assign) if a == p) for p in range(m))
               for assign in itertools.product(range(m), repeat=len(c)))
    assert best <= makespan <= (2 - 1 / m) * best


def test_reasons_name_every_unsupported_property():
    from attnsearch.runtime.backends import HopperBackend

    reasons = " | ".join(HopperBackend.not_supported_reasons(device="cuda", capability=(8, 0), dtype=torch.float32,
                                                            head_dim=80, block_size=64))
    for expected in ("compute capability 9.x", "dtype torch.float32", "head_dim 80", "block size 64"):
        assert expected in reasons, reasons
    assert not HopperBackend.not_supported_reasons(device="cuda", capability=(9, 0), dtype=torch.bfloat16,
                                                   head_dim=128, block_size=128)
    q = torch.randn(1, 2, 300, 160)[..., ::2]  # a strided last dim: no TMA
    assert "tensors are on cpu" in HopperBackend.call_reasons(q, q, q, 128)[0]


def test_tile_table_decodes_each_tile():
    """Per program (first row, first empty row, end row, kept blocks), then per tile (head, query
    block, batch index, kept · 2 + tail) in schedule order with empty tiles last, then a spare row;
    ``tail`` only where block nb - 1 is kept and runs past N."""
    from attnsearch import Geometry
    from attnsearch.bench import mixed_layer_plan
    from attnsearch.runtime.block_tables import build_block_tables

    geom = Geometry(3, 10, 20)  # N = 600: the last of 5 blocks of 128 holds 88 tokens
    tables = build_block_tables(mixed_layer_plan(geom, 4, 128, 0.3), "cpu")
    tables.counts[1, 2] = 0  # a query block that keeps nothing (the table moves it last)
    work, batch, programs, nb = tables.launches[0].work, 2, 3, tables.num_blocks
    kept = lambda tile: int(tables.counts.flatten()[int(work[tile // batch])])  # noqa: E731
    t = hopper_kernel.tile_table(tables, work, batch, programs, geom.num_tokens)
    assert t.dtype == torch.int32
    header, rows = t[: 4 * programs].view(-1, 4).tolist(), t[4 * programs:].view(-1, 4).tolist()
    assert len(rows) == work.numel() * batch + 1
    expect_order, seen_tail, row_at = [], False, 0
    for (first, empty_from, end, total), owned in zip(header, schedule(tables.counts, work, batch, programs)):
        busy = [x for x in owned if kept(x) > 0]
        assert (first, empty_from, end) == (row_at, row_at + len(busy), row_at + len(owned))
        assert total == sum(kept(x) for x in busy)
        expect_order += busy + [x for x in owned if kept(x) == 0]
        row_at = end
    assert sum(kept(x) == 0 for x in expect_order) == batch
    for tile, (head, qb, b, kt) in zip(expect_order, rows):
        item = int(work[tile // batch])
        assert (head, qb, b) == (item // nb, item % nb, tile % batch)
        last = int(tables.indices[head, qb, kept(tile) - 1]) if kept(tile) else -1
        assert kt == kept(tile) * 2 + (last == nb - 1)
        seen_tail |= kt % 2 == 1
    assert seen_tail  # the geometry makes some row keep the short last block
    full = hopper_kernel.tile_table(tables, work, batch, programs, nb * 128)  # N a multiple of B: no tail
    assert all(kt % 2 == 0 for *_, kt in full[4 * programs:].view(-1, 4).tolist())


def test_flat_schedule_at_head_dim_128_and_for_short_rows():
    """The flat schedule runs at head_dim 128 wherever a block is kept, and at 64 where the non-empty
    query blocks keep < FLAT_BELOW_KEPT key blocks on average (empty ones do not count: they only
    store zeros)."""
    limit = hopper_kernel.FLAT_BELOW_KEPT
    work = torch.arange(4, dtype=torch.int32)
    short = torch.tensor([[limit - 1, limit - 1, 0, 0]], dtype=torch.int32)
    long = torch.tensor([[limit, limit + 2, 0, limit - 2]], dtype=torch.int32)
    nothing = torch.zeros(1, 4, dtype=torch.int32)
    assert hopper_kernel.prefers_flat(short, work, 64)
    assert not hopper_kernel.prefers_flat(long, work, 64)
    assert hopper_kernel.prefers_flat(long, work[3:], 64)  # only the listed items count
    assert hopper_kernel.prefers_flat(short, work, 128) and hopper_kernel.prefers_flat(long, work, 128)
    assert not hopper_kernel.prefers_flat(nothing, work, 64) and not hopper_kernel.prefers_flat(nothing, work, 128)


def test_fp8_p_relabelling_and_v_key_order_leave_p_v_unchanged():
    """The FP8 build relabels P's columns (``kernel.P_COLUMN_ORDER``, so that P is the PV operand
    in the accumulator's registers) and V's storage holds its keys in ``quantize.wgmma_position``'s
    order: the product of the relabelled P with V as stored is P·V, for every row and column."""
    from attnsearch.runtime.hopper.kernel import P_COLUMN_ORDER
    from attnsearch.runtime.quantize import wgmma_key

    g = torch.Generator().manual_seed(0)
    p = torch.randn(64, 128, generator=g, dtype=torch.float64)
    v = torch.randn(128, 16, generator=g, dtype=torch.float64)
    relabelled = p.reshape(64, 4, 2, 2, 4, 2).permute(P_COLUMN_ORDER.value).reshape(64, 128)
    column = torch.arange(128)
    stored = v[column - column % 32 + wgmma_key(column % 32)]          # row k of V's storage
    assert torch.allclose(relabelled @ stored, p @ v, rtol=0, atol=1e-12)
    assert not torch.allclose(relabelled @ v, p @ v)                   # the order matters
