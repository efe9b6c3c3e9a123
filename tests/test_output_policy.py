"""The output policy of ``atomic_io``: only regular files that are not inputs are replaced, with the
umask's permissions, leaving nothing behind when refused, and stale temporary files cleaned up."""

from __future__ import annotations

import json
import os
import stat
import time
from pathlib import Path

import pytest

from attnsearch.atomic_io import (
    STALE_AFTER_S, OutputError, check_output, check_outputs, replacing, write_bytes_atomic,
    write_json_atomic, write_text_atomic,
)
from attnsearch.jsondata import JSONDataError


def tree(root: Path) -> dict[str, bytes | None]:
    """Every path under ``root`` with its content (None for folders): to assert nothing changed."""
    return {str(p.relative_to(root)): None if p.is_dir() else p.read_bytes() for p in sorted(root.rglob("*"))}


def one_line(err: pytest.ExceptionInfo, path: Path | str) -> str:
    msg = str(err.value)
    assert len(msg.splitlines()) == 1 and msg.startswith(str(path)), msg
    return msg


@pytest.fixture
def umask():
    """Set a umask for one test and restore the previous one."""
    old = os.umask(0o022)
    yield lambda m: os.umask(m)
    os.umask(old)


@pytest.mark.skipif(not Path("/dev/null").exists(), reason="needs /dev/null")
def test_a_device_is_never_replaced():
    with pytest.raises(OutputError) as err:
        write_text_atomic("/dev/null", "x")
    assert "character device" in one_line(err, "/dev/null")
    assert stat.S_ISCHR(os.stat("/dev/null").st_mode)
    assert not any(p.name.startswith(".null.") for p in Path("/dev").iterdir())


def test_a_directory_is_refused_and_left_as_it_was(tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("k")
    before = tree(tmp_path)
    for writer in (lambda p: write_text_atomic(p, "x"), lambda p: write_json_atomic(p, {"a": 1}),
                   lambda p: write_bytes_atomic(p, b"x")):
        with pytest.raises(OutputError) as err:
            writer(tmp_path / "out")
        assert "a directory" in one_line(err, tmp_path / "out")
    assert tree(tmp_path) == before


@pytest.mark.parametrize("how", ["same path", "other spelling", "hard link", "symbolic link"])
def test_an_input_is_never_an_output(tmp_path, how):
    src = tmp_path / "profile.parquet"
    src.write_bytes(b"input data")
    (tmp_path / "sub").mkdir()
    out = {"same path": src, "other spelling": tmp_path / "sub" / ".." / "profile.parquet",
           "hard link": tmp_path / "hard", "symbolic link": tmp_path / "soft"}[how]
    if how == "hard link":
        os.link(src, out)
    elif how == "symbolic link":
        out.symlink_to(src)
    before = tree(tmp_path)
    with pytest.raises(OutputError) as err:
        write_text_atomic(out, "plan", inputs=[src])
    assert "is also an input" in one_line(err, out)
    with pytest.raises(OutputError):
        with replacing(out, inputs=[tmp_path / "missing.json", src]) as tmp:
            tmp.write_text("never")
    assert tree(tmp_path) == before


def test_outputs_are_checked_together_before_any_work(tmp_path):
    inp = tmp_path / "in.parquet"
    inp.write_bytes(b"data")
    a, b = tmp_path / "new" / "a.json", tmp_path / "new" / "b.csv"
    assert check_outputs([a, b], [inp]) == [a, b]
    with pytest.raises(OutputError) as err:
        check_outputs([a, tmp_path / "new" / ".." / "new" / "a.json"])
    assert "named twice" in one_line(err, tmp_path / "new" / ".." / "new" / "a.json")
    with pytest.raises(OutputError):
        check_outputs([a, inp], [inp])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.parquet"]  # checking creates nothing


def test_a_file_in_the_way_of_a_folder_is_refused_and_nothing_created(tmp_path):
    (tmp_path / "report.html").write_text("a file")
    before = tree(tmp_path)
    target = tmp_path / "report.html" / "deeper" / "index.html"
    with pytest.raises(OutputError) as err:
        write_text_atomic(target, "x")
    assert "not a folder" in one_line(err, target)
    with pytest.raises(OutputError):
        check_output(target)
    assert tree(tmp_path) == before


def test_missing_folders_are_made_for_a_write_and_removed_when_it_fails(tmp_path):
    target = tmp_path / "a" / "b" / "out.json"
    with pytest.raises(RuntimeError):
        with replacing(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("interrupted")
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "mine.txt").write_text("user file")
    with pytest.raises(JSONDataError):
        write_json_atomic(target, {"x": float("nan")})
    assert tree(tmp_path) == {"a": None, "a/mine.txt": b"user file"}
    write_json_atomic(target, {"x": 1})
    assert json.loads(target.read_text()) == {"x": 1}


def test_new_files_follow_the_umask_and_replaced_files_keep_their_mode(tmp_path, umask):
    umask(0o027)
    new = write_text_atomic(tmp_path / "new.json", "{}")
    assert stat.S_IMODE(new.stat().st_mode) == 0o640
    umask(0o022)
    assert stat.S_IMODE(write_bytes_atomic(tmp_path / "b.bin", b"\0").stat().st_mode) == 0o644
    kept = tmp_path / "kept.json"
    kept.write_text("old")
    kept.chmod(0o600)
    write_text_atomic(kept, "new")
    assert stat.S_IMODE(kept.stat().st_mode) == 0o600 and kept.read_text() == "new"


def test_stale_temporaries_of_our_pattern_are_removed_and_nothing_else(tmp_path):
    target = tmp_path / "plan.json"
    old = time.time() - STALE_AFTER_S - 60
    names = {
        ".plan.json.ab12cd_9.tmp": old,       # killed writer, long ago: removed
        ".plan.json.zz99yy88.tmp": time.time(),  # a writer that may still run: kept
        ".plan.json.notours.tmp": old,        # not mkstemp's 8 characters: kept
        ".other.json.ab12cd34.tmp": old,      # another target's: kept
        ".plan.json.ab12cd34.parquet": old,   # another suffix: kept
    }
    for name, mtime in names.items():
        (tmp_path / name).write_text("leftover")
        os.utime(tmp_path / name, (mtime, mtime))
    write_text_atomic(target, "new")
    left = sorted(p.name for p in tmp_path.iterdir())
    assert left == sorted(["plan.json", *[n for n in names if n != ".plan.json.ab12cd_9.tmp"]])


def test_a_symbolic_link_is_followed_and_stays_a_link(tmp_path):
    real = tmp_path / "runs" / "plan.json"
    real.parent.mkdir()
    real.write_text("old")
    link = tmp_path / "latest.json"
    link.symlink_to(real)
    assert write_text_atomic(link, "new") == link
    assert link.is_symlink() and real.read_text() == "new"
    assert sorted(p.name for p in real.parent.iterdir()) == ["plan.json"]


def test_strict_json_names_the_key_of_a_non_finite_number_and_writes_nothing(tmp_path):
    target = tmp_path / "bench.json"
    target.write_text('{"old": true}\n')
    for bad, where in (({"rows": [{"ms": 1.0}, {"ms": float("nan")}]}, "rows[1].ms: NaN"),
                       ({"speedup": float("inf")}, "speedup: Infinity"),
                       ({"a": {"b": -float("inf")}}, "a.b: -Infinity"),
                       ({"n": 2 ** 70}, "n: integer of 71 bits"),
                       ({"p": Path("x")}, "p: a PosixPath is not JSON data")):
        with pytest.raises(JSONDataError) as err:
            write_json_atomic(target, bad)
        assert str(err.value).startswith(where), err.value
    assert target.read_text() == '{"old": true}\n'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bench.json"]

    def refuse(name):
        raise AssertionError(f"non-strict constant {name}")

    write_json_atomic(target, {"psnr_db": None, "x": [1, 2.5, "é"]})
    assert json.loads(target.read_text(encoding="utf-8"), parse_constant=refuse) == {"psnr_db": None,
                                                                                     "x": [1, 2.5, "é"]}
