"""Atomic writes: readers see the old file or the whole new one, temp files never survive a failure, and a
published file gets the mode the user's umask gives (not mkstemp's 0600)."""

from __future__ import annotations

import os
import stat

import pytest

from dal_dist.atomic import atomic_path, write_json_atomic


def test_published_file_respects_the_umask(tmp_path):
    mask = os.umask(0)
    os.umask(mask)
    write_json_atomic(tmp_path / "a.json", {"x": 1})
    assert stat.S_IMODE((tmp_path / "a.json").stat().st_mode) == 0o666 & ~mask


def test_failed_write_keeps_the_old_file_and_leaves_no_temp(tmp_path):
    target = tmp_path / "state.json"
    write_json_atomic(target, {"v": 1})
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed")
    assert target.read_text().strip().endswith("}") and '"v": 1' in target.read_text()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.json"]
