"""The Hopper kernel's cycle probe: device helpers the kernel calls at the edges of its phases.

Built in only when the kernel is compiled with ``PROBE=True`` (``launch(probe=...)``); otherwise
every helper compiles to nothing (``tests/runtime/test_kernel_compile.py`` checks the PTX has no clock
read). The probe buffer is int32 [programs, 2 consumers, len(PROBE_FIELDS)].
"""

from __future__ import annotations

from triton.experimental import gluon
from triton.experimental.gluon import language as gl

#: What the probe (``launch(probe=...)``) records per program and consumer warpgroup, in SM cycles
#: (``%clock``, 32 bits: differences are exact modulo 2³², and a program runs far fewer cycles): the
#: consumer's whole run, then where its steady-state turns spend them: waiting for K/V to land (the
#: producer is behind), for the turn (the other consumer's products hold the tensor cores) and
#: issuing the two wgmmas, waiting for S, the softmax, waiting for PV and rescaling O; the number of
#: such turns; the cycles of the tile boundaries (tile schedule: a tile's first block, Q wait included,
#: and its last PV product and store; flat schedule: the Q wait and the store). The rest of the total
#: is the turns' loop bookkeeping. Last, the consumer's start and end on the GPU's nanosecond clock
#: (``%globaltimer``, low 32 bits: the same clock on every SM, so the launch's ramp and tail show).
PROBE_FIELDS = ("total", "wait_kv", "wait_turn", "wait_s", "softmax", "wait_pv", "turns", "tile_edges",
                "start_ns", "end_ns")
PROBE_ROW = gl.constexpr(len(PROBE_FIELDS))


@gluon.jit
def probe_now(PROBE: gl.constexpr):
    """The SM's cycle counter when probing, else 0 (and every ``probe_lap`` then compiles to nothing)."""
    if PROBE:
        t = gl.inline_asm_elementwise("mov.u32 $0, %clock;", "=r", [], dtype=gl.int32, is_pure=False, pack=1)
    else:
        t = gl.to_tensor(0)
    return t


@gluon.jit
def probe_lap(t, spent, PROBE: gl.constexpr):
    """(now, spent + cycles since ``t``) when probing, else (t, spent) unchanged."""
    now = probe_now(PROBE)
    if PROBE:
        spent = spent + (now - t)
        t = now
    return t, spent


@gluon.jit
def ns_now():
    """The GPU's global nanosecond timer, low 32 bits (differences exact modulo 2³², ~4.3 s)."""
    return gl.inline_asm_elementwise("mov.u32 $0, %globaltimer_lo;", "=r", [], dtype=gl.int32, is_pure=False,
                                     pack=1)


@gluon.jit
def probe_start(Probe, WG: gl.constexpr, PROBE: gl.constexpr):
    """The probe's start time, parked in this consumer's "total" field (a register less in the loops),
    and its start on the global timer."""
    if PROBE:
        at = Probe + (gl.program_id(0) * 2 + WG) * PROBE_ROW
        gl.store(at + 8, ns_now())
        gl.store(at, probe_now(PROBE))


@gluon.jit
def probe_store(Probe, WG: gl.constexpr, kv, turn, wait_s, soft, wait_pv, turns, edges, PROBE: gl.constexpr):
    """This consumer's ``PROBE_FIELDS`` into row (program, WG) of ``Probe`` (int32 [programs, 2, fields])."""
    if PROBE:
        at = Probe + (gl.program_id(0) * 2 + WG) * PROBE_ROW
        gl.store(at, probe_now(PROBE) - gl.load(at))
        gl.store(at + 1, kv)
        gl.store(at + 2, turn)
        gl.store(at + 3, wait_s)
        gl.store(at + 4, soft)
        gl.store(at + 5, wait_pv)
        gl.store(at + 6, turns)
        gl.store(at + 7, edges)
        gl.store(at + 9, ns_now())


__all__ = ["PROBE_FIELDS", "PROBE_ROW", "ns_now", "probe_lap", "probe_now", "probe_start", "probe_store"]
