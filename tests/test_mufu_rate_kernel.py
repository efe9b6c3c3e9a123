"""``benchmarks/mufu_rate_gpu.py`` measures what it says: compiled for sm_90a on the CPU (Triton's
bundled ptxas and cuobjdump), the timed loop issues CHAINS · REPEAT ``MUFU.EX2`` per step and exactly
``fma_per_ex2`` ``FFMA`` beside each, nothing folded away and nothing else in the way."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

triton = pytest.importorskip("triton")
BIN = Path(triton.__file__).parent / "backends" / "nvidia" / "bin"
if not (BIN / "ptxas").exists() or not (BIN / "cuobjdump").exists():
    pytest.skip("triton's bundled ptxas/cuobjdump are missing: cannot build for sm_90a here", allow_module_level=True)

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import mufu_rate_gpu as mufu  # noqa: E402
from kernel_compile_probe import innermost_loops, opcode, ptx_to_sass, sass_ops  # noqa: E402


def _loop_ops(fma_per_ex2: int) -> list[str]:
    """The opcodes of the compiled kernel's one loop with exponentials."""
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    src = ASTSource(fn=mufu._rate_kernel,
                    signature={"X": "*fp32", "Cycles": "*i64", "STEPS": "constexpr", "ASM": "constexpr",
                               "CONSTRAINTS": "constexpr", "BLOCK": "constexpr"},
                    constexprs={"STEPS": 1000, "ASM": mufu._asm(fma_per_ex2), "CONSTRAINTS": mufu.CONSTRAINTS,
                                "BLOCK": 256})
    kernel = triton.compile(src, target=GPUTarget("cuda", 90, 32), options={"num_warps": 8})
    ok, log, sass = ptx_to_sass(kernel.asm["ptx"])
    assert ok, log
    loops = innermost_loops(sass_ops(sass), has=("MUFU.EX2",))
    assert len(loops) == 1, loops
    return [opcode(o) for o in loops[0]]


@pytest.mark.parametrize("fma_per_ex2", [0, 2, 8])
def test_loop_holds_the_intended_instruction_mix(fma_per_ex2):
    ops = _loop_ops(fma_per_ex2)
    ex2 = ops.count("MUFU.EX2")
    assert ex2 > 0 and ex2 % (mufu.CHAINS * mufu.REPEAT) == 0, ops  # whole steps (ptxas may unroll)
    assert ops.count("FFMA") == fma_per_ex2 * ex2, ops
    # x ← 2^-x: the negation folds into the exponential's operand, no floating-point op of its own.
    assert not {"FADD", "FMUL"} & set(ops), ops
