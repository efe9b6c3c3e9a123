"""Timing layer plans and plans on CUDA: our kernels against dense cuDNN and FlexAttention.

Effective TFLOP/s count the kept blocks only: 4·batch·H·N²·D·density / time (dense: density 1).
Results are dicts (JSON-ready) naming the card.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import torch

from ..plan import LayerPlan, Plan
from ..runtime.backends import TritonBackend, dense_kernel_reasons, select_backend
from ..runtime.block_tables import get_block_tables
from ..telemetry import ClockSampler
from .baselines import cudnn_sdpa, dense_cudnn_ms, flex_attention_fn, flops
from .timing import card_name, fresh_inputs, host_us, time_ms


def bench_layer_plan(layer_plan: LayerPlan, *, batch: int = 1, head_dim: int = 128,
                     dtype: torch.dtype = torch.bfloat16, layout: str = "bhnd", warmup: int = 3,
                     reps: int = 20, input_sets: int = 2, cudnn: bool = True, flex: bool = True,
                     groups_alone: bool = True, config: Any = None,
                     dense_ms: float | None = None, timing: str = "queued",
                     sampler: ClockSampler | None = None) -> dict[str, Any]:
    """Time one layer plan on CUDA: our kernel, cuDNN dense, FlexAttention on the same blocks.

    Args:
        layer_plan: the layer (geometry gives N, num_heads gives H).
        batch, head_dim, dtype, layout: the inputs, [batch, H, N, head_dim] (``bnhd``: transposed
            views of [batch, N, H, head_dim]).
        config: a ``runtime.triton.launch.KernelConfig`` (the triton backend with that config, for
            every precision), or None for what ``sparse_attention`` runs: per precision of the heads
            the backend "auto" picks (hopper on H100/H200 at block size 128, else triton with its
            tuned config).
        groups_alone: also time each head group as its own launch, to compare the fused layer
            with the sum of its groups.
        dense_ms: reuse a cuDNN time measured before for this shape (skips timing it again).
        timing: ``time_ms``'s mode for every timing ("queued": the GPU's time per call; "synced":
            each call alone, the host's launch work included; "sustained": seconds of calls each).
        sampler: a running ``ClockSampler`` (``clock_sampler``): sustained timings then come with
            "sparse_clock", "cudnn_clock" and "flex_clock" (SM MHz, watts, clock-limit reasons).
    Returns:
        JSON-ready dict: ms (median), effective TFLOP/s on kept blocks, speedups, per-group times.
    """
    geom, H = layer_plan.geometry, layer_plan.num_heads
    n = geom.num_tokens
    shape = (batch, H, n, head_dim)
    inputs = fresh_inputs(shape, dtype, input_sets, layout)
    scale = head_dim ** -0.5
    tables = get_block_tables(layer_plan, "cuda")
    out = torch.empty(shape, dtype=dtype, device="cuda")
    dens = layer_plan.density
    fl = flops(batch, H, n, head_dim, dens)
    dense_fl = flops(batch, H, n, head_dim, 1.0)
    backends = {p: TritonBackend if config is not None else select_backend(*inputs[0], layer_plan, "auto", p)
                for p in tables.precisions}
    backend = next(iter(backends.values()))
    options = {"config": config} if config is not None else {}

    def run(x):
        for precision, b in backends.items():
            b.run_tables(*x, tables, scale, out, precision=precision, **options)

    run(inputs[0])  # tune (if config is None) and compile outside the timing
    used = config if config is not None else backend.tuned_config(*inputs[0], layer_plan.block_size)
    t = time_ms(run, inputs, warmup, reps, mode=timing, sampler=sampler)
    head_dens = layer_plan.head_densities()
    res: dict[str, Any] = {
        "card": card_name(), "shape": list(shape), "dtype": str(dtype).removeprefix("torch."),
        "layout": layout, "geometry": geom.to_dict(), "block_size": layer_plan.block_size, "density": dens,
        "groups": [{"pattern": g.pattern, "heads": len(g.heads), "precision": g.precision,
                    "density": float(head_dens[list(g.heads)].mean())} for g in layer_plan.groups],
        "backend": backend.name, "backends": {p: b.name for p, b in backends.items()},
        "config": None if backend.name != "triton" or used is None else vars(used),
        "timing": t["mode"], "sparse_ms": t["median"], "sparse_ms_min": t["min"],
        "sparse_tflops": fl / t["median"] / 1e9, "sparse_host_us": host_us(run, inputs),
        "target_speedup": 0.8 / dens if dens > 0 else None,
    }
    if "clock" in t:
        res["sparse_clock"] = t["clock"]
    if cudnn:
        if dense_ms is None:
            td = time_ms(lambda x: cudnn_sdpa(*x), inputs, warmup, reps, mode=timing, sampler=sampler)
            dense_ms = td["median"]
            if "clock" in td:
                res["cudnn_clock"] = td["clock"]
        res.update(cudnn_ms=dense_ms, cudnn_tflops=dense_fl / dense_ms / 1e9,
                   speedup_vs_cudnn=dense_ms / t["median"])
    if flex:
        fn = flex_attention_fn(tables, n, scale)
        fn(inputs[0])
        tf = time_ms(fn, inputs, warmup, reps, mode=timing, sampler=sampler)
        res.update(flex_ms=tf["median"], flex_tflops=fl / tf["median"] / 1e9,
                   flex_host_us=host_us(fn, inputs), speedup_vs_flex=tf["median"] / t["median"])
        if "clock" in tf:
            res["flex_clock"] = tf["clock"]
    computed_groups = [g for g in layer_plan.groups if g.pattern != "skip"]
    if (groups_alone and len(backends) == 1 and (used is not None or backend.name == "hopper")
            and len(computed_groups) > 1):
        gt = get_block_tables(layer_plan, "cuda", "group")
        per = []
        for launch in gt.launches:
            def alone(x, work=launch.work):
                backend.run_launch(*x, out, gt, work, scale, **({"config": used} if backend.name == "triton" else {}))

            ms = time_ms(alone, inputs, warmup, reps, mode=timing)["median"]
            per.append({"heads": list(launch.heads), "ms": ms})
        total = sum(p["ms"] for p in per)
        res.update(groups_alone=per, groups_sum_ms=total, mixed_over_sum=t["median"] / total)
    return res


def bench_layer_plans(layer_plans: Sequence[LayerPlan], *, on_layer: Callable[[int, int], None] | None = None,
                      cost: Any = None, **kwargs: Any) -> list[dict[str, Any]]:
    """``bench_layer_plan`` of each, in order, timing dense cuDNN once (the layer plans share a shape)
    and reusing it; ``on_layer(done, total)`` after each (progress); ``cost`` (a CostModel): each
    row's ``predicted_ms``."""
    rows: list[dict[str, Any]] = []
    dense_ms = None
    for lp in layer_plans:
        rows.append(bench_layer_plan(lp, dense_ms=dense_ms, **kwargs))
        if cost is not None:
            rows[-1]["predicted_ms"] = cost.layer_ms(lp)
        dense_ms = rows[-1].get("cudnn_ms")
        if on_layer is not None:
            on_layer(len(rows), len(layer_plans))
    return rows


def bench_plan(plan: Plan, *, head_dim: int = 128, batch: int = 1, dtype: torch.dtype = torch.bfloat16,
               on_layer: Callable[[int, int], None] | None = None, cost: Any = None, **kwargs: Any) -> dict[str, Any]:
    """Every distinct layer plan of ``plan`` timed once; totals over all steps × layers vs dense cuDNN.
    ``on_layer(done, total)`` is called after each distinct layer plan (progress); ``cost`` (a
    CostModel): each row's ``predicted_ms``."""
    uses: dict[LayerPlan, int] = {}
    for e in plan.schedule:
        for layer in range(plan.num_layers):
            lp = plan.layer_plan(e.start, layer)
            uses[lp] = uses.get(lp, 0) + (e.stop - e.start)
    dense_ms = dense_cudnn_ms(plan.geometry, plan.num_heads, batch=batch, head_dim=head_dim, dtype=dtype,
                              reps=kwargs.get("reps", 20), timing=kwargs.get("timing", "queued"))
    n = plan.geometry.num_tokens
    probe = torch.empty(batch, plan.num_heads, n, head_dim, dtype=dtype, device="cuda")  # as apply's q, k, v
    rows = []
    for i, (lp, count) in enumerate(uses.items()):
        dense = lp.is_dense
        if dense and dense_kernel_reasons(probe, probe, probe, lp, {}):
            # apply() runs this through SDPA itself (cuDNN first on Hopper): the baseline's time.
            rows.append({"density": 1.0, "runs": "sdpa", "sparse_ms": dense_ms, "calls": count,
                         "sparse_tflops": flops(batch, plan.num_heads, n, head_dim, 1.0) / dense_ms / 1e9,
                         "shape": [batch, plan.num_heads, n, head_dim]})
        else:  # sparse, or all-dense on the Hopper kernel with every key block kept, as apply() runs it
            r = bench_layer_plan(lp, head_dim=head_dim, batch=batch, dtype=dtype, groups_alone=False,
                                 dense_ms=dense_ms, **kwargs)
            rows.append({**r, "runs": "dense kernel" if dense else "sparse", "calls": count})
        if cost is not None:
            rows[-1]["predicted_ms"] = cost.layer_ms(lp)
        if on_layer is not None:
            on_layer(i + 1, len(uses))
    calls = plan.num_steps * plan.num_layers
    sparse_total = sum(r["sparse_ms"] * r["calls"] for r in rows)
    result = {"card": card_name(), "layer_plans": rows, "calls": calls}
    if plan.has_residual:
        result["residual"] = bench_residual(plan, head_dim=head_dim, batch=batch, dtype=dtype, cost=cost,
                                            **{k: kwargs[k] for k in ("warmup", "reps", "timing") if k in kwargs})
        sparse_total += result["residual"]["total_ms"]
    return {**result, "sparse_total_ms": sparse_total, "dense_total_ms": dense_ms * calls,
            "speedup_vs_cudnn": dense_ms * calls / sparse_total}


def bench_residual(plan: Plan, *, head_dim: int = 128, batch: int = 1, dtype: torch.dtype = torch.bfloat16,
                   warmup: int = 3, reps: int = 20, timing: str = "queued", cost: Any = None) -> dict[str, Any]:
    """Time what ``plan``'s residual entries add to its layer plans, as ``apply`` runs it
    (docs/design.md, "Residual reuse"): per layer of an entry, at its exact step the reusing heads'
    exact call (q, k, v gathered to those heads; an all-dense layer of that many heads on the Hopper
    kernel where it runs, else cuDNN SDPA) with the pass keeping exact − planned and writing the
    exact heads into the output, and at each later step the pass adding the residual. One timing
    per distinct set of reusing heads; ``cost`` (a CostModel): each row's prediction beside it.
    Returns the rows and ``total_ms`` over the plan's steps and layers."""
    from ..runtime import sparse_attention

    n, heads = plan.geometry.num_tokens, plan.num_heads
    uses: dict[tuple[int, ...], list[int]] = {}       # reusing heads → [exact steps, later steps]
    for e in plan.schedule:
        if e.residual:
            for lp in e.layers:
                if lp.reuse_heads:
                    u = uses.setdefault(lp.reuse_heads, [0, 0])
                    u[0] += 1
                    u[1] += e.stop - e.start - 1
    inputs = fresh_inputs((batch, heads, n, head_dim), dtype, 2)
    out = torch.empty(batch, heads, n, head_dim, dtype=dtype, device="cuda")
    rows, total = [], 0.0
    for reusing, (exact_calls, later_calls) in uses.items():
        every = len(reusing) == heads
        index = torch.tensor(reusing, device="cuda")
        dense = LayerPlan.dense(plan.geometry, len(reusing), plan.block_size)
        kernel = not dense_kernel_reasons(*(t[:, : len(reusing)] for t in inputs[0]), dense, {})
        residual = torch.empty(batch, len(reusing), n, head_dim, dtype=dtype, device="cuda")

        def exact_step(x, index=index, every=every, dense=dense, kernel=kernel):
            q, k, v = x if every else (t.index_select(1, index) for t in x)
            exact = sparse_attention(q, k, v, dense, backend="hopper") if kernel else cudnn_sdpa(q, k, v)
            if every:
                kept = exact - out
                out.copy_(exact)
            else:
                kept = exact - out.index_select(1, index)
                out.index_copy_(1, index, exact)
            return kept

        def later_step(x, index=index, every=every, residual=residual):
            if every:
                out.add_(residual)
            else:
                out.index_add_(1, index, residual)

        exact_ms = time_ms(exact_step, inputs, warmup, reps, mode=timing)["median"]
        later_ms = time_ms(later_step, inputs, warmup, reps, mode=timing)["median"]
        row = {"reuse_heads": len(reusing), "exact_calls": exact_calls, "later_calls": later_calls,
               "exact_runs": "dense kernel" if kernel else "sdpa", "exact_step_ms": exact_ms, "later_step_ms": later_ms}
        if cost is not None:
            row["predicted_exact_step_ms"] = (cost.dense_layer_ms(n, len(reusing), plan.block_size)
                                              + cost.residual_pass_ms(len(reusing), n))
            row["predicted_later_step_ms"] = cost.residual_pass_ms(len(reusing), n)
        rows.append(row)
        total += exact_calls * exact_ms + later_calls * later_ms
    return {"exact_steps": list(plan.residual_steps), "rows": rows, "total_ms": total}


__all__ = ["bench_layer_plan", "bench_layer_plans", "bench_plan", "bench_residual"]
