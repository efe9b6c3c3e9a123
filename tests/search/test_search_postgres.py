"""Distributed search on a real PostgreSQL server: several workers on one study lose and duplicate
no trial, a SIGKILLed worker leaves the study usable, and every process writes the same plan.

The server: ``ATTNSEARCH_TEST_POSTGRES`` (a URL; `.ci/run` starts one with `.ci/postgres.sh`), else a
throwaway one started here with the same script from the PostgreSQL binaries on this machine; the
tests skip (saying why) only when neither is possible. Every test gets its own database.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from typer.testing import CliRunner

from attnsearch.search import SearchError, optimize

import synthetic

ROOT = Path(__file__).resolve().parents[2]
PG_SCRIPT = ROOT / ".ci" / "postgres.sh"
HEARTBEAT = 1  # s; a trial silent for 3 s is dead

# One worker machine: optimize() in its own process, its inner solve slowed by DELAY s so the test
# controls who is mid-trial when; with a barrier path it waits for the file before starting.
WORKER = r"""
import json, os, sys, time
from attnsearch.search import optimize
from attnsearch.search.problem import Problem
profile, url, name, out, trials, delay, barrier = sys.argv[1:8]
delay = float(delay)
if delay:
    solve = Problem.solve
    def slow(self, k):
        time.sleep(delay)
        return solve(self, k)
    Problem.solve = slow
if barrier != "-":
    open(f"{barrier}.{os.getpid()}", "w").close()
    while not os.path.exists(barrier):
        time.sleep(0.01)
res = optimize(profile, trials=int(trials), storage=url, study_name=name, out=out, head_dim=128, heartbeat_s=%d)
print(json.dumps({"trial": res.trial, "ran": res.trials_run}))
""" % HEARTBEAT


@pytest.fixture(scope="module")
def pg_server():
    url = os.environ.get("ATTNSEARCH_TEST_POSTGRES")
    if url:  # a server was given (CI): the driver must be there too (`make install` puts it in)
        try:
            import psycopg2  # noqa: F401
        except ImportError:
            pytest.fail("ATTNSEARCH_TEST_POSTGRES is set but psycopg2 is missing: pip install -e '.[postgres]'")
        yield url
        return
    pytest.importorskip("psycopg2", reason="no PostgreSQL driver: pip install -e '.[postgres]'")
    r = subprocess.run(["bash", str(PG_SCRIPT), "start", "--no-install"], capture_output=True, text=True,
                       timeout=180)
    if r.returncode != 0:
        why = (r.stderr.strip().splitlines() or ["?"])[-1]
        pytest.skip(f"ATTNSEARCH_TEST_POSTGRES is unset and no local PostgreSQL server could be started ({why})")
    env = dict(line[len("export "):].split("=", 1) for line in r.stdout.splitlines() if line.startswith("export "))
    try:
        yield env["ATTNSEARCH_TEST_POSTGRES"]
    finally:
        subprocess.run(["bash", str(PG_SCRIPT), "stop", env["ATTNSEARCH_TEST_POSTGRES_DIR"]], capture_output=True,
                       timeout=120)


@pytest.fixture
def pg(pg_server):
    """A database of its own for one test, on the shared server."""
    import psycopg2

    db = f"t_{uuid.uuid4().hex[:12]}"
    admin = psycopg2.connect(pg_server)
    admin.autocommit = True
    admin.cursor().execute(f"CREATE DATABASE {db}")
    try:
        yield pg_server.rsplit("/", 1)[0] + "/" + db
    finally:
        admin.cursor().execute(f"DROP DATABASE IF EXISTS {db} WITH (FORCE)")
        admin.close()


@pytest.fixture(scope="module")
def profile(tmp_path_factory):
    return str(synthetic.small_profile(tmp_path_factory.mktemp("pgprof"))[0])


def _trials(url: str, name: str):
    import optuna

    from attnsearch.search.workers import driver_url

    return optuna.load_study(study_name=name, storage=driver_url(url)).get_trials()


def _by_state(trials) -> dict[str, list]:
    out: dict[str, list] = {}
    for t in trials:
        out.setdefault(t.state.name, []).append(t)
    return out


def _distinct_params(trials) -> int:
    return len({json.dumps(t.params, sort_keys=True) for t in trials})


def _machine(tmp_path, profile, url, name, out, trials, delay, barrier="-") -> subprocess.Popen:
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    return subprocess.Popen([sys.executable, str(script), profile, url, name, str(out), str(trials), str(delay),
                             str(barrier)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)


def _go(barrier: Path, procs) -> None:
    """Release machines waiting at the barrier once all are ready (imports done)."""
    t0 = time.time()
    while sum(Path(f"{barrier}.{p.pid}").exists() for p in procs) < len(procs):
        assert all(p.poll() is None for p in procs), [p.communicate() for p in procs]
        assert time.time() - t0 < 60, "workers did not start"
        time.sleep(0.02)
    barrier.touch()


def _kill_mid_trial(proc, url, name, min_complete=0, timeout=60) -> int:
    """SIGKILL ``proc`` while it runs a trial (seen RUNNING in the database under its pid), after the
    study holds ``min_complete`` COMPLETE trials. Returns how many it had completed, read from the
    database after it died (it may finish a trial between our look and the signal)."""
    t0 = time.time()
    while time.time() - t0 < timeout:
        assert proc.poll() is None, proc.communicate()
        try:
            trials = _trials(url, name)
        except KeyError:  # the study does not exist yet
            time.sleep(0.05)
            continue
        mine = [t for t in trials if t.user_attrs.get("worker", "").split(":")[1:2] == [str(proc.pid)]]
        states = _by_state(trials)
        if len(states.get("COMPLETE", [])) >= min_complete and any(t.state.name == "RUNNING" for t in mine):
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=30)
            pid = [str(proc.pid)]
            return sum(t.state.name == "COMPLETE" and t.user_attrs.get("worker", "").split(":")[1:2] == pid
                       for t in _trials(url, name))
        time.sleep(0.05)
    raise AssertionError("the worker never ran a trial")


def _result(proc, timeout=120) -> dict:
    out, err = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, err[-3000:]
    return json.loads(out.strip().splitlines()[-1])


# --- the tests --------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_two_workers_complete_exactly_the_requested_trials(profile, pg, tmp_path):
    name = f"two-{uuid.uuid4().hex[:8]}"
    res = optimize(profile, trials=16, storage=pg, workers=2, study_name=name, out=tmp_path / "p.json",
                   head_dim=128, heartbeat_s=HEARTBEAT)
    trials = _trials(pg, name)
    done = _by_state(trials)["COMPLETE"]
    assert len(done) == 16 == len(trials)                    # none lost, none extra, none left RUNNING/WAITING
    assert sorted(t.number for t in done) == list(range(16))
    assert _distinct_params(done) == 16                      # no trial ran twice
    assert res.trials_run == 16 and res.plan.search["settings"]["trials_total"] == 16
    assert {t.user_attrs["worker"].split(":")[2] for t in done} <= {"0", "1"}
    # trials=0 chooses again from the stored study: the same plan, byte for byte.
    optimize(profile, trials=0, storage=pg, study_name=name, out=tmp_path / "again.json", head_dim=128)
    assert (tmp_path / "again.json").read_bytes() == (tmp_path / "p.json").read_bytes()
    # A later run adds exactly its own trials to the study.
    res = optimize(profile, trials=4, storage=pg, study_name=name, out=tmp_path / "more.json", head_dim=128,
                   heartbeat_s=HEARTBEAT)
    assert res.trials_run == 4 and len(_by_state(_trials(pg, name))["COMPLETE"]) == 20


@pytest.mark.slow
def test_machines_write_the_same_plan_whichever_ends_last(profile, pg, tmp_path):
    """Two commands on one study (two machines), one fast, one slow: between them exactly the
    requested trials, and both write the identical plan (and trials=0 later writes it again)."""
    name = f"same-{uuid.uuid4().hex[:8]}"
    barrier = tmp_path / "go"
    fast = _machine(tmp_path, profile, pg, name, tmp_path / "fast.json", 12, 0.05, barrier)
    slow = _machine(tmp_path, profile, pg, name, tmp_path / "slow.json", 12, 0.2, barrier)
    _go(barrier, [fast, slow])
    rf, rs = _result(fast), _result(slow)
    assert rf["ran"] + rs["ran"] == 12 and rs["ran"] >= 1     # both worked on the one run of 12
    trials = _trials(pg, name)
    done = _by_state(trials)["COMPLETE"]
    assert len(done) == 12 == len(trials) and _distinct_params(done) == 12
    assert rf["trial"] == rs["trial"]
    plan = (tmp_path / "fast.json").read_bytes()
    assert (tmp_path / "slow.json").read_bytes() == plan
    optimize(profile, trials=0, storage=pg, study_name=name, out=tmp_path / "later.json", head_dim=128)
    assert (tmp_path / "later.json").read_bytes() == plan


@pytest.mark.slow
def test_a_killed_worker_loses_no_trial(profile, pg, tmp_path):
    """SIGKILL one of two workers mid-trial: its trial goes stale, is failed and retried, and the
    other worker finishes the run with exactly the requested COMPLETE trials; nothing stays RUNNING."""
    name = f"kill-{uuid.uuid4().hex[:8]}"
    barrier = tmp_path / "go"
    victim = _machine(tmp_path, profile, pg, name, tmp_path / "victim.json", 10, 5.0, barrier)
    survivor = _machine(tmp_path, profile, pg, name, tmp_path / "survivor.json", 10, 0.1, barrier)
    _go(barrier, [victim, survivor])
    by_victim = _kill_mid_trial(victim, pg, name)
    assert victim.returncode == -signal.SIGKILL
    rs = _result(survivor)
    assert rs["ran"] == 10 - by_victim
    states = _by_state(_trials(pg, name))
    assert set(states) == {"COMPLETE", "FAIL"}                # no RUNNING, no WAITING left
    assert len(states["COMPLETE"]) == 10 and _distinct_params(states["COMPLETE"]) == 10
    (failed,) = states["FAIL"]
    assert failed.user_attrs["worker"].split(":")[1] == str(victim.pid)
    retried = [t for t in states["COMPLETE"] if t.system_attrs.get("failed_trial") == failed.number]
    # The retry keeps what the killed trial had sampled (it may have been killed mid-sampling).
    assert len(retried) == 1 and failed.params.items() <= retried[0].params.items()
    optimize(profile, trials=0, storage=pg, study_name=name, out=tmp_path / "later.json", head_dim=128)
    assert (tmp_path / "later.json").read_bytes() == (tmp_path / "survivor.json").read_bytes()


@pytest.mark.slow
def test_a_rerun_completes_a_killed_run(profile, pg, tmp_path):
    """The whole command killed mid-run (SIGKILL): rerunning it resumes the run to its count."""
    name = f"resume-{uuid.uuid4().hex[:8]}"
    proc = _machine(tmp_path, profile, pg, name, tmp_path / "first.json", 6, 0.3)
    by_first = _kill_mid_trial(proc, pg, name, min_complete=2)
    assert by_first >= 2
    states = _by_state(_trials(pg, name))
    # Killed mid-trial, or just after one finished: at most one trial is left RUNNING.
    running = len(states.get("RUNNING", []))
    assert running <= 1 and len(states["COMPLETE"]) == by_first
    res = optimize(profile, trials=6, storage=pg, study_name=name, out=tmp_path / "p.json", head_dim=128,
                   heartbeat_s=HEARTBEAT)
    assert res.trials_run == 6 - by_first
    states = _by_state(_trials(pg, name))
    # The trial left RUNNING (if any) is failed as stale; nothing else fails, nothing stays RUNNING.
    assert set(states) == ({"COMPLETE", "FAIL"} if running else {"COMPLETE"}) and len(states["COMPLETE"]) == 6
    assert len(states.get("FAIL", [])) == running
    assert _distinct_params(states["COMPLETE"]) == 6
    assert res.plan.search["settings"]["trials_total"] == 6


def test_sqlite_refuses_several_workers(profile, tmp_path):
    with pytest.raises(SearchError, match=r"workers = 2 needs a storage .* use --storage postgresql://"):
        optimize(profile, trials=2, workers=2, out=tmp_path / "p.json", head_dim=128)
    from attnsearch.cli import app

    res = CliRunner().invoke(app, ["optimize", profile, "--workers", "2", "--trials", "2", "--head-dim", "128",
                                   "--out", str(tmp_path / "c.json")])
    assert res.exit_code == 2 and "use --storage postgresql://" in res.output
    assert not (tmp_path / "c.json").exists()


@pytest.mark.slow
def test_worker_processes_weigh_errors_by_the_sensitivity(pg, tmp_path):
    """The weights travel to every worker: each trial's stored error is the weighted error of its
    knobs' solve, recomputed here, and not the unweighted one. At 16,384 tokens the seed trial at
    λ = 1 solves to a mixed plan whose weighted error (0.41) differs from the unweighted one (0), so
    the comparison is never between all-dense or all-skip plans, where the two agree."""
    import numpy as np

    from attnsearch import Geometry

    from attnsearch.costmodel import CostModel
    from attnsearch.search.problem import Problem
    from attnsearch.search.sensitivity import Sensitivity
    from attnsearch.search.space import build_space
    from attnsearch.search.study import _Search

    profile, prof = synthetic.small_profile(tmp_path, geometry=Geometry(16, 32, 32))
    S, L, H = prof.num_steps, prof.num_layers, prof.num_heads
    rng = np.random.default_rng(0)
    step, head = rng.uniform(0.1, 10, S), rng.uniform(0.1, 10, (L, H))
    sens = Sensitivity(step, head, step, head, (("dense",) * H,) * L, dict(prof.model), prof.settings.block_size,
                       0.3, 2)
    name = f"weighted-{uuid.uuid4().hex[:8]}"
    optimize(profile, trials=8, storage=pg, workers=2, study_name=name, out=tmp_path / "p.json", head_dim=128,
             heartbeat_s=HEARTBEAT, sensitivity=sens)
    cm = CostModel(None, head_dim=128)
    space = build_space(prof)
    search = _Search({(prof.settings.block_size, None): Problem(space, cm, weights=sens.weights())}, budgeted=False,
                     max_error=None, validator=None)
    plain = Problem(space, cm)
    done = _by_state(_trials(pg, name))["COMPLETE"]
    assert len(done) == 8 and {t.user_attrs["worker"].split(":")[2] for t in done} <= {"0", "1"}
    for t in done:
        k = search.knobs_of(t.params)
        assert t.values[1] == pytest.approx(search.problem_of(t.params).solve(k).rel_err, rel=1e-9)
    assert any(t.values[1] > 0 and abs(t.values[1] - plain.solve(search.knobs_of(t.params)).rel_err) > 1e-6
               for t in done)
