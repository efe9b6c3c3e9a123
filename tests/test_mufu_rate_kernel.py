"""``benchmarks/mufu_rate_gpu.py`` measures what it says: compiled for sm_90a on the CPU (Triton's
bundled ptxas and cuobjdump), the timed loop issues CHAINS · REPEAT ``MUFU.EX2`` per step and exactly
``fma_per_ex2`` ``FFMA`` beside each, nothing folded away and nothing else in the way."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

triton = pytest.importorskip("triton")
BIN = Path(triton.__file__).parent / "backends" / "nvidia" / "bin"
if not (BIN / "ptxas").exists() or not (BIN / "cuobjdump").exists():
    pytest.skip("triton's bundled ptxas/cuobjdump are missing: cannot build for sm_90a here", allow_module_level=True)

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import mufu_rate_gpu as mufu  # noqa: E402


def _loop_ops(fma_per_ex2: int, tmp_path: Path) -> list[str]:
    """The opcodes of the compiled kernel's innermost loop."""
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    src = ASTSource(fn=mufu._rate_kernel,
                    signature={"X": "*fp32", "Cycles": "*i64", "STEPS": "constexpr", "ASM": "constexpr",
                               "CONSTRAINTS": "constexpr", "BLOCK": "constexpr"},
                    constexprs={"STEPS": 1000, "ASM": mufu._asm(fma_per_ex2), "CONSTRAINTS": mufu.CONSTRAINTS,
                                "BLOCK": 256})
    kernel = triton.compile(src, target=GPUTarget("cuda", 90, 32), options={"num_warps": 8})
    ptx, cubin = tmp_path / "k.ptx", tmp_path / "k.cubin"
    ptx.write_text(kernel.asm["ptx"])
    for tool in ("ptxas", "ptxas-blackwell"):  # newer Tritons emit PTX only their second ptxas reads
        res = subprocess.run([str(BIN / tool), "-arch=sm_90a", str(ptx), "-o", str(cubin)], capture_output=True)
        if res.returncode == 0 or not (BIN / "ptxas-blackwell").exists():
            break
    assert res.returncode == 0, res.stderr
    sass = subprocess.run([str(BIN / "cuobjdump"), "-sass", str(cubin)], capture_output=True, text=True).stdout
    ops = [(int(a, 16), op.strip()) for a, op in re.findall(r"/\*([0-9a-f]{4,})\*/\s+([^;]*);", sass)]
    for i, (addr, op) in enumerate(ops):
        back = re.match(r"@!?P\d BRA 0x([0-9a-f]+)", op)
        if back and int(back.group(1), 16) < addr:
            first = next(k for k, (a, _) in enumerate(ops) if a == int(back.group(1), 16))
            return [re.sub(r"^@!?P\d+\s+", "", o).split()[0] for _, o in ops[first:i + 1]]
    raise AssertionError("no loop in the SASS")


@pytest.mark.parametrize("fma_per_ex2", [0, 2, 8])
def test_loop_holds_the_intended_instruction_mix(fma_per_ex2, tmp_path):
    ops = _loop_ops(fma_per_ex2, tmp_path)
    ex2 = ops.count("MUFU.EX2")
    assert ex2 > 0 and ex2 % (mufu.CHAINS * mufu.REPEAT) == 0, ops  # whole steps (ptxas may unroll)
    assert ops.count("FFMA") == fma_per_ex2 * ex2, ops
    # x ← 2^-x: the negation folds into the exponential's operand, no floating-point op of its own.
    assert not {"FADD", "FMUL"} & set(ops), ops
