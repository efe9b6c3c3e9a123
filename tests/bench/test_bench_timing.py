"""``time_ms``'s "sustained" mode on the CPU: CUDA events and the host clock replaced by fakes that
record when each call ran and when the host waited, so the loop's contract is checked, not timed."""

from __future__ import annotations

import pytest

from attnsearch.bench import timing as bench


class _Clock:
    """Host seconds; every call of the timed function advances it by ``step``."""

    def __init__(self, step: float):
        self.now, self.step = 0.0, step

    def __call__(self) -> float:
        return self.now


class _FakeCuda:
    """Events stamped with the index of the call they follow; ``synchronize`` on an event marks that
    call done (the host waited for it)."""

    def __init__(self, clock: _Clock):
        self.clock, self.recorded, self.done = clock, 0, 0
        self.calls = 0
        self.in_flight_at_call: list[int] = []

    def event(self, enable_timing: bool = False):
        fake = self

        class Event:
            def __init__(self):
                self.at = None

            def record(self):
                self.at = fake.calls  # a stop event: the call before it has been queued

            def synchronize(self):
                fake.done = max(fake.done, self.at)

            def elapsed_time(self, stop):
                return float(stop.at - self.at)  # 1 "ms" per call in between

        return Event()

    def fn(self, x):
        self.in_flight_at_call.append(self.calls - self.done)
        self.calls += 1
        self.clock.now += self.clock.step


@pytest.fixture
def fake(monkeypatch):
    clock = _Clock(step=0.01)
    cuda = _FakeCuda(clock)
    monkeypatch.setattr(bench.time, "perf_counter", clock)
    monkeypatch.setattr(bench.torch.cuda, "Event", cuda.event)
    monkeypatch.setattr(bench.torch.cuda, "synchronize", lambda: None)
    return cuda


def test_sustained_times_only_the_calls_after_the_ramp_and_keeps_the_queue_bounded(fake):
    res = bench.time_ms(fake.fn, [()], warmup=0, warmup_s=0.0, reps=5, mode="sustained")
    step = fake.clock.step
    ramp_calls = round(bench.SUSTAIN_RAMP_S / step)
    timed_calls = round(bench.SUSTAIN_S / step)
    assert res["mode"] == "sustained"
    # Every call after the ramp is timed, none before it (± one call for the float clock).
    assert abs(res["reps"] - timed_calls) <= 1
    assert abs(fake.calls - (ramp_calls + timed_calls)) <= 2
    assert res["median"] == res["min"] == res["max"] == 1.0  # each pair spans its own call only
    # The host never has more than SUSTAIN_QUEUE calls queued ahead of those it has waited for.
    assert max(fake.in_flight_at_call) <= bench.SUSTAIN_QUEUE
    assert max(fake.in_flight_at_call) == bench.SUSTAIN_QUEUE  # and does keep that many queued


def test_sustained_runs_past_its_window_until_it_has_reps_calls(fake):
    fake.clock.step = 1.0  # calls slower than the whole window
    res = bench.time_ms(fake.fn, [()], warmup=0, warmup_s=0.0, reps=4, mode="sustained")
    assert res["reps"] == 4
