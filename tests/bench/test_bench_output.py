"""``bench.output`` names the commit a benchmark started from, not one made while it ran."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _git(repo: Path, *args: str) -> str:
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@t"}
    return subprocess.run(["git", *args], cwd=repo, env=env, capture_output=True, text=True, check=True).stdout.strip()


def test_environment_names_the_commit_the_run_started_from(tmp_path):
    try:
        _git(tmp_path, "init", "-q")
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("git is not available")
    (tmp_path / "f").write_text("1")
    _git(tmp_path, "add", "f")
    _git(tmp_path, "commit", "-q", "-m", "first")
    first = _git(tmp_path, "rev-parse", "--short", "HEAD")
    # The child imports bench.output (the run starts), a commit lands, then it writes its environment.
    script = ("import subprocess, sys\n"
              "from attnsearch.bench.output import environment\n"
              "open('f', 'w').write('2')\n"
              "subprocess.run(['git', 'commit', '-q', '-am', 'second'], check=True)\n"
              "print(environment()['commit'])\n")
    env = {k: v for k, v in os.environ.items() if k != "GIT_COMMIT"}
    env.update(PYTHONPATH=str(ROOT), GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@t", GIT_COMMITTER_NAME="t",
               GIT_COMMITTER_EMAIL="t@t")
    out = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True,
                         check=True).stdout.split()
    second = _git(tmp_path, "rev-parse", "--short", "HEAD")
    assert second != first
    assert out[-1] == first


def test_environment_prefers_git_commit_variable(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "GIT_COMMIT": "abc1234"}
    out = subprocess.run([sys.executable, "-c", "from attnsearch.bench.output import environment; "
                          "print(environment()['commit'])"], cwd=tmp_path, env=env, capture_output=True, text=True,
                         check=True).stdout.split()
    assert out[-1] == "abc1234"
