"""The SM clock and power sampler (``attnsearch.telemetry``) and how sustained timings carry it, on
the CPU: canned ``nvidia-smi`` lines from a stand-in process, a fake sampler inside ``time_ms``."""

from __future__ import annotations

import sys
import time

import pytest

from attnsearch import telemetry
from attnsearch.bench import timing as bench
from attnsearch.telemetry import ClockSampler, summarize


def test_summarize_takes_medians_skips_unreported_fields_and_unions_the_limit_reasons():
    rows = [["1500", "1980", "690.5", "700.00", "61", "0x0000000000000004"],
            ["1400", "1980", "699.0", "700.00", "62", "0x0000000000000004"],
            ["1600", "1980", "[N/A]", "700.00", "63", "0x0000000000000001"]]
    s = summarize(rows)
    assert s["samples"] == 3
    assert s["sm_mhz"] == 1500 and s["max_sm_mhz"] == 1980 and s["temp_c"] == 62
    assert s["power_w"] == pytest.approx((690.5 + 699.0) / 2)  # "[N/A]" is no sample of power
    assert s["power_limit_w"] == 700.0
    assert s["limits"] == ["idle", "sw power cap"]
    assert summarize([]) == {"samples": 0, "sm_mhz": None, "max_sm_mhz": None, "power_w": None,
                             "power_limit_w": None, "temp_c": None, "limits": []}


def test_sampler_stamps_each_line_and_a_window_selects_by_host_time():
    script = ("import time\n"
              "for mhz in (1000, 1100, 1200, 1300):\n"
              "    print(f'{mhz}, 1980, 500, 700, 60, 0x4', flush=True)\n"
              "    time.sleep(0.3)\n")
    t_before = time.perf_counter()
    with ClockSampler(command=[sys.executable, "-c", script]) as sampler:
        deadline = time.perf_counter() + 10
        while len(sampler.samples) < 4 and time.perf_counter() < deadline:
            time.sleep(0.05)
    stamps = [t for t, _ in sampler.samples]
    assert len(stamps) == 4 and stamps == sorted(stamps) and stamps[0] >= t_before
    assert sampler.window(t_before, time.perf_counter())["sm_mhz"] == 1150  # all four
    # Between the second and third line only the second and third count.
    assert sampler.window(stamps[1], stamps[2])["sm_mhz"] == 1150
    assert sampler.window(stamps[1], stamps[2])["samples"] == 2
    assert sampler.window(stamps[3] + 1, stamps[3] + 2)["samples"] == 0
    assert sampler.proc.poll() is not None  # closed with the block


class _Window:
    """A sampler stand-in that records the windows asked of it."""

    def __init__(self):
        self.asked = []

    def window(self, t0, t1):
        self.asked.append((t0, t1))
        return {"sm_mhz": 1500.0, "power_w": 699.0}


def test_sustained_timing_asks_the_sampler_for_the_timed_calls_only(monkeypatch):
    clock = {"now": 0.0}
    monkeypatch.setattr(bench.time, "perf_counter", lambda: clock["now"])
    monkeypatch.setattr(bench.torch.cuda, "synchronize", lambda: None)

    class Event:
        def __init__(self, enable_timing=False):
            pass

        def record(self):
            pass

        def synchronize(self):
            pass

        def elapsed_time(self, other):
            return 1.0

    monkeypatch.setattr(bench.torch.cuda, "Event", Event)

    def call(x):
        clock["now"] += 0.01

    sampler = _Window()
    res = bench.time_ms(call, [()], warmup=0, warmup_s=0.0, reps=3, mode="sustained", sampler=sampler)
    assert res["clock"] == {"sm_mhz": 1500.0, "power_w": 699.0}
    ((t0, t1),) = sampler.asked
    assert t0 == pytest.approx(bench.SUSTAIN_RAMP_S, abs=0.011)  # from the first timed call
    assert t1 == pytest.approx(bench.SUSTAIN_RAMP_S + bench.SUSTAIN_S, abs=0.011)
    # Queued timing has no window of its own to report.
    monkeypatch.setattr(bench, "_spin", lambda ms: None)
    assert "clock" not in bench.time_ms(call, [()], warmup=0, warmup_s=0.0, reps=3, mode="queued")


def test_clock_sampler_only_for_sustained_timing_and_says_when_it_cannot(monkeypatch):
    with bench.clock_sampler("queued") as s:
        assert s is None
    monkeypatch.setattr(telemetry.shutil, "which", lambda name: None)
    with pytest.warns(RuntimeWarning, match="nvidia-smi is not on PATH"):
        with bench.clock_sampler("sustained") as s:
            assert s is None


def test_markdown_clock_cell():
    assert bench.clock_cell(None) == "–"
    assert bench.clock_cell({"sm_mhz": None, "power_w": 690.0}) == "–"
    assert bench.clock_cell({"sm_mhz": 1485.0, "power_w": 695.4}) == "1485, 695"
    assert bench.clock_cell({"sm_mhz": 1485.0, "power_w": None}) == "1485, ?"
