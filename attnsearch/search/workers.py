"""Several worker processes (on one machine or many) on one Optuna study, losing no trial.

    attnsearch optimize PROFILE --storage postgresql://user@host/db --workers 4   # on each machine

How the count stays exact. A run has a *target*: the number of COMPLETE trials the study should
hold when it ends, stored in the study (user attr ``attnsearch_target``). The first command of a
run sets it to (complete trials) + ``trials``; a command that finds an unfinished target (workers
still running elsewhere, or a run that was killed) joins it instead, so rerunning resumes. A
worker claims a trial under a lock held in the database itself (PostgreSQL advisory lock, MySQL
``GET_LOCK``, a file lock beside a SQLite file): it may ask Optuna for a trial only while
complete + claimed-and-running < target, so K workers never run more than the target between
them, however their trials interleave (``MaxTrialsCallback`` checks after a trial ends and
overshoots by up to K − 1 when several end together).

A worker that dies (SIGKILL, a lost machine) leaves a RUNNING trial whose heartbeat stops; once
it is older than the grace period any worker (or the next run) fails it, Optuna's retry callback
enqueues the same parameters again, and a live worker runs that. The surviving workers wait for
it rather than stop short, so the run still ends with exactly ``target`` COMPLETE trials.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import math
import os
import pickle
import socket
import threading
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Iterator

from ..atomic_io import replacing
from .space import SearchError

#: Seconds between heartbeats of a running trial; a trial silent for GRACE_FACTOR × this is dead.
HEARTBEAT_S = 5
GRACE_FACTOR = 3
#: How often the parameters of a trial whose worker died are retried.
MAX_RETRY = 2
TARGET_ATTR = "attnsearch_target"
WORKER_ATTR = "worker"


def storage_kind(url: str) -> str:
    """The database behind a storage URL: 'sqlite', 'postgresql', 'mysql' or the dialect's name."""
    head = url.split(":", 1)[0].lower()
    return head.split("+", 1)[0]


def sqlite_path(url: str) -> Path | None:
    """The file of a ``sqlite:///path`` URL (None for in-memory)."""
    rest = url[len("sqlite:///"):] if url.startswith("sqlite:///") else ""
    rest = rest.split("?", 1)[0]
    return Path(rest) if rest and rest != ":memory:" else None


def driver_url(url: str) -> str:
    """``url`` with a PostgreSQL driver that is installed: a bare ``postgresql://`` means psycopg 3
    to SQLAlchemy ≥ 2.1, psycopg2 before; use whichever of the two is there (the extra
    ``attnsearch[postgres]`` installs psycopg2)."""
    import importlib.util

    scheme, sep, rest = url.partition("://")
    if not sep or scheme.lower() not in ("postgresql", "postgres"):
        return url
    for module, driver in (("psycopg", "psycopg"), ("psycopg2", "psycopg2")):
        if importlib.util.find_spec(module) is not None:
            return f"postgresql+{driver}://{rest}"
    return url


def open_storage(url: str, heartbeat_s: int = HEARTBEAT_S):
    """An Optuna RDBStorage with heartbeats and retry of dead workers' trials, or a SearchError
    that names the storage (one line, whatever the driver said)."""
    import optuna
    from optuna.storages import RDBStorage

    if int(heartbeat_s) < 1:
        raise SearchError(f"heartbeat must be ≥ 1 s, got {heartbeat_s}")
    try:
        from optuna.storages import RetryHeartbeatStaleTrialCallback as Retry  # optuna ≥ 4.9
        kw = "heartbeat_stale_trial_callback"
    except ImportError:  # pragma: no cover - older optuna
        from optuna.storages import RetryFailedTrialCallback as Retry
        kw = "failed_trial_callback"
    engine_kwargs: dict[str, Any] = {}
    if storage_kind(url) == "sqlite":  # the heartbeat thread writes too: wait for the file lock
        engine_kwargs = {"connect_args": {"timeout": 60}}
    else:
        engine_kwargs = {"pool_pre_ping": True}
    last: Exception | None = None
    for attempt in range(3):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                warnings.simplefilter("ignore", FutureWarning)
                return RDBStorage(driver_url(url), engine_kwargs=engine_kwargs, heartbeat_interval=int(heartbeat_s),
                                  grace_period=int(heartbeat_s) * GRACE_FACTOR, **{kw: Retry(max_retry=MAX_RETRY)})
        except Exception as err:  # noqa: BLE001  (sqlalchemy/driver errors differ by backend)
            last = err
            # Two machines creating the tables of an empty database at once: the loser retries.
            if type(err).__name__ not in ("IntegrityError", "ProgrammingError"):
                break
            time.sleep(0.5 * (attempt + 1))
    assert last is not None
    raise storage_error(url, last) from None


def storage_error(url: str, err: Exception) -> SearchError:
    msg = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    hint = ""
    if storage_kind(url) in ("postgresql", "postgres") and "psycopg" in f"{msg} {err.__cause__}":
        hint = " (the PostgreSQL driver: pip install 'attnsearch[postgres]')"
    return SearchError(f"storage {public_url(url)!r} cannot be reached: {type(err).__name__}: {msg[:200]}{hint}")


def public_url(url: str) -> str:
    """The storage URL without a password."""
    import re

    return re.sub(r"//([^:/@]+):[^@]*@", r"//\1:***@", url)


@contextlib.contextmanager
def claim_lock(url: str, rdb, study_name: str) -> Iterator[None]:
    """Mutual exclusion of every worker of a study, wherever it runs, held by the database server
    (released by the server if the holder dies, so a killed worker cannot wedge the others)."""
    kind = storage_kind(url)
    digest = hashlib.sha256(study_name.encode()).digest()
    if kind == "postgresql":
        key = int.from_bytes(digest[:8], "big", signed=True)
        with _server_lock(rdb, "SELECT pg_advisory_lock(:k)", "SELECT pg_advisory_unlock(:k)", {"k": key}):
            yield
    elif kind == "mysql":
        name = "attnsearch:" + digest.hex()[:40]
        with _server_lock(rdb, "SELECT GET_LOCK(:n, -1)", "SELECT RELEASE_LOCK(:n)", {"n": name}):
            yield
    elif kind == "sqlite" and sqlite_path(url) is not None:
        with file_lock(sqlite_path(url)):
            yield
    else:  # an in-memory database (one process) or a dialect without a lock we know
        yield


def lock_path(db: Path) -> Path:
    """The lock file beside a SQLite database: every process opening the study takes it."""
    return db.with_name(db.name + ".lock")


@contextlib.contextmanager
def file_lock(db: Path) -> Iterator[None]:
    """An exclusive ``flock`` on the lock file beside ``db`` (released by the system if the holder dies)."""
    with open(lock_path(db), "a+") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


@contextlib.contextmanager
def _server_lock(rdb, acquire: str, release: str, params: dict) -> Iterator[None]:
    """A named lock held on one connection of the storage's database server."""
    import sqlalchemy

    with rdb.engine.connect() as conn:
        conn.execute(sqlalchemy.text(acquire), params)
        try:
            yield
        finally:
            conn.execute(sqlalchemy.text(release), params)
            conn.commit()


def check_workers(url: str, workers: int) -> None:
    if not isinstance(workers, int) or isinstance(workers, bool) or workers < 1:
        raise SearchError(f"workers must be an integer ≥ 1, got {workers!r}")
    if workers == 1:
        return
    kind = storage_kind(url)
    if kind == "sqlite":
        raise SearchError(f"workers = {workers} needs a storage several processes can write at once: SQLite "
                          f"serialises every write behind one file lock and fails under that load; use "
                          f"--storage postgresql://USER@HOST/DB (pip install 'attnsearch[postgres]')")
    if kind not in ("postgresql", "mysql"):
        raise SearchError(f"workers = {workers}: storage {kind!r} is not supported for several workers; "
                          f"use postgresql:// (or mysql://)")


# --- the run's target and the claim loop -------------------------------------------------------------------


def _states():
    from optuna.trial import TrialState

    return TrialState


def fail_stale(study) -> None:
    import optuna

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)


def start_run(study, lock, trials: int, seed_params: Callable[[int], list[dict]]) -> tuple[int, int]:
    """(complete trials now, the run's target). Joins an unfinished run; else starts one of
    ``trials`` more. A new study gets its seed trials enqueued (once, under the lock)."""
    TS = _states()
    fail_stale(study)
    with lock():
        done = len(study.get_trials(deepcopy=False, states=(TS.COMPLETE,)))
        stored = int(study.user_attrs.get(TARGET_ATTR, 0) or 0)
        if trials <= 0:
            return done, done
        target = stored if done < stored else done + trials
        if target != stored:
            study.set_user_attr(TARGET_ATTR, target)
        if not study.get_trials(deepcopy=False):
            for params in seed_params(target - done):
                study.enqueue_trial(params)
    return done, target


class Heartbeat:
    """Records a trial's heartbeat every ``interval`` s on a thread while the trial runs."""

    def __init__(self, rdb, trial_id: int, interval: float) -> None:
        self.rdb, self.trial_id, self.interval = rdb, trial_id, interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"heartbeat-{trial_id}", daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            with contextlib.suppress(Exception):  # a missed beat is retried; the grace period covers several
                self.rdb.record_heartbeat(self.trial_id)

    def __enter__(self) -> "Heartbeat":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def worker_id(index: int) -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{index}"


def run_trials(study, rdb, lock, target: int, objective, *, worker: str,
               on_trial: Callable[[Any], None] | None = None, deadline: float | None = None,
               poll_s: float = 0.5) -> int:
    """Claim and run trials until the study holds ``target`` COMPLETE ones; the number run here."""
    import optuna

    TS = _states()
    ran = 0
    interval = rdb.heartbeat_interval
    checked = -math.inf
    while True:
        now = time.monotonic()
        if deadline is not None and now >= deadline:
            return ran
        if now - checked >= interval:  # a dead worker's trial: FAIL, and its parameters enqueued again
            fail_stale(study)
            checked = now
        trial = None
        with lock():
            trials = study.get_trials(deepcopy=False, states=(TS.COMPLETE, TS.RUNNING))
            done = sum(t.state == TS.COMPLETE for t in trials)
            if done >= target:
                return ran
            claimed = sum(t.state == TS.RUNNING and WORKER_ATTR in t.user_attrs for t in trials)
            if done + claimed < target:
                with warnings.catch_warnings():  # heartbeats are recorded here, not by Study.optimize
                    warnings.filterwarnings("ignore", message="Heartbeat of storage")
                    trial = study.ask()
                rdb.record_heartbeat(trial._trial_id)
                trial.set_user_attr(WORKER_ATTR, worker)
        if trial is None:  # the rest is running elsewhere: wait for it to end or to go stale
            time.sleep(poll_s)
            checked = -math.inf
            continue
        try:
            with Heartbeat(rdb, trial._trial_id, interval):
                try:
                    values = objective(trial)
                except optuna.exceptions.UpdateFinishedTrialError:
                    raise
                except BaseException:
                    study.tell(trial, state=TS.FAIL, skip_if_finished=True)
                    raise
            frozen = study.tell(trial, values, skip_if_finished=True)
        except optuna.exceptions.UpdateFinishedTrialError:
            continue  # judged dead (heartbeat late past the grace period): its retry runs instead
        if frozen.state == TS.COMPLETE:
            ran += 1
            if on_trial is not None:
                on_trial(frozen)


# --- worker processes --------------------------------------------------------------------------------------

_MARK = "\x1eattnsearch-worker "  # protocol lines on a worker's stdout; anything else is passed through


def spawn(cfg: dict[str, Any], workers: int, progress: Callable[[dict[str, Any]], None] | None,
          entry: str) -> list[str]:
    """Run ``workers`` fresh Python processes of :func:`_child_main` on the study, forward their
    progress, wait for all. Returns the errors they reported (none when all ended cleanly or were
    killed by a signal: their trials are retried by the others).

    ``entry`` ("module:function") is what each process runs: ``function(cfg, index, report)``, with
    ``report(progress_dict)`` forwarding one finished trial to ``progress``.

    Plain subprocesses, not multiprocessing: nothing of this process (DB connections, CUDA, thread
    pools, an unguarded ``__main__``) is inherited or re-run."""
    import json
    import selectors
    import subprocess
    import sys
    import tempfile

    try:
        blob = pickle.dumps(cfg)
    except Exception as err:  # noqa: BLE001
        raise SearchError(f"workers > 1: the search settings cannot be sent to worker processes ({err}); "
                          f"pass the model by name") from None
    folder = Path(tempfile.mkdtemp(prefix="attnsearch-workers-"))
    cfg_path = str(folder / "search.pkl")
    with replacing(cfg_path) as tmp:
        tmp.write_bytes(blob)
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parents[2])  # so a source checkout works uninstalled
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env["PYTHONUNBUFFERED"] = "1"
    code = "from attnsearch.search.workers import _child_main; _child_main()"
    procs: list[subprocess.Popen] = []
    errors: list[str] = []
    sel = selectors.DefaultSelector()
    try:
        for i in range(workers):
            proc = subprocess.Popen([sys.executable, "-c", code, cfg_path, str(i), entry], stdin=subprocess.DEVNULL,
                                    stdout=subprocess.PIPE, env=env, text=True, bufsize=1)
            procs.append(proc)
            sel.register(proc.stdout, selectors.EVENT_READ, i)
        open_pipes = workers
        while open_pipes:
            for key, _ in sel.select(timeout=1.0):
                line = key.fileobj.readline()
                if not line:
                    sel.unregister(key.fileobj)
                    open_pipes -= 1
                    continue
                if not line.startswith(_MARK):
                    sys.stdout.write(line)
                    continue
                msg = json.loads(line[len(_MARK):])
                if msg["kind"] == "trial" and progress is not None:
                    progress(msg["data"])
                elif msg["kind"] == "error":
                    errors.append(msg["data"])
        for i, proc in enumerate(procs):
            rc = proc.wait()
            if rc > 0 and not any(e.startswith(f"worker {i}:") for e in errors):
                errors.append(f"worker {i}: exited with code {rc}")
    except BaseException:
        for proc in procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in procs:
            with contextlib.suppress(Exception):
                proc.wait(timeout=10)
        raise
    finally:
        sel.close()
        for proc in procs:
            if proc.stdout:
                proc.stdout.close()
        Path(cfg_path).unlink(missing_ok=True)
        folder.rmdir()
    return errors


def _child_main() -> None:
    """Entry of a worker process: ``python -c '…_child_main()' CFG.pkl INDEX MODULE:FUNCTION``."""
    import importlib
    import json
    import sys

    cfg_path, index, entry = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    with open(cfg_path, "rb") as f:
        cfg = pickle.load(f)

    def send(kind: str, data: Any) -> None:
        sys.stdout.write(_MARK + json.dumps({"kind": kind, "data": data}, default=float) + "\n")
        sys.stdout.flush()

    try:
        module, _, function = entry.partition(":")
        getattr(importlib.import_module(module), function)(cfg, index, lambda p: send("trial", p))
    except KeyboardInterrupt:
        raise SystemExit(130) from None
    except BaseException as err:  # noqa: BLE001
        msg = str(err).strip().splitlines()[0] if str(err).strip() else ""
        send("error", f"worker {index}: {type(err).__name__}: {msg}")
        raise SystemExit(1) from None


__all__ = ["HEARTBEAT_S", "check_workers", "claim_lock", "open_storage", "public_url", "run_trials", "spawn",
           "start_run", "storage_kind", "worker_id"]
