"""Tuned kernel configs survive the process: stored once, read back without re-timing, ignored when
stale, corrupt or disabled (CPU: the timing function is a stand-in, the logic is the real one)."""

from __future__ import annotations

import json

import pytest
import triton

from attnsearch.runtime import tuning_cache
from attnsearch.runtime.triton import launch as triton_launch
from attnsearch.runtime.triton.launch import KernelConfig, choose_config

CANDIDATES = [KernelConfig(64, 128, 4, 1), KernelConfig(128, 128, 8, 2), KernelConfig(128, 64, 8, 3)]
KEY = tuning_cache.make_key("NVIDIA H100 80GB HBM3", (9, 0), "3.6.0", "abc123", 128, 128, "bfloat16", True)


@pytest.fixture
def cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("ATTNSEARCH_CACHE_DIR", str(tmp_path))
    monkeypatch.delenv("ATTNSEARCH_TUNING_CACHE", raising=False)
    return tmp_path


class Timer:
    """Stand-in for do_bench: fixed ms per config, counting calls."""

    def __init__(self, ms: dict[KernelConfig, float], fail: tuple[KernelConfig, ...] = ()):
        self.ms, self.fail, self.calls = ms, fail, []

    def __call__(self, cfg: KernelConfig) -> float:
        self.calls.append(cfg)
        if cfg in self.fail:
            raise triton.runtime.errors.OutOfResources(300000, 232448, "shared memory")
        return self.ms[cfg]


def test_first_call_times_all_then_the_next_process_reads_the_pick(cache_dir):
    timer = Timer({CANDIDATES[0]: 1.0, CANDIDATES[1]: 0.8, CANDIDATES[2]: 1.3})
    assert choose_config(KEY, CANDIDATES, timer) == CANDIDATES[1]
    assert timer.calls == CANDIDATES
    data = json.loads((cache_dir / "tuning.json").read_text())
    assert data["format"] == tuning_cache.FORMAT and data["entries"][KEY] == vars(CANDIDATES[1])

    never = Timer({})  # any timing would raise KeyError
    assert choose_config(KEY, CANDIDATES, never) == CANDIDATES[1] and never.calls == []
    # Another key (other head_dim) is tuned on its own and kept beside the first.
    key64 = KEY.replace("d128", "d64")
    assert choose_config(key64, CANDIDATES, Timer({c: i for i, c in enumerate(CANDIDATES)})) == CANDIDATES[0]
    assert set(json.loads((cache_dir / "tuning.json").read_text())["entries"]) == {KEY, key64}


def test_stale_entry_not_among_candidates_is_retuned(cache_dir):
    tuning_cache.store(KEY, vars(KernelConfig(32, 32, 2, 1)))  # a config the list no longer has
    timer = Timer({CANDIDATES[0]: 0.5, CANDIDATES[1]: 0.8, CANDIDATES[2]: 1.3})
    assert choose_config(KEY, CANDIDATES, timer) == CANDIDATES[0] and len(timer.calls) == 3
    assert tuning_cache.lookup(KEY) == vars(CANDIDATES[0])


def test_out_of_resources_candidates_are_skipped_and_none_fitting_raises(cache_dir):
    timer = Timer({CANDIDATES[0]: 2.0, CANDIDATES[2]: 1.0}, fail=(CANDIDATES[2],))
    assert choose_config(KEY, CANDIDATES[::2], timer) == CANDIDATES[0]
    with pytest.raises(RuntimeError, match="no Triton config fits"):
        choose_config(KEY.replace("b128", "b64"), CANDIDATES[2:], Timer({}, fail=(CANDIDATES[2],)))


def test_corrupt_file_warns_once_and_is_replaced(cache_dir):
    (cache_dir / "tuning.json").write_text("{not json")
    timer = Timer({CANDIDATES[0]: 1.0, CANDIDATES[1]: 0.8, CANDIDATES[2]: 1.3})
    with pytest.warns(RuntimeWarning, match="ignoring the tuning cache"):
        assert choose_config(KEY, CANDIDATES, timer) == CANDIDATES[1]
    assert json.loads((cache_dir / "tuning.json").read_text())["entries"][KEY] == vars(CANDIDATES[1])
    assert not list(cache_dir.glob(".tuning.*"))  # no temporary file left behind


def test_disabled_cache_always_times_and_writes_nothing(cache_dir, monkeypatch):
    monkeypatch.setenv("ATTNSEARCH_TUNING_CACHE", "0")
    for _ in range(2):
        timer = Timer({CANDIDATES[0]: 1.0, CANDIDATES[1]: 0.8, CANDIDATES[2]: 1.3})
        assert choose_config(KEY, CANDIDATES, timer) == CANDIDATES[1] and len(timer.calls) == 3
    assert not (cache_dir / "tuning.json").exists()


def test_keys_separate_gpu_triton_and_kernel_source():
    parts = ["NVIDIA H100 80GB HBM3", (9, 0), "3.6.0", "abc123", 128, 128, "bfloat16", True]
    keys = {tuning_cache.make_key(*parts)}
    for i, other in enumerate(["NVIDIA H200", (9, 0), "3.7.0", "def456", 64, 64, "float16", False]):
        if i == 1:
            continue
        keys.add(tuning_cache.make_key(*parts[:i], other, *parts[i + 1:]))
    assert len(keys) == 8
    assert len(triton_launch.source_hash()) == 16


def test_no_home_directory_disables_the_cache_with_a_warning(monkeypatch):
    monkeypatch.delenv("ATTNSEARCH_CACHE_DIR", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.delenv("ATTNSEARCH_TUNING_CACHE", raising=False)

    def no_home():
        raise RuntimeError("Could not determine home directory.")

    monkeypatch.setattr(tuning_cache.Path, "home", staticmethod(no_home))
    monkeypatch.setattr(tuning_cache, "_WARNED", set())
    with pytest.warns(RuntimeWarning, match="no home directory"):
        timer = Timer({CANDIDATES[0]: 1.0, CANDIDATES[1]: 0.8, CANDIDATES[2]: 1.3})
        assert choose_config(KEY, CANDIDATES, timer) == CANDIDATES[1]
    assert tuning_cache.cache_path() is None
