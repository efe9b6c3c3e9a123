"""Two optimize runs creating one new SQLite study at the same moment both succeed (the creation
of the study's schema is serialised), and refused storages create nothing."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from attnsearch.atomic_io import OutputError
from attnsearch.profiling.profile_io import Profile
from attnsearch.search import optimize
from attnsearch.search.space import SearchError

RUN = """
import os, sys, time
from attnsearch.search import optimize
barrier = sys.argv[3]
if barrier != "-":  # every process waits here, imports done, until the file exists: they go together
    open(f"{barrier}.{os.getpid()}", "w").close()
    while not os.path.exists(barrier):
        time.sleep(0.002)
print("ready", flush=True)
optimize(sys.argv[1], out=sys.argv[2], trials=2, storage=sys.argv[4])
"""


@pytest.mark.slow
def test_two_runs_creating_one_sqlite_study_at_once_both_succeed(tmp_path, random_profile):
    prof = random_profile(tmp_path / "p.parquet")
    root = Path(__file__).resolve().parents[2]
    for round_ in range(1):
        db = tmp_path / f"study{round_}.db"
        barrier = tmp_path / f"go{round_}"
        procs = [subprocess.Popen([sys.executable, "-c", RUN, str(prof), str(tmp_path / f"plan{round_}{i}.json"),
                                   str(barrier), f"sqlite:///{db}"], cwd=root, stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, text=True, env={"PYTHONPATH": str(root),
                                                                            "PATH": "/usr/bin:/bin"})
                 for i in range(2)]
        t0 = time.time()
        while not all(Path(f"{barrier}.{p.pid}").exists() for p in procs):
            assert all(p.poll() is None for p in procs), [p.communicate()[0] for p in procs]
            assert time.time() - t0 < 120, "the runs did not start"
            time.sleep(0.01)
        barrier.touch()
        outputs = [p.communicate(timeout=300)[0] for p in procs]
        assert [p.returncode for p in procs] == [0, 0], outputs
        assert (tmp_path / f"plan{round_}0.json").exists() and (tmp_path / f"plan{round_}1.json").exists()


def blocked_on_flock(pid: int, path: Path) -> bool:
    """Process ``pid`` waits for an flock of ``path``: a ``->`` line of /proc/locks names the waiter's
    pid and the file's device:inode."""
    inode = path.stat().st_ino
    for line in Path("/proc/locks").read_text().splitlines():
        fields = line.split()
        if "->" in fields:
            kind, _, _, waiter, device_inode = fields[fields.index("->") + 1:fields.index("->") + 6]
            if kind == "FLOCK" and waiter == str(pid) and device_inode.endswith(f":{inode}"):
                return True
    return False


def wait_until_blocked_on_flock(proc: subprocess.Popen, path: Path, db: Path) -> None:
    """Until ``proc`` waits for the flock of ``path``, and meanwhile neither ended nor created ``db``.
    Without /proc/locks (not Linux): 4 s, long enough to load the profile and reach the storage."""
    if not Path("/proc/locks").is_file():
        time.sleep(4)
        return
    t0 = time.time()
    while not blocked_on_flock(proc.pid, path):
        assert proc.poll() is None and not db.exists()
        assert time.time() - t0 < 120, "the run never waited for the lock"
        time.sleep(0.02)


@pytest.mark.slow
def test_a_new_sqlite_study_is_created_under_the_lock_beside_it(tmp_path, random_profile):
    from attnsearch.search.workers import file_lock, lock_path

    prof = random_profile(tmp_path / "p.parquet")
    db = tmp_path / "study.db"
    root = Path(__file__).resolve().parents[2]
    with file_lock(db):  # another run creating the study holds the lock
        proc = subprocess.Popen([sys.executable, "-c", RUN, str(prof), str(tmp_path / "plan.json"), "-",
                                 f"sqlite:///{db}"], cwd=root, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                text=True, env={"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin"})
        assert proc.stdout.readline().strip() == "ready"  # imports done, optimize starts
        wait_until_blocked_on_flock(proc, lock_path(db), db)  # it loads the profile and reaches the storage
        assert proc.poll() is None and not db.exists()
    out = proc.communicate(timeout=300)[0]
    assert proc.returncode == 0, out
    assert db.exists() and (tmp_path / "plan.json").exists()


def test_refused_storages_create_nothing(tmp_path, random_profile):
    prof = random_profile(tmp_path / "p.parquet")
    before = sorted(tmp_path.iterdir())
    with pytest.raises(SearchError, match="does not exist"):
        optimize(str(prof), out=tmp_path / "plan.json", trials=1,
                 storage=f"sqlite:///{tmp_path}/missing/dir/x.db")
    with pytest.raises(OutputError, match="is also an input"):
        optimize(str(prof), out=tmp_path / "plan.json", trials=1, storage=f"sqlite:///{prof}")
    with pytest.raises(SearchError, match="seed must be an integer ≥ 0"):
        optimize(str(prof), out=tmp_path / "plan.json", trials=1, seed=-5)
    assert sorted(tmp_path.iterdir()) == before


def test_a_profile_with_a_step_gap_is_not_planned(tmp_path, random_profile):
    prof = Profile.load(random_profile(tmp_path / "p.parquet"))
    prof.table.loc[prof.table["step"] == 1, "step"] = 3  # a shard's steps 0 and 3
    with pytest.raises(Exception, match=r"lacks step\(s\) 1–2"):
        optimize(prof, out=tmp_path / "plan.json", trials=1)
    assert not (tmp_path / "plan.json").exists() and not (tmp_path / "plan.json.optuna.db").exists()
