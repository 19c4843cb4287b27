"""Retention keeps the newest entries of a folder and never a protected one."""

from __future__ import annotations

import os

from pipelines.io.retention import keep_newest


def test_keep_newest_deletes_the_oldest_folders_and_files_but_never_a_protected_one(tmp_path):
    for age, name in enumerate(["e", "d", "c", "b", "a"]):  # a is the oldest
        entry = tmp_path / name
        entry.mkdir() if name in "ace" else entry.write_text(name)
        if entry.is_dir():
            (entry / "model.keras").write_text("weights")
        os.utime(entry, (1_000_000 - age * 100, 1_000_000 - age * 100))

    assert keep_newest(tmp_path, None) == []
    assert sorted(keep_newest(tmp_path, 2, protect={"a"})) == ["b", "c", "d"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "e"]  # a: protected, e: the newest
    assert keep_newest(tmp_path / "missing", 1) == []
