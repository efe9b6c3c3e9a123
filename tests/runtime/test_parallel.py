"""Context parallelism: a rank's slice of a plan, run rank by rank, reproduces the whole plan; the
cases a plan cannot honour are one-line errors."""

from __future__ import annotations

import os
import socket

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from attnsearch import Geometry
from attnsearch.plan import LayerPlan, Plan, PlanError, ScheduleEntry
from attnsearch.runtime import apply, sparse_attention
from attnsearch.runtime.parallel import (head_layout, head_range, kept_blocks_per_rank, rank_layer_plans,
                                         slice_layer_plan, slice_plan)
from test_runtime import qkv

GEOM = Geometry(4, 8, 8)


def six_heads() -> LayerPlan:
    """Fused groups that straddle every split of 6 heads into 2 or 3 ranks; heads 2 and 5 in FP8."""
    return LayerPlan.from_heads([("diagonal", {"rows": 0.5}), ("vertical_stripe", {"key_blocks": [1]}),
                                 ("diagonal", {"rows": 1}), ("skip", {}), ("dense", {}),
                                 ("multi_diagonal", {"rows": 0.5, "frames": 1})], GEOM, 64,
                                precisions=["native", "native", "fp8", "native", "native", "fp8"])


def test_head_range_splits_heads_evenly_and_refuses_an_indivisible_count():
    assert [head_range(12, 3, r) for r in range(3)] == [range(0, 4), range(4, 8), range(8, 12)]
    with pytest.raises(PlanError, match="12 attention heads are not divisible by the Ulysses degree 5") as err:
        head_range(12, 5, 0)
    assert "\n" not in str(err.value)


def test_slices_keep_each_heads_pattern_and_params():
    lp = six_heads()
    for degree in (2, 3):
        slices = rank_layer_plans(lp, degree)
        rebuilt = [spec for s in slices for spec in s.head_specs]
        assert tuple(rebuilt) == lp.head_specs
        assert tuple(p for s in slices for p in s.head_precisions) == lp.head_precisions
        for s in slices:
            assert torch.equal(s.block_masks(), lp.block_masks()[list(head_range(6, degree, slices.index(s)))])


@pytest.mark.parametrize("degree", [2, 3])
def test_rank_slices_run_rank_by_rank_reproduce_the_whole_plan_exactly(degree):
    lp = six_heads()
    q, k, v = qkv(1, 6, GEOM.num_tokens, 16)
    whole = sparse_attention(q, k, v, lp, backend="torch")
    parts = [sparse_attention(q[:, h], k[:, h], v[:, h], s, backend="torch")
             for h, s in ((head_range(6, degree, r), s) for r, s in enumerate(rank_layer_plans(lp, degree)))]
    assert torch.equal(torch.cat(parts, 1), whole)


class UlyssesRankNet(nn.Module):
    """Two attention layers of 6 heads; rank ``rank`` of ``degree`` computes only its heads, as
    after Ulysses' all-to-all (``rank`` None: every head, one process)."""

    def __init__(self, rank: int | None = None, degree: int = 1) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.qkv = nn.ModuleList(nn.Linear(32, 3 * 6 * 16) for _ in range(2))
        self.heads = list(range(6) if rank is None else head_range(6, degree, rank))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[batch, this rank's heads, N, 2 layers × 16]."""
        b, n, _ = x.shape
        outs = []
        for proj in self.qkv:
            q, k, v = proj(x).view(b, n, 3, 6, 16).unbind(2)
            outs.append(F.scaled_dot_product_attention(*(t[:, :, self.heads].transpose(1, 2) for t in (q, k, v))))
        return torch.cat(outs, -1)


def two_layer_plan() -> Plan:
    lp = six_heads()
    other = LayerPlan.from_heads([("diagonal", {"rows": 1})] * 3 + [("energy_decay", {"decay": 0.5})] * 3, GEOM, 64)
    return Plan(GEOM, 64, 2, 2, 6, (ScheduleEntry(0, 1, None), ScheduleEntry(1, 2, (lp, other))))


@pytest.mark.parametrize("degree", [2, 3])
def test_apply_with_heads_runs_the_ranks_slice(degree):
    """Each rank's model, under apply(heads=its range), gives exactly its heads of the whole run."""
    plan = two_layer_plan()
    x = torch.randn(1, GEOM.num_tokens, 32)
    with torch.no_grad():
        whole_net = UlyssesRankNet()
        with apply(whole_net, plan, backend="torch"):
            whole = [whole_net(x) for _ in range(2)]
        for r in range(degree):
            net = UlyssesRankNet(r, degree)
            with apply(net, plan, backend="torch", heads=head_range(6, degree, r)) as ap:
                part = [net(x) for _ in range(2)]
            assert ap.stats["sparse"] == 2 and ap.stats["dense"] == 2
            for p, w in zip(part, whole):
                assert torch.equal(p, w[:, net.heads])


@pytest.mark.parametrize("degree", [2, 3])
def test_residual_reuse_rank_by_rank_reproduces_the_whole_run(degree):
    """A plan reusing residuals (exact steps 0 and 2) under apply(heads=its range): each rank keeps
    the residuals of its own heads, and its outputs at every step are its heads of the whole run."""
    lp, other = two_layer_plan().schedule[1].layers
    plain = Plan(GEOM, 64, 4, 2, 6, (ScheduleEntry(0, 4, (lp, other)),))
    plan = plain.with_residual([0, 2])
    assert plan.residual_steps == (0, 2)
    xs = [torch.randn(1, GEOM.num_tokens, 32) for _ in range(4)]   # every step's inputs differ
    with torch.no_grad():
        whole_net = UlyssesRankNet()
        with apply(whole_net, plan, backend="torch"):
            whole = [whole_net(x) for x in xs]
        with apply(whole_net, plain, backend="torch"):
            alone = [whole_net(x) for x in xs]
        assert (whole[1] - alone[1]).abs().max() > 1e-3                 # the reuse changes the output
        for r in range(degree):
            net = UlyssesRankNet(r, degree)
            with apply(net, plan, backend="torch", heads=head_range(6, degree, r)) as ap:
                part = [net(x) for x in xs]
            assert ap.stats["residual_peak_bytes"] > 0
            for step, (p, w) in enumerate(zip(part, whole)):
                torch.testing.assert_close(p, w[:, net.heads], rtol=0, atol=1e-6, msg=f"rank {r}, step {step}")


def test_slice_plan_is_a_valid_plan_of_the_ranks_heads():
    plan = two_layer_plan()
    local = slice_plan(plan, range(2, 4))
    assert local.num_heads == 2 and local.num_steps == plan.num_steps
    assert local.layer_plan(1, 0) == slice_layer_plan(plan.layer_plan(1, 0), range(2, 4))
    assert Plan.from_dict(local.to_dict()) == local


def test_kept_blocks_per_rank_counts_every_call():
    plan = two_layer_plan()
    nb = GEOM.num_blocks(64)
    per = kept_blocks_per_rank(plan, 2)
    expect = np.zeros(2, dtype=np.int64) + 2 * 3 * nb * nb  # step 0: 2 dense layers × 3 heads per rank
    for lp in plan.schedule[1].layers:
        m = lp.block_masks().flatten(1).sum(1)
        expect += np.array([int(m[:3].sum()), int(m[3:].sum())])
    assert per.tolist() == expect.tolist()


def test_one_line_errors_for_what_a_slice_cannot_honour():
    plan = two_layer_plan()
    with pytest.raises(PlanError, match=r"heads: \[4, 8\) is outside the plan's heads \[0, 6\)"):
        head_layout(None, plan, range(4, 8))
    with pytest.raises(PlanError, match="heads: expected a range or"):
        head_layout(None, plan, (1, 2, 3))
    net = UlyssesRankNet(0, 2)  # 3 heads per call
    with pytest.raises(PlanError, match="num_heads: the call has 3 query heads, the plan 6"):
        with torch.no_grad(), apply(net, plan, backend="torch"):  # no heads= and no process group
            net(torch.randn(1, GEOM.num_tokens, 32))


# --- two gloo ranks running diffusers' own Ulysses attention ----------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ulysses_rank(rank: int, world: int, port: int, results) -> None:
    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        from diffusers import ContextParallelConfig
        from test_diffusers_dispatch import tiny_wan

        model, kw, plan = tiny_wan()
        with torch.no_grad(), apply(model, plan, backend="torch"):
            whole = model(**kw)[0]
        torch.accelerator.device_count = lambda: 1  # diffusers places rank r on accelerator r % count; CPU has none
        model.enable_parallelism(config=ContextParallelConfig(ulysses_degree=world))
        with torch.no_grad(), apply(model, plan, backend="torch") as ap:
            split = model(**kw)[0]
        results.put((rank, ap.layout.heads, ap.stats["sparse"], torch.equal(split, whole)))
        # No rank tears gloo down while the other's last collective may still be in flight: that
        # aborted a rank at exit ("terminate called without an active exception").
        dist.barrier()
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_two_gloo_ranks_under_diffusers_ulysses_reproduce_the_one_process_plan():
    """diffusers' ContextParallelConfig(ulysses_degree=2) on 2 CPU processes: apply reads each
    rank's heads from the config, and the all-to-all'd output equals the one-process plan's exactly."""
    pytest.importorskip("diffusers")
    import torch.multiprocessing as mp

    # Where there is a fork server, the ranks are forked from one that has imported diffusers and
    # this module once for both (each is still a fresh process of its own, as a spawned one is).
    method = "forkserver" if "forkserver" in mp.get_all_start_methods() else "spawn"
    ctx = mp.get_context(method)
    if method == "forkserver":
        ctx.set_forkserver_preload([__name__, "test_diffusers_dispatch", "diffusers"])
    results = ctx.Queue()
    mp.start_processes(_ulysses_rank, args=(2, _free_port(), results), nprocs=2, start_method=method)
    got = sorted(results.get(timeout=60) for _ in range(2))
    assert got == [(0, range(0, 2), 2, True), (1, range(2, 4), 2, True)]
