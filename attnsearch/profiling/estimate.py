"""What profiling a geometry costs at least, known before anything is built: a refusal of what
cannot fit in memory and a warning for what takes long on a CPU.

The figures are lower bounds from the geometry alone (the model is not built yet): one head of
width :data:`MIN_HEAD_DIM` per layer, one layer per step, the model's own dense attention
(4·N²·D flops per head) and the profiler's sampled rows (``queries`` × N fp32 per head, the
candidates' block masks; with ``fp8`` the same again on the quantized operands, plus their rows).
A real model costs a multiple of them, so what they refuse is surely refused; what they pass may
still be slow.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

from ..geometry import Geometry
from .errors import ProfileError

#: The narrowest head (and hidden width per token) the lower bound assumes.
MIN_HEAD_DIM = 64
#: Sustained fp32 rate assumed for a CPU (flop/s): a many-core machine; laptops are slower.
CPU_FLOPS = 5e10
#: Above this estimated CPU time the CLI warns before it starts.
WARN_CPU_S = 60.0
#: Candidates the default grid holds at most (masks of nb × nb bytes each).
MIN_CANDIDATES = 8


@dataclass(frozen=True)
class ProfileCost:
    """Lower bounds of one profiling run: peak memory (bytes) and CPU time (seconds)."""

    tokens: int
    memory_bytes: float
    cpu_seconds: float


def profile_cost(geometry: Geometry, *, block_size: int, queries: int, steps: int, fp8: bool = False) -> ProfileCost:
    """Lower bounds of profiling ``steps`` forwards at ``geometry`` (see the module docstring);
    ``fp8``: the FP8 errors too (``ProfileSettings.precisions``)."""
    n = geometry.num_tokens
    nb = math.ceil(n / block_size)
    padded = nb * block_size
    q = min(queries, n)
    sampled = 4.0 * q * padded * 3                  # sampled softmax rows, block sums, partial outputs
    memory = (4.0 * n * MIN_HEAD_DIM * 4            # hidden states, q, k, v of one head (fp32)
              + sampled * (2 if fp8 else 1)          # FP8: the rows again, over the quantized operands
              + (4.0 * 3 * padded * MIN_HEAD_DIM if fp8 else 0.0)   # the dequantized q, k, v of the head
              + float(nb) * nb * MIN_CANDIDATES)      # the static candidates' block masks
    profiled = 4.0 * q * padded * MIN_HEAD_DIM * (2 if fp8 else 1)
    flops = steps * (4.0 * n * n * MIN_HEAD_DIM + profiled)
    return ProfileCost(n, memory, flops / CPU_FLOPS)


def machine_memory() -> float | None:
    """Physical memory of this machine in bytes, None where the system does not say."""
    try:
        return float(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return None


def check_fits(cost: ProfileCost, device_memory: float | None = None) -> None:
    """ProfileError when the lower bound of memory exceeds the machine's (or ``device_memory``)."""
    have = device_memory if device_memory is not None else machine_memory()
    if have is not None and cost.memory_bytes > have:
        raise ProfileError(f"profiling N = {cost.tokens:,} tokens needs at least {_gb(cost.memory_bytes)} of "
                           f"memory; this machine has {_gb(have)} (lower the frames, height or width)")


def _gb(x: float) -> str:
    return f"{x / 1e9:.3g} GB"


__all__ = ["CPU_FLOPS", "MIN_HEAD_DIM", "WARN_CPU_S", "ProfileCost", "check_fits", "machine_memory", "profile_cost"]
