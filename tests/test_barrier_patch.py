"""``benchmarks/barrier_cost_gpu.py``'s PTX patch removes exactly the warpgroup barriers that only
guard an mbarrier operation, and keeps those that order shared-memory stores before a TMA store
(removing one of those would race)."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from barrier_cost_gpu import patch_ptx  # noqa: E402

PTX = """\
\tbar.sync \t0, 128;
\tadd.s32 \t%r1183, %r2140, 229688;
\t@%p212 mbarrier.init.shared::cta.b64 [%r1183], 1;
\tbar.sync \t0, 128;
\t// begin inline asm
\t
{
\t.reg .pred complete;
\twaitLoop:
\tmbarrier.try_wait.parity.shared.b64 complete, [%r1535], %r1536;
\t@!complete bra.uni waitLoop;
}
\twgmma.wait_group.sync.aligned 1;
\tbar.sync \t2, 128;
\tsetp.eq.b32 \t%p139, %r2139, 0;
\t@%p139 mbarrier.arrive.shared::cta.b64 _, [%r339];
\tbar.sync \t2, 128;
\tstmatrix.sync.aligned.m8n8.x4.shared.b16 [%r38], {%r989, %r990, %r991, %r992};
\tfence.proxy.async.shared::cta;
\tbar.sync \t2, 128;
\telect.sync \t%r1022|%p137, -1;
\tbarrier.sync \t1;
"""


def test_patch_removes_only_the_barriers_before_mbarrier_waits_and_arrives():
    out, removed = patch_ptx(PTX)
    assert removed == 2
    assert out.count("bar.sync") == 3  # before mbarrier.init, stmatrix and elect (the TMA store)
    assert "mbarrier.try_wait" in out and "mbarrier.arrive" in out and "barrier.sync \t1;" in out
    lines = out.splitlines()
    for op in ("mbarrier.init", "stmatrix", "elect.sync"):
        i = next(k for k, ln in enumerate(lines) if op in ln)
        assert any("bar.sync" in ln for ln in lines[max(0, i - 2):i]), op
    assert patch_ptx(out) == (out, 0)  # nothing left to remove
