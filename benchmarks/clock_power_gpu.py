"""The SM clock and board power while a kernel runs continuously: whether a kernel's rate is bound by
the card's power limit (the clock then drops as its work per cycle rises) rather than by a unit.

    python benchmarks/clock_power_gpu.py --out $OUT [--seconds 3]

Each workload runs back to back for ``--seconds`` while ``nvidia-smi`` samples the SM clock, power
draw, power limit, temperature and the active clock-limit reasons every 50 ms; the first 0.5 s of
each window (ramp) are dropped. Workloads: a bf16 8192³ matmul, cuDNN dense attention and the
runtime's "auto" at head_dim 128 (12 heads × 32,760, 50%) and 64 (24 heads × 32,760, 10 / 25 / 50%),
FLOP rates from CUDA events over the same window. Writes clock_power_gpu.{json,md,png} under --out.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from attnsearch import Geometry  # noqa: E402
from attnsearch.bench import card_name, cudnn_sdpa, flops, fresh_inputs, mixed_layer_plan  # noqa: E402
from attnsearch.runtime import sparse_attention  # noqa: E402
from attnsearch.telemetry import ClockSampler, smi_device_id  # noqa: E402

RAMP_S = 0.5


def run_for(fn, seconds: float, sampler: ClockSampler) -> dict:
    """Call ``fn`` back to back for ``seconds``; events around the part after the ramp give its time."""
    fn()
    torch.cuda.synchronize()
    t_start = time.perf_counter()
    while time.perf_counter() - t_start < RAMP_S:  # ramp: clocks and power settle
        fn()
        torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    calls = 0
    t0 = time.perf_counter()
    start.record()
    while time.perf_counter() - t0 < seconds - RAMP_S:
        for _ in range(4):
            fn()
        calls += 4
        if calls % 32 == 0:
            torch.cuda.synchronize()  # keep the host within a few calls of the GPU
    end.record()
    torch.cuda.synchronize()
    t1 = time.perf_counter()
    return {"calls": calls, "ms_per_call": start.elapsed_time(end) / calls, **sampler.window(t0, t1)}


def workloads():
    """(name, callable, FLOPs per call); fresh random inputs, two sets alternated."""
    a, b = (torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16) for _ in range(2))
    yield "matmul bf16 8192³", lambda: a @ b, 2 * 8192 ** 3
    geom = Geometry(21, 30, 52)
    for heads, d, target in ((12, 128, 0.5), (24, 64, 0.1), (24, 64, 0.25), (24, 64, 0.5)):
        n = geom.num_tokens
        inputs = fresh_inputs((1, heads, n, d), torch.bfloat16, 2)
        lp = mixed_layer_plan(geom, heads, 128, target)
        out = torch.empty(1, heads, n, d, device="cuda", dtype=torch.bfloat16)
        turn = [0]

        def sparse(inputs=inputs, lp=lp, out=out, turn=turn):
            turn[0] ^= 1
            sparse_attention(*inputs[turn[0]], lp, out=out)

        yield f"auto {heads}×{n} D {d} {lp.density:.0%}", sparse, flops(1, heads, n, d, lp.density)
        if target == 0.5:

            def dense(inputs=inputs, turn=turn):
                turn[0] ^= 1
                cudnn_sdpa(*inputs[turn[0]])

            yield f"cuDNN dense {heads}×{n} D {d}", dense, flops(1, heads, n, d, 1.0)


def plot(rows: list[dict], path: Path, card: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, 3, figsize=(15, 4.5))
    names = [r["name"] for r in rows]
    for a, key, label in zip(ax, ("tflops", "sm_mhz", "power_w"), ("TFLOP/s", "SM clock (MHz)", "board power (W)")):
        a.barh(names, [r[key] or 0 for r in rows], color="tab:blue")
        a.set_xlabel(label)
        a.invert_yaxis()
        if key == "power_w" and rows[0].get("power_limit_w"):
            a.axvline(rows[0]["power_limit_w"], color="tab:red", ls="--", label="power limit")
            a.legend(loc="lower right")
        if a is not ax[0]:
            a.set_yticklabels([])
    fig.suptitle(f"Clock and power under continuous load, {card}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--seconds", type=float, default=3.0)
    args = ap.parse_args()
    env = {"card": card_name(), "torch": torch.__version__}
    print(env, flush=True)
    sampler = ClockSampler(smi_device_id()).start()
    rows = []
    try:
        for name, fn, fl in workloads():
            r = {"name": name, **run_for(fn, args.seconds, sampler)}
            r["tflops"] = fl / r["ms_per_call"] / 1e9
            rows.append(r)
            print(f"{name:<32} {r['tflops']:6.0f} TFLOP/s  SM {r['sm_mhz']} MHz (max {r['max_sm_mhz']})  "
                  f"{r['power_w']} W of {r['power_limit_w']}  {r['temp_c']} °C  limits {r['limits']}  "
                  f"({r['samples']} samples)", flush=True)
            time.sleep(1.0)  # let power settle between workloads
    finally:
        sampler.close()
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "clock_power_gpu.json").write_text(json.dumps({"env": env, "rows": rows}, indent=1))
    md = [f"# Clock and power under continuous load, {env['card']}", "",
          "| workload | TFLOP/s | SM MHz | W | limit W | °C | clock limits |", "|---|---|---|---|---|---|---|"]
    md += [f"| {r['name']} | {r['tflops']:.0f} | {r['sm_mhz']} | {r['power_w']} | {r['power_limit_w']} | {r['temp_c']} | "
           f"{', '.join(r['limits']) or '-'} |" for r in rows]
    (args.out / "clock_power_gpu.md").write_text("\n".join(md) + "\n")
    plot(rows, args.out / "clock_power_gpu.png", env["card"])


if __name__ == "__main__":
    main()
