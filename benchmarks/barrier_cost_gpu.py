"""What the warpgroup barriers around the Hopper kernel's mbarrier operations cost: an experiment.

    PYTHONUNBUFFERED=1 python benchmarks/barrier_cost_gpu.py --out $OUT [--reps 10]

Triton 3.6 puts a ``bar.sync <id>, 128`` (all four warps of the consumer warpgroup) before every
``mbarrier.arrive`` of a consumer and before its first ``mbarrier.try_wait`` after one: four per
turn (kernel-notes.md, "Where the cycles go"). Its arrive is one elected thread's, and its shared-
memory analysis cannot tell the barriers apart. CUTLASS's pipelines (FlashAttention-3's) arrive from
one thread per warpgroup right after ``wgmma.wait_group`` with no such barrier: the wgmma is one
warpgroup-wide operation, so when the wait returns in one thread the warpgroup's operands have been
read.

This script measures what removing them would give, without changing the package: it

1. compiles every specialisation ``benchmarks/kernel_variants_gpu.py`` runs with Triton's IR dump
   on (``TRITON_KERNEL_DUMP``), in a subprocess;
2. removes, in the dumped PTX of ``_ws_block_sparse_fwd``, each warpgroup ``bar.sync`` whose next
   instructions are an ``mbarrier.arrive`` or ``mbarrier.try_wait`` (``patch_ptx``; the barriers
   that order shared-memory stores before a TMA store stay) and puts the result where
   ``TRITON_KERNEL_OVERRIDE`` reads it;
3. runs ``kernel_variants_gpu.py --against <copy>`` with the override on, in a fresh cache: the
   patched kernel against an unpatched build of the same source (a copy whose source differs by a
   comment, hence not overridden), correctness first (fp32 SDPA reference, NaN-poisoned output).

A debugging hook of Triton, used for a measurement only: nothing here is shipped.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
KERNEL = "_ws_block_sparse_fwd"
#: A warpgroup barrier (named barrier 0 or 2 with the 128 threads of one consumer partition).
_WG_BARRIER = re.compile(r"^\s*bar\.sync\s+\d+,\s*128;\s*$")
#: Instructions that may sit between such a barrier and the mbarrier operation it guards.
_FILLER = re.compile(r"^\s*(//.*|\{|\}|\.reg\b.*|\w+:|add\.s32\b.*|setp\.\w+\b.*|and\.pred\b.*|mov\.\w+\b.*)?\s*$")


def patch_ptx(ptx: str) -> tuple[str, int]:
    """``ptx`` without the warpgroup barriers that only precede an ``mbarrier.arrive`` or
    ``mbarrier.try_wait`` (looking past labels, register declarations and address arithmetic);
    returns the text and how many were removed. Barriers followed by anything else (shared-memory
    stores, ``elect.sync`` before a TMA store, ``mbarrier.init``) stay."""
    lines = ptx.splitlines(keepends=True)
    keep, removed = [], 0
    for i, line in enumerate(lines):
        if _WG_BARRIER.match(line):
            nxt = next((x for x in lines[i + 1:i + 16] if not _FILLER.match(x)), "")
            if re.search(r"\bmbarrier\.(arrive|try_wait)\b", nxt):
                removed += 1
                continue
        keep.append(line)
    return "".join(keep), removed


def run(cmd: list[str], env: dict, log: Path) -> None:
    with open(log, "w") as f:
        res = subprocess.run(cmd, env=env, stdout=f, stderr=subprocess.STDOUT, cwd=ROOT, check=False)
    if res.returncode:
        sys.exit(f"{' '.join(cmd)} failed (exit {res.returncode}); see {log}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--reps", type=int, default=10)
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="barrier_cost_"))
    copy = ROOT / "attnsearch" / "runtime" / "_hopper_unpatched.py"
    src = (ROOT / "attnsearch" / "runtime" / "hopper_kernel.py").read_text()
    # A comment inside the kernel changes its source hash: the copy is compiled, not overridden.
    marker = '    dtype: gl.constexpr = q_desc.dtype\n'
    assert marker in src, "hopper_kernel.py changed: update the marker"
    copy.write_text(src.replace(marker, marker + "    # unpatched copy (benchmarks/barrier_cost_gpu.py)\n", 1))
    variants = [sys.executable, "benchmarks/kernel_variants_gpu.py", "--only", "ws2-tiles,ws2-flat"]
    try:
        env = {**os.environ, "TRITON_KERNEL_DUMP": "1", "TRITON_DUMP_DIR": str(work / "dump"),
               "TRITON_CACHE_DIR": str(work / "cache1")}
        print("1. compile and dump", flush=True)
        run([*variants, "--reps", "1", "--out", str(work / "dry")], env, args.out / "dump.log")
        total = 0
        for ptx_file in (work / "dump").glob(f"*/{KERNEL}.ptx"):
            patched, removed = patch_ptx(ptx_file.read_text())
            target = work / "override" / ptx_file.parent.name / ptx_file.name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(patched)
            total += removed
            print(f"   {ptx_file.parent.name}: {removed} barriers removed", flush=True)
        if not total:
            sys.exit("no barrier matched: nothing to measure")
        env = {**os.environ, "TRITON_KERNEL_OVERRIDE": "1", "TRITON_OVERRIDE_DIR": str(work / "override"),
               "TRITON_CACHE_DIR": str(work / "cache2")}
        print("2. patched (ws2-*) against unpatched (ws2-*@_hopper_unpatched)", flush=True)
        run([*variants, "--reps", str(args.reps), "--out", str(args.out), "--against", "_hopper_unpatched"], env,
            args.out / "barrier_cost.log")
        print((args.out / "barrier_cost.log").read_text()[-6000:])
    finally:
        copy.unlink(missing_ok=True)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
