"""The run directory's scratch rule: only dal-dist's own leftovers inside a directory that already is a run
are ever removed; a user's files beside them survive, whatever they are named."""

from __future__ import annotations

from dal_dist.driver import layout


def _user_files(d):
    (d / ".tmp").mkdir(parents=True)
    (d / ".tmp" / "notes.txt").write_text("mine")
    (d / ".draft.tmp").write_text("mine")
    (d / ".x.staging-1234abcd").mkdir()
    (d / ".x.staging-1234abcd" / "data.csv").write_text("mine")
    (d / "NOTES.txt").write_text("mine")


def test_a_directory_that_is_not_a_run_is_never_cleared(tmp_path):
    _user_files(tmp_path)
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    assert layout.clear_scratch(tmp_path) == []
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before


def test_in_a_run_only_dal_dists_leftovers_go(tmp_path):
    _user_files(tmp_path)
    (tmp_path / layout.CONFIG_JSON).write_text("{}")
    ours = [tmp_path / ".config.json.ab12cd_9.tmp", layout.train_scratch(tmp_path, 3) / "ckpt",
            layout.round_dir(tmp_path, 1) / ".scores.staging-0123abcd" / "part.parquet",
            layout.round_dir(tmp_path, 1) / ".selection.parquet.x1y2z3ab.tmp",
            tmp_path / "labels" / ".round-0001.parquet.k2j3h4g5.tmp"]
    for p in ours:
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text("partial")
    layout.clear_scratch(tmp_path)
    for p in ours:
        assert not p.exists(), p
    assert not layout.train_scratch(tmp_path, 3).exists()
    for name in (".tmp/notes.txt", ".draft.tmp", ".x.staging-1234abcd/data.csv", "NOTES.txt", "config.json"):
        assert (tmp_path / name).exists(), name
