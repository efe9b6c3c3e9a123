"""Where the Hopper kernel's cycles go: its consumers' cycle-counter probe, on CUDA.

    PYTHONUNBUFFERED=1 python benchmarks/kernel_probe_gpu.py --out $OUT [--reps 10] [--module _hopper_products]
        [--case HEADS:FRAMES:HEIGHT:WIDTH:TEXT:DENSITY:HEAD_DIM ...]

Nsight Compute is not on the GPU machine, so the kernel measures itself: ``hopper_kernel.launch(...,
probe=buf)`` builds it with ``%clock`` reads around each step of a consumer's turn (``PROBE_FIELDS``)
and writes, per program and consumer warpgroup, the cycles spent waiting for K/V, for the turn
(+ issuing the two wgmmas), for S, in the softmax, waiting for PV (+ rescaling O), the number of
such turns, and the cycles at tile boundaries; what is left of the consumer's run is the loops'
bookkeeping. For each case this prints

* ms and TFLOP/s of the normal build and of the probe build (the reads cost a little),
* per warpgroup: cycles per turn in each phase and of bookkeeping, and per-tile boundary work in
  cycles and in turns,
* the SM clock the probe implies (cycles of the longest program / the launch's time); under
  ``--timing sustained`` also the clock ``nvidia-smi`` saw, and their ratio. The ratio is not the
  launch's busy share: at head_dim 64 and 10% nvidia-smi read ~9% above the cycle counter's rate
  while every program ran for 98-99% of the launch (H100, session 9),
* the launch's timeline on the global nanosecond timer: the consumers' last start, first and
  median end, and their mean busy share of the span (its ramp and tail: load imbalance),
* the tensor-core cycles of one kept block's products (both consumers') at the card's peak rate
  (4,096 dense bf16 FLOP per cycle per SM on H100 SXM): the floor a turn cannot go under.

``--module M`` probes another build of the kernel, ``attnsearch/runtime/M.py`` (e.g. one patched with
reports/kernel/probe/products_only.patch: where a tile's fixed cost goes without the softmax).
Writes kernel_probe_gpu.{json,md,png} under --out.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import time
from pathlib import Path

import torch
import triton

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
from attnsearch.runtime import triton_kernel  # noqa: E402
from attnsearch.runtime.block_tables import get_block_tables  # noqa: E402
from attnsearch.runtime.hopper_kernel import PROBE_FIELDS  # noqa: E402

#: (heads, geometry, target density, head_dim): issue 6's 12-head shape at the densities it names,
#: the 40-head shape at 10%, and head_dim 64 (24 heads) at 10 / 25%.
CASES = [(12, Geometry(21, 30, 52), t, 128) for t in (0.1, 0.25, 0.5)] + \
        [(40, Geometry(21, 60, 60), 0.1, 128)] + \
        [(24, Geometry(21, 30, 52), t, 64) for t in (0.1, 0.25)]


def parse_case(text: str) -> tuple[int, Geometry, float, int]:
    """``--case`` "HEADS:FRAMES:HEIGHT:WIDTH:TEXT:DENSITY:HEAD_DIM" → a CASES entry, e.g. CogVideoX-5B's
    layer (48 heads, 13 × 30 × 45 latent tokens and 226 text tokens, head_dim 64) at 10%:
    "48:13:30:45:226:0.1:64"."""
    try:
        heads, frames, height, width, text_tokens, density, head_dim = text.split(":")
        return int(heads), Geometry(int(frames), int(height), int(width), int(text_tokens)), float(density), \
            int(head_dim)
    except ValueError as e:
        raise argparse.ArgumentTypeError(f"--case {text!r}: want HEADS:FRAMES:HEIGHT:WIDTH:TEXT:DENSITY:HEAD_DIM ({e})")


PHASES = tuple(f for f in PROBE_FIELDS if f not in ("total", "turns", "tile_edges", "start_ns", "end_ns"))  # a turn's parts
#: Dense bf16 tensor-core FLOP per cycle per SM (H100 SXM: 989.4 TFLOP/s at 1,830 MHz on 132 SMs).
PEAK_FLOP_PER_CYCLE = 4096


def probe_launch(kernel, q, k, v, out, tables, scale, flat: bool) -> torch.Tensor:
    """One probed launch of ``kernel`` (a build of hopper_kernel) per work item → int32 [launches,
    programs, 2, 8]."""
    bufs = []
    for item in tables.launches:
        programs = kernel.launch_grid(item.work.numel() * q.shape[0], q.device)
        buf = torch.zeros(programs, 2, len(PROBE_FIELDS), dtype=torch.int32, device=q.device)
        kernel.launch(q, k, v, out, tables, item.work, scale, flat=flat, probe=buf)
        bufs.append(buf)
    return torch.stack(bufs)  # no synchronisation: time_ms queues these calls like any other


def summarise(buf: torch.Tensor, tiles_per_program: torch.Tensor, head_dim: int) -> dict:
    """Per warpgroup: mean cycles per turn of each phase, per-tile work (cycles and turns)."""
    b = buf.double().cpu()[0]  # [programs, 2, fields]: the mixed layers here are one launch
    fields = {name: b[:, :, i] for i, name in enumerate(PROBE_FIELDS)}
    turns = fields["turns"].sum(0)
    # The launch on the global timer: the consumers' starts and ends (low 32 bits, unwrapped against
    # the earliest start), so the ramp (last start), the tail (last end against the median end) and
    # the programs' mean share of the launch show.
    stamps = buf[0, :, :, PROBE_FIELDS.index("start_ns"):].long().cpu()
    rel = (stamps - stamps[0, 0, 0] + 2**31) % 2**32 - 2**31  # signed ns from one consumer's start
    start, end = (rel[..., 0] - rel[..., 0].min()).double(), (rel[..., 1] - rel[..., 0].min()).double()
    span = float(end.max())
    timeline = {"span_us": span / 1e3, "last_start_us": float(start.max()) / 1e3,
                "median_end_us": float(end.median()) / 1e3, "first_end_us": float(end.min()) / 1e3,
                "mean_busy": float(((end - start) / span).mean())}
    per_program = fields["total"].max(1).values  # the later of its two consumers
    # A consumer's turn comes round once per kept block, whose products (both consumers') need
    # 4 · 128² · D FLOP of the tensor cores: the turn's floor.
    res = {"turn_floor_cycles": 4 * 128 * 128 * head_dim / PEAK_FLOP_PER_CYCLE,
           "max_program_cycles": float(per_program.max()), "min_program_cycles": float(per_program.min()),
           "mean_program_cycles": float(per_program.mean()), "programs": int(b.shape[0]), "timeline": timeline}
    for wg in range(2):
        per_turn = {p: float(fields[p][:, wg].sum() / turns[wg]) for p in PHASES}
        turn = sum(per_turn.values())
        edges = float(fields["tile_edges"][:, wg].sum())
        other = float((fields["total"][:, wg] - sum(fields[p][:, wg] for p in PHASES)).sum()) - edges
        tiles = float(tiles_per_program.sum())
        res[f"wg{wg}"] = {**per_turn, "turn": turn, "turns": float(turns[wg]), "bookkeeping": other / float(turns[wg]),
                          "per_tile_cycles": edges / tiles, "per_tile_turns": edges / tiles / turn,
                          "load_max_over_mean": float(fields["total"][:, wg].max() / fields["total"][:, wg].mean())}
    return res


def run_case(kernel, H: int, geom: Geometry, target: float, d: int, reps: int, timing: str = "queued",
             sampler=None) -> list[dict]:
    lp = mixed_layer_plan(geom, H, 128, target, SPARSE_FAMILIES)
    n = geom.num_tokens
    tables = get_block_tables(lp, "cuda")
    assert len(tables.launches) == 1, "a mixed layer runs as one launch"
    inputs = fresh_inputs((1, H, n, d), torch.bfloat16, 2)
    out = torch.empty(1, H, n, d, device="cuda", dtype=torch.bfloat16)
    fl, scale = flops(1, H, n, d, lp.density), d ** -0.5
    kept = tables.counts.flatten()[tables.launches[0].work.long()]
    common = {"H": H, "N": n, "D": d, "density": lp.density, "mean_kept": float(kept[kept > 0].float().mean())}
    rows = []
    tri = time_ms(lambda x: triton_kernel.forward(*x, tables, scale, out=out), inputs, 2, reps)["median"]
    rows.append({**common, "schedule": "triton", "ms": tri, "tflops": fl / tri / 1e9})
    for flat in (False, True):
        name = "flat" if flat else "tiles"
        ms = time_ms(lambda x, flat=flat: kernel.forward(*x, tables, scale, out=out, flat=flat), inputs, 2,
                     reps)["median"]
        probed = lambda x, flat=flat: probe_launch(kernel, *x, out, tables, scale, flat)  # noqa: E731
        timed = time_ms(probed, inputs, 2, reps, mode=timing, sampler=sampler)
        ms_probe = timed["median"]
        want = kernel.forward(*inputs[0], tables, scale, out=torch.empty_like(out), flat=flat)
        buf = probed(inputs[0])
        # The probe only reads clocks: same arithmetic, same bits (in a patched build too, wrong or not).
        assert torch.equal(out, want), f"probe build changed the output ({name})"
        work = tables.launches[0].work
        programs = buf.shape[1]
        header = kernel.tile_table(tables, work, 1, programs, n)[: 4 * programs].view(programs, 4).cpu()
        tiles = (header[:, 1] - header[:, 0]).double()  # tiles with work
        s = summarise(buf, tiles, d)
        mhz = s["max_program_cycles"] / (ms_probe * 1e-3) / 1e6
        seen = (timed.get("clock") or {}).get("sm_mhz")
        rows.append({**common, "schedule": name, "ms": ms, "tflops": fl / ms / 1e9, "ms_probe": ms_probe,
                     "tflops_probe": fl / ms_probe / 1e9, "sm_mhz": mhz, "timing": timing,
                     "smi_sm_mhz": seen, "clock_ratio": mhz / seen if seen else None, **s})
        w0, w1 = s["wg0"], s["wg1"]
        print(f"  H={H} N={n} D={d} d={lp.density:.3f} kept≈{common['mean_kept']:.0f} {name:<5} "
              f"{fl / ms / 1e9:4.0f} TFLOP/s (probe {fl / ms_probe / 1e9:4.0f}), ~{mhz:.0f} MHz"
              + (f" ({mhz / seen:.1%} of nvidia-smi's {seen:.0f})" if seen else "") + "; cycles/turn "
              f"wg0 {w0['turn']:.0f} wg1 {w1['turn']:.0f} (floor {s['turn_floor_cycles']:.0f}): "
              + ", ".join(f"{p} {w0[p]:.0f}/{w1[p]:.0f}" for p in PHASES)
              + f", bookkeeping {w0['bookkeeping']:.0f}/{w1['bookkeeping']:.0f}; per tile {w0['per_tile_cycles']:.0f} "
              f"cycles = {w0['per_tile_turns']:.1f} turns; launch {ms_probe * 1e3:.0f} µs, programs' span "
              f"{s['timeline']['span_us']:.0f} µs (last start {s['timeline']['last_start_us']:.1f}, first end "
              f"{s['timeline']['first_end_us']:.0f}, median end {s['timeline']['median_end_us']:.0f}), mean busy "
              f"{s['timeline']['mean_busy']:.1%}", flush=True)
    return rows


def table(rows: list) -> str:
    lines = ["| H × N, D | density (kept/row) | schedule | TFLOP/s (probe) | MHz (share of nvidia-smi's) | mean busy | cycles per turn, wg0 / wg1: "
             + " · ".join(PHASES) + " | turn | bookkeeping | floor | tile edges: cycles (turns) | load max/mean |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        head = f"| {r['H']} × {r['N']}, {r['D']} | {r['density']:.3f} ({r['mean_kept']:.0f}) | {r['schedule']} | "
        if r["schedule"] == "triton":
            lines.append(head + f"{r['tflops']:.0f} | | | | | | | | |")
            continue
        w0, w1 = r["wg0"], r["wg1"]
        mhz = f"{r['sm_mhz']:.0f}" + (f" ({r['clock_ratio']:.0%} of {r['smi_sm_mhz']:.0f})" if r.get("clock_ratio") else "")
        mhz += f" | {r['timeline']['mean_busy']:.1%}"
        lines.append(head + f"{r['tflops']:.0f} ({r['tflops_probe']:.0f}) | {mhz} | "
                     + " · ".join(f"{w0[p]:.0f}/{w1[p]:.0f}" for p in PHASES)
                     + f" | {w0['turn']:.0f}/{w1['turn']:.0f} | {w0['bookkeeping']:.0f}/{w1['bookkeeping']:.0f} | "
                     f"{r['turn_floor_cycles']:.0f} | "
                     f"{w0['per_tile_cycles']:.0f} ({w0['per_tile_turns']:.1f}) | {w0['load_max_over_mean']:.3f} |")
    return "\n".join(lines)


def plot(rows: list, card: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    probed = [r for r in rows if "wg0" in r]
    labels, bars = [], []
    for r in probed:
        for wg in ("wg0", "wg1"):
            labels.append(f"{r['H']}×{r['N']} D{r['D']} {r['density']:.0%} {r['schedule']} {wg}")
            bars.append(r[wg])
    fig, ax = plt.subplots(figsize=(10, 0.35 * len(labels) + 1.5))
    left = [0.0] * len(bars)
    for p in (*PHASES, "bookkeeping"):
        vals = [b[p] for b in bars]
        ax.barh(labels, vals, left=left, label=p, color="0.7" if p == "bookkeeping" else None)
        left = [a + v for a, v in zip(left, vals)]
    for i, r in enumerate(probed):
        ax.plot([r["turn_floor_cycles"]] * 2, [2 * i - 0.4, 2 * i + 1.4], color="black", lw=1)
    ax.invert_yaxis()
    ax.set_xlabel("SM cycles per turn (black: one kept block's products at the tensor cores' peak)")
    ax.set_title(f"Hopper kernel consumers, cycles per turn by phase ({card})")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=Path("reports/kernel"))
    ap.add_argument("--reps", type=int, default=10)
    ap.add_argument("--module", default="hopper_kernel",
                    help="the build to probe: attnsearch/runtime/MODULE.py (default: the package's kernel)")
    ap.add_argument("--case", type=parse_case, action="append",
                    help="probe this shape instead of CASES (repeatable): HEADS:FRAMES:HEIGHT:WIDTH:TEXT:DENSITY:HEAD_DIM")
    ap.add_argument("--timing", choices=TIMING_MODES, default="queued",
                    help="the probe build's timing; sustained also samples the SM clock (nvidia-smi)")
    args = ap.parse_args()
    kernel = importlib.import_module(f"attnsearch.runtime.{args.module}")
    args.out.mkdir(parents=True, exist_ok=True)
    env = {"card": card_name(), "torch": torch.__version__, "triton": triton.__version__,
           "sms": torch.cuda.get_device_properties(0).multi_processor_count, "module": args.module}
    print(env, flush=True)
    t0, rows = time.time(), []
    for H, geom, target, d in args.case or CASES:
        with clock_sampler(args.timing) as sampler:
            rows += run_case(kernel, H, geom, target, d, args.reps, args.timing, sampler)
        (args.out / "kernel_probe_gpu.json").write_text(json.dumps({"env": env, "rows": rows}, indent=1))
        print(f"  ({time.time() - t0:.0f}s)", flush=True)
    md = f"# Hopper kernel probe on {env['card']}\n\n{env}\n\n{table(rows)}\n"
    (args.out / "kernel_probe_gpu.md").write_text(md)
    plot(rows, env["card"], args.out / "kernel_probe_gpu.png")
    print(md)


if __name__ == "__main__":
    main()
