"""Outputs are whole or absent: ``atomic_io`` writes beside the target and renames over it."""

from __future__ import annotations

import pytest

from attnsearch.atomic_io import replacing, write_text_atomic


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "plan.json"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with replacing(target) as tmp:
            tmp.write_text("half of the new")
            raise RuntimeError("interrupted")
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plan.json"]


def test_a_write_replaces_the_file_and_creates_its_folder(tmp_path):
    target = tmp_path / "deep" / "er" / "bench.json"
    assert write_text_atomic(target, "ü new\n") == target
    assert target.read_text(encoding="utf-8") == "ü new\n"
    write_text_atomic(target, "newer")
    assert target.read_text() == "newer"
    assert sorted(p.name for p in target.parent.iterdir()) == ["bench.json"]
