"""How many exponentials per cycle an SM retires, alone and beside FMA work: the rate that bounds the
softmax at head_dim 64 (reports/kernel/kernel-notes.md, "The exponentials' rate").

    python benchmarks/mufu_rate_gpu.py --out $OUT

Each thread runs independent chains of ``ex2.approx.ftz.f32`` (x ← 2^-x stays in [½, 1]), optionally
with ``FMA_PER_EX2`` fused multiply-adds per exponential on other registers; every program reads the
SM's cycle counter (%clock64) before and after, so the rate is in exponentials per SM cycle whatever
the clock. Enough warps per SM (``--warps-per-sm``) hide the unit's latency.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

import torch
import triton
import triton.language as tl

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from attnsearch.bench import card_name  # noqa: E402

CHAINS = 8  # independent exponentials in flight per thread


REPEAT = 4  # exponentials per chain per asm block (fewer loop instructions around them)


def _asm(fma_per_ex2: int) -> str:
    """One step: each of CHAINS chains x ← 2^-x REPEAT times, with fma_per_ex2 FMAs per exponential on
    a second set of CHAINS registers. Operands: $0..2·CHAINS-1 out, then the same registers in."""
    n = 2 * CHAINS
    lines = []
    for r in range(REPEAT):
        for c in range(CHAINS):
            src_a = f"${n + c}" if r == 0 else f"${c}"
            lines.append(f"neg.f32 ${c}, {src_a};")  # folded into the exponential's operand by ptxas
            lines.append(f"ex2.approx.ftz.f32 ${c}, ${c};")
            for f in range(fma_per_ex2):
                src_b = f"${n + CHAINS + c}" if r == 0 and f == 0 else f"${CHAINS + c}"
                lines.append(f"fma.rn.f32 ${CHAINS + c}, {src_b}, 0f3F000000, 0f3E800000;")
        if fma_per_ex2 == 0 and r == 0:
            lines += [f"mov.b32 ${CHAINS + c}, ${n + CHAINS + c};" for c in range(CHAINS)]
    return "{\n" + "\n".join(lines) + "\n}"


@triton.jit
def _rate_kernel(X, Cycles, STEPS: tl.constexpr, ASM: tl.constexpr, CONSTRAINTS: tl.constexpr, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    x = tl.load(X + offs)
    start = tl.inline_asm_elementwise("mov.u64 $0, %clock64;", "=l,f", [x], dtype=tl.int64, is_pure=False, pack=1)
    a0, a1, a2, a3, a4, a5, a6, a7 = x, x * 0.51, x * 0.52, x * 0.53, x * 0.54, x * 0.55, x * 0.56, x * 0.57
    b0, b1, b2, b3, b4, b5, b6, b7 = x, x * 0.61, x * 0.62, x * 0.63, x * 0.64, x * 0.65, x * 0.66, x * 0.67
    for _ in range(STEPS):
        a0, a1, a2, a3, a4, a5, a6, a7, b0, b1, b2, b3, b4, b5, b6, b7 = tl.inline_asm_elementwise(
            ASM, CONSTRAINTS, [a0, a1, a2, a3, a4, a5, a6, a7, b0, b1, b2, b3, b4, b5, b6, b7],
            dtype=(tl.float32,) * 16, is_pure=True, pack=1)
    end = tl.inline_asm_elementwise("mov.u64 $0, %clock64;", "=l,f", [a0 + b0], dtype=tl.int64, is_pure=False, pack=1)
    total = a0 + a1 + a2 + a3 + a4 + a5 + a6 + a7 + b0 + b1 + b2 + b3 + b4 + b5 + b6 + b7
    tl.store(X + offs, total)
    tl.store(Cycles + tl.program_id(0), tl.max(end - start, axis=0))


CONSTRAINTS = ",".join(["=f"] * 2 * CHAINS + ["f"] * 2 * CHAINS)


def measure(fma_per_ex2: int, warps_per_sm: int, steps: int, sms: int) -> dict:
    warps, block = 8, 256
    programs = sms * warps_per_sm // warps
    x = torch.rand(programs * block, device="cuda") * 0.5 + 0.5
    cycles = torch.zeros(programs, dtype=torch.int64, device="cuda")
    asm = _asm(fma_per_ex2)
    _rate_kernel[(programs,)](x, cycles, STEPS=steps, ASM=asm, CONSTRAINTS=CONSTRAINTS, BLOCK=block,
                             num_warps=warps)  # compile, warm
    torch.cuda.synchronize()
    runs = []
    for _ in range(5):
        _rate_kernel[(programs,)](x, cycles, STEPS=steps, ASM=asm, CONSTRAINTS=CONSTRAINTS, BLOCK=block,
                             num_warps=warps)
        torch.cuda.synchronize()
        # Programs of one SM run at once (warps_per_sm fit): an SM retires its programs' work in the
        # longest one's cycles.
        per_sm_cycles = float(cycles.max())
        ex2_per_sm = (warps_per_sm * 32) * steps * CHAINS * REPEAT
        runs.append(ex2_per_sm / per_sm_cycles)
    return {"fma_per_ex2": fma_per_ex2, "warps_per_sm": warps_per_sm, "ex2_per_sm_cycle": statistics.median(runs),
            "fma_per_sm_cycle": statistics.median(runs) * fma_per_ex2, "runs": runs}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--steps", type=int, default=2000)
    args = ap.parse_args()
    sms = torch.cuda.get_device_properties(0).multi_processor_count
    env = {"card": card_name(), "torch": torch.__version__, "triton": triton.__version__, "sms": sms}
    print(env, flush=True)
    rows = []
    for warps_per_sm in (8, 16, 32):
        for fma in (0, 1, 2, 4, 8):
            r = measure(fma, warps_per_sm, args.steps, sms)
            rows.append(r)
            print(f"warps/SM {warps_per_sm:>2}  FMA per ex2 {fma}: {r['ex2_per_sm_cycle']:.2f} ex2 and "
                  f"{r['fma_per_sm_cycle']:.1f} FMA per SM cycle", flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "mufu_rate_gpu.json").write_text(json.dumps({"env": env, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
