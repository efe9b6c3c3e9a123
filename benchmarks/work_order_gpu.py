"""The fused launch's work order on the GPU: "head" order with its longest items first (the default)
against plain head order, on layers with text tokens, whose query blocks keep every key block.

    PYTHONUNBUFFERED=1 python benchmarks/work_order_gpu.py --out $OUT [--rounds 3] [--reps 20]
        [--timing queued|sustained] [--case HEADS:FRAMES:HEIGHT:WIDTH:TEXT:DENSITY:HEAD_DIM ...]

Both orders run the same kernel ("auto": the Hopper kernel on H100/H200) on the same tables but the
launch's item order (``block_tables.work_order(..., big_item=inf)`` for plain head order), timed in
interleaved rounds in one process, the medians reported with the balance the hopper kernel's list
schedule predicts (max / mean program load). Writes work_order_gpu.{json,md} under --out.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from attnsearch import Geometry  # noqa: E402
from attnsearch.bench import (  # noqa: E402
    TIMING_MODES,
    card_name,
    clock_sampler,
    flops,
    fresh_inputs,
    mixed_layer_plan,
    time_ms,
)
from attnsearch.patterns import SPARSE_FAMILIES  # noqa: E402
from attnsearch.runtime import hopper_kernel  # noqa: E402
from attnsearch.runtime.block_tables import Launch, build_block_tables, work_order  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from kernel_probe_gpu import parse_case  # noqa: E402

#: CogVideoX-5B's and -2B's layers (13 × 30 × 45 latent tokens + 226 text tokens, head_dim 64),
#: HunyuanVideo's at 544 × 960 × 129 frames (33 × 34 × 60 + 256 text, head_dim 128), and a layer
#: without text tokens (nothing to reorder: a control).
CASES = [(48, Geometry(13, 30, 45, 226), 0.1, 64), (48, Geometry(13, 30, 45, 226), 0.25, 64),
         (30, Geometry(13, 30, 45, 226), 0.1, 64), (24, Geometry(33, 34, 60, 256), 0.1, 128),
         (24, Geometry(21, 30, 52), 0.1, 64)]
ORDERS = {"longest first": 2.0, "plain head": float("inf")}


def predicted_balance(tables, work: torch.Tensor, programs: int) -> float:
    """Max / mean program load of ``hopper_kernel.schedule`` (kept blocks + TILE_OVERHEAD per tile)."""
    cost = tables.counts.flatten()[work.long()].double().cpu() + hopper_kernel.TILE_OVERHEAD
    loads = torch.tensor([float(cost[torch.tensor(t, dtype=torch.long)].sum()) if t else 0.0
                          for t in hopper_kernel.schedule(tables.counts, work, 1, programs)])
    return float(loads.max() / loads.mean())


def run_case(H: int, geom: Geometry, target: float, d: int, rounds: int, reps: int, timing: str, sampler) -> dict:
    lp = mixed_layer_plan(geom, H, 128, target, SPARSE_FAMILIES)
    n = geom.num_tokens
    base = build_block_tables(lp, "cuda")
    assert len(base.launches) == 1, "a mixed layer runs as one launch"
    heads = base.launches[0].heads
    tables = {}
    for name, big in ORDERS.items():
        work = work_order(heads, base.counts.cpu(), "head", big_item=big).to(torch.int32).cuda()
        tables[name] = dataclasses.replace(base, launches=(Launch(heads, work),))
    inputs = fresh_inputs((1, H, n, d), torch.bfloat16, 2)
    out = torch.empty(1, H, n, d, device="cuda", dtype=torch.bfloat16)
    fl, scale = flops(1, H, n, d, lp.density), d ** -0.5
    want = hopper_kernel.forward(*inputs[0], tables["plain head"], scale, out=torch.empty_like(out))
    times: dict[str, list[float]] = {name: [] for name in ORDERS}
    for _ in range(rounds):
        for name, t in tables.items():
            times[name].append(time_ms(lambda x, t=t: hopper_kernel.forward(*x, t, scale, out=out), inputs, 3, reps,
                                       mode=timing, sampler=sampler)["median"])
    got = hopper_kernel.forward(*inputs[0], tables["longest first"], scale, out=torch.empty_like(out))
    assert torch.equal(got, want), "the work order changed the output"  # each tile's arithmetic is its own
    programs = hopper_kernel.launch_grid(base.launches[0].work.numel(), inputs[0][0].device)
    row = {"H": H, "N": n, "D": d, "text_tokens": geom.text_tokens, "density": lp.density, "timing": timing,
           "rounds": rounds}
    for name, t in tables.items():
        ms = statistics.median(times[name])
        row[name] = {"ms": ms, "ms_rounds": times[name], "tflops": fl / ms / 1e9,
                     "predicted_balance": predicted_balance(t, t.launches[0].work, programs)}
    a, b = row["longest first"], row["plain head"]
    print(f"  H={H} N={n} D={d} text={geom.text_tokens} d={lp.density:.3f}: longest first {a['tflops']:.0f} "
          f"TFLOP/s (balance {a['predicted_balance']:.3f}), plain head {b['tflops']:.0f} "
          f"({b['predicted_balance']:.3f}): {b['ms'] / a['ms'] - 1:+.1%}", flush=True)
    return row


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=Path("reports/kernel"))
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("--timing", choices=TIMING_MODES, default="queued")
    ap.add_argument("--case", type=parse_case, action="append",
                    help="time this shape instead of CASES (repeatable): HEADS:FRAMES:HEIGHT:WIDTH:TEXT:DENSITY:HEAD_DIM")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    env = {"card": card_name(), "torch": torch.__version__, "timing": args.timing}
    print(env, flush=True)
    rows = []
    with clock_sampler(args.timing) as sampler:
        for H, geom, target, d in args.case or CASES:
            rows.append(run_case(H, geom, target, d, args.rounds, args.reps, args.timing, sampler))
            (args.out / "work_order_gpu.json").write_text(json.dumps({"env": env, "rows": rows}, indent=1))
    lines = [f"# Work order of the fused launch on {env['card']} ({args.timing} timing, {args.rounds} interleaved "
             "rounds, medians)", "",
             "| H × N (text), D | density | longest first: TFLOP/s (balance) | plain head order | gain |",
             "|---|---|---|---|---|"]
    for r in rows:
        a, b = r["longest first"], r["plain head"]
        lines.append(f"| {r['H']} × {r['N']} ({r['text_tokens']}), {r['D']} | {r['density']:.3f} | "
                     f"{a['tflops']:.0f} ({a['predicted_balance']:.3f}) | {b['tflops']:.0f} ({b['predicted_balance']:.3f}) | "
                     f"{b['ms'] / a['ms'] - 1:+.1%} |")
    (args.out / "work_order_gpu.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
