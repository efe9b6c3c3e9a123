"""The GPU's SM clock and board power while something runs, sampled by ``nvidia-smi``.

Why a benchmark wants them: an H100 SXM held under load sits at its 700 W cap, and its SM clock then
follows each kernel's energy per cycle (reports/kernel/power/). A sustained timing is a figure for
one clock; with the clock and power beside it, two cards' figures can be told apart from two
kernels'. ``bench --timing sustained`` records them per measurement (``ClockSampler.window``).

``nvidia-smi --query-gpu=... -lms 50`` runs in the background; a thread stamps each line with
``time.perf_counter()`` so that a window of host time selects its samples. NVML through a Python
binding would do the same without a process, but is not among the project's dependencies, and the
driver's command line ships with every NVIDIA driver.
"""

from __future__ import annotations

import shutil
import statistics
import subprocess
import threading
import time
from typing import Any

#: What each sample holds, in ``nvidia-smi --query-gpu`` names (``--format=csv,noheader,nounits``).
FIELDS = ("clocks.sm", "clocks.max.sm", "power.draw", "power.limit", "temperature.gpu",
          "clocks_throttle_reasons.active")
#: Bits of ``clocks_throttle_reasons.active`` (NVML's nvmlClocksThrottleReasons).
REASONS = {0x1: "idle", 0x2: "app clocks", 0x4: "sw power cap", 0x8: "hw slowdown", 0x20: "sw thermal",
           0x40: "hw thermal", 0x80: "hw power brake"}
PERIOD_MS = 50


def smi_device_id(device: Any = None) -> str:
    """The ``nvidia-smi -i`` id of a CUDA device: "GPU-<uuid>", which unlike the index does not change
    under ``CUDA_VISIBLE_DEVICES`` (the index where torch does not report the UUID)."""
    import torch

    index = torch.cuda.current_device() if device is None else (torch.device(device).index or 0)
    uuid = getattr(torch.cuda.get_device_properties(index), "uuid", None)
    return f"GPU-{uuid}" if uuid is not None else str(index)


def summarize(rows: list[list[str]]) -> dict[str, Any]:
    """Medians of the samples' numeric fields and the union of their clock-limit reasons. A field
    ``nvidia-smi`` reports as "[N/A]" (or leaves out) is None."""
    def med(i: int) -> float | None:
        vals = []
        for r in rows:
            try:
                vals.append(float(r[i]))
            except (IndexError, ValueError):
                pass
        return statistics.median(vals) if vals else None

    reasons: set[str] = set()
    for r in rows:
        if len(r) > 5 and r[5].startswith("0x"):
            bits = int(r[5], 16)
            reasons |= {name for bit, name in REASONS.items() if bits & bit}
    return {"samples": len(rows), "sm_mhz": med(0), "max_sm_mhz": med(1), "power_w": med(2),
            "power_limit_w": med(3), "temp_c": med(4), "limits": sorted(reasons)}


class ClockSampler:
    """``nvidia-smi`` sampling one GPU in the background from ``start()`` to ``close()`` (or as a
    context manager); ``window(t0, t1)`` summarises the samples taken between two
    ``time.perf_counter()`` readings.

    ``command`` replaces the ``nvidia-smi`` invocation (tests feed canned lines through it)."""

    def __init__(self, device_id: str = "0", period_ms: int = PERIOD_MS, command: list[str] | None = None):
        self.command = command or ["nvidia-smi", f"--query-gpu={','.join(FIELDS)}", "--format=csv,noheader,nounits",
                                   f"-lms={period_ms}", "-i", device_id]
        self.samples: list[tuple[float, list[str]]] = []
        self.proc: subprocess.Popen | None = None
        self.thread: threading.Thread | None = None

    @staticmethod
    def available() -> bool:
        """Whether ``nvidia-smi`` is on PATH."""
        return shutil.which("nvidia-smi") is not None

    def start(self) -> ClockSampler:
        self.proc = subprocess.Popen(self.command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()
        return self

    def _read(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        for line in self.proc.stdout:
            self.samples.append((time.perf_counter(), [x.strip() for x in line.split(",")]))

    def window(self, t0: float, t1: float) -> dict[str, Any]:
        """``summarize`` over the samples stamped in [t0, t1]."""
        return summarize([s for t, s in list(self.samples) if t0 <= t <= t1])

    def close(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait()
        if self.thread is not None:
            self.thread.join(timeout=1.0)

    def __enter__(self) -> ClockSampler:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.close()


__all__ = ["FIELDS", "REASONS", "ClockSampler", "smi_device_id", "summarize"]
