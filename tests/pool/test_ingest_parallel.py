"""Parallel ingest of image folders and lists: the same pool (bytes, ids, rejects) for any thread count, progress
lines on stderr only when asked, and no reader thread left behind when the writer fails."""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

skimage_data = pytest.importorskip("skimage.data")
from PIL import Image  # noqa: E402

from dal_dist.errors import DalDistError  # noqa: E402
import dal_dist.pool.ingest as ingest_mod  # noqa: E402
from dal_dist.pool import REJECTS_FILE, ingest_image_folder, ingest_image_list, read_pool_meta  # noqa: E402
from dal_dist.pool.ingest import MAX_WORKERS, IngestProgress, check_workers  # noqa: E402


@pytest.fixture(scope="module")
def photo_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two classes of real photos at different sizes and formats, plus files that must become rejects."""
    root = tmp_path_factory.mktemp("photos")
    sources = [skimage_data.astronaut(), skimage_data.coffee(), skimage_data.chelsea(), skimage_data.rocket(),
               skimage_data.camera()]
    for i in range(14):
        img = Image.fromarray(sources[i % len(sources)])
        img = img.resize((img.width * (2 + i % 3) // 4, img.height * (2 + i % 3) // 4))
        cls = root / ("cats" if i % 2 else "things")
        cls.mkdir(exist_ok=True)
        suffix = (".jpg", ".png", ".tif")[i % 3]  # TIFFs are re-encoded to PNG by the workers
        img.save(cls / f"{i:02d}{suffix}")
    good = (root / "things" / "00.jpg").read_bytes()
    (root / "things" / "03-truncated.jpg").write_bytes(good[: len(good) // 3])
    (root / "cats" / "05-empty.jpg").write_bytes(b"")
    (root / "cats" / "07-notes.txt").write_text("not an image\n")
    (root / "things" / "09-fake.png").write_text("text with an image suffix\n")
    return root


def _pool(out: Path) -> tuple[list[dict], dict[int, str], dict]:
    """(rows in file order, rejects by id, meta without timings) of a published pool."""
    rows = [r for f in sorted(out.glob("*.parquet")) if f.name != REJECTS_FILE for r in pq.read_table(f).to_pylist()]
    rej = pq.read_table(out / REJECTS_FILE).to_pydict()
    meta = {k: v for k, v in read_pool_meta(out).items() if "time" not in k and "second" not in k}
    return rows, dict(zip(*rej.values())), meta


@pytest.mark.parametrize("row_group_rows", [4096, 4])  # 4: several chunks, read-ahead across their borders
def test_folder_pool_is_the_same_for_one_and_four_threads(photo_folder: Path, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch, row_group_rows: int) -> None:
    monkeypatch.setattr(ingest_mod, "ROW_GROUP_ROWS", row_group_rows)
    one = ingest_image_folder(photo_folder, tmp_path / "one", workers=1)
    four = ingest_image_folder(photo_folder, tmp_path / "four", workers=4)
    assert (one.rows, one.rejects) == (four.rows, four.rejects) == (14, 4)
    rows1, rej1, meta1 = _pool(tmp_path / "one")
    rows4, rej4, meta4 = _pool(tmp_path / "four")
    assert rows1 == rows4 and rej1 == rej4 and meta1 == meta4
    assert [r["id"] for r in rows1] == sorted(set(range(18)) - set(rej1))  # ids follow sorted paths, rejects too
    paths = sorted(p.relative_to(photo_folder).as_posix() for p in photo_folder.rglob("*") if p.is_file())
    assert [r["path"] for r in rows1] == [p for i, p in enumerate(paths) if i not in rej1]
    by_path = {paths[i]: reason for i, reason in rej1.items()}
    assert "corrupt" in by_path["things/03-truncated.jpg"] and "corrupt" in by_path["cats/05-empty.jpg"]
    assert "not an image file (suffix .txt)" in by_path["cats/07-notes.txt"]
    assert "corrupt" in by_path["things/09-fake.png"]
    jpg = next(r for r in rows1 if r["path"] == "things/00.jpg")
    assert jpg["image"] == (photo_folder / "things" / "00.jpg").read_bytes()  # JPEG bytes kept as they are


def test_image_list_is_the_same_for_one_and_four_threads(photo_folder: Path, tmp_path: Path) -> None:
    files = sorted(p for p in photo_folder.rglob("*") if p.is_file())
    lines = [f"{p.relative_to(photo_folder).as_posix()},{p.parent.name}" for p in reversed(files)]
    (photo_folder / "list.csv").write_text("path,label\n" + "\n".join(lines + ["missing.jpg,cats"]) + "\n")
    try:
        one = ingest_image_list(photo_folder / "list.csv", tmp_path / "one", workers=1)
        four = ingest_image_list(photo_folder / "list.csv", tmp_path / "four", workers=4)
    finally:
        (photo_folder / "list.csv").unlink()
    assert (one.rows, one.rejects) == (four.rows, four.rejects) == (14, 5)
    assert _pool(tmp_path / "one") == _pool(tmp_path / "four")
    rows, rej, _ = _pool(tmp_path / "one")
    assert [r["path"] for r in rows][:2] == [lines[0].split(",")[0], lines[1].split(",")[0]]  # list order
    assert "missing.jpg" in rej[len(lines)] and "No such file" in rej[len(lines)]


def test_progress_goes_to_stderr_only_when_asked(photo_folder: Path, tmp_path: Path,
                                                 capfd: pytest.CaptureFixture[str]) -> None:
    ingest_image_folder(photo_folder, tmp_path / "quiet", workers=2)
    assert capfd.readouterr() == ("", "")
    ingest_image_folder(photo_folder, tmp_path / "loud", workers=2, progress=True)
    out, err = capfd.readouterr()
    assert out == "" and err.count("\n") >= 1
    last = err.splitlines()[-1]
    assert last.startswith("ingest: 18/18 files in ") and "files/s" in last and last.endswith(", 4 rejects")


def test_progress_lines_count_files_and_rejects(capfd: pytest.CaptureFixture[str]) -> None:
    meter = IngestProgress(12_345, every=0.0)  # every update prints (the ingest uses one second)
    meter.update(1, 0)
    meter.update(1_233, 3)
    meter.done()
    lines = capfd.readouterr().err.splitlines()
    assert lines[0].startswith("ingest: 1/12,345 files (") and lines[0].endswith("files/s), 0 rejects")
    assert lines[1].startswith("ingest: 1,234/12,345 files (") and lines[1].endswith(", 3 rejects")
    assert lines[2].startswith("ingest: 1,234/12,345 files in ") and len(lines) == 3


def test_workers_are_checked_before_anything_is_written(photo_folder: Path, tmp_path: Path) -> None:
    assert 1 <= check_workers(None) <= 32 and check_workers(3) == 3
    for bad in (0, -1, MAX_WORKERS + 1, 10**12, True, 2.0):
        with pytest.raises(DalDistError, match=r"workers: expected an integer thread count in 1\.\.256"):
            ingest_image_folder(photo_folder, tmp_path / "out", workers=bad)  # type: ignore[arg-type]
    assert not (tmp_path / "out").exists()


def test_a_failed_write_publishes_nothing_and_leaves_no_reader_thread(photo_folder: Path, tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    from dal_dist.pool.write import PoolWriter

    monkeypatch.setattr(ingest_mod, "ROW_GROUP_ROWS", 2)
    calls = []

    def failing_write(self: PoolWriter, batch: object) -> None:
        calls.append(1)
        if len(calls) == 2:
            raise OSError("disk full")

    monkeypatch.setattr(PoolWriter, "write", failing_write)
    with pytest.raises(OSError, match="disk full"):
        ingest_image_folder(photo_folder, tmp_path / "out", workers=4)
    assert not any(t.name.startswith("dal-dist-ingest") for t in threading.enumerate())
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_cli_shows_progress_by_default_and_takes_workers(photo_folder: Path, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from dal_dist.cli.main import app

    base = ["pool", "ingest", "--format", "image-folder", "--root", str(photo_folder)]
    res = CliRunner().invoke(app, [*base, "--out", str(tmp_path / "a"), "--workers", "2"])
    assert res.exit_code == 0, res.output
    assert "ingest: 18/18 files in " in res.stderr and "ingest:" not in res.stdout
    assert "ingested: 14 rows" in res.stdout
    res = CliRunner().invoke(app, [*base, "--out", str(tmp_path / "b"), "--no-progress"])
    assert res.exit_code == 0, res.output
    assert res.stderr == "" and "ingested: 14 rows" in res.stdout
    assert _pool(tmp_path / "a") == _pool(tmp_path / "b")
    np.savez(tmp_path / "d.npz", x=np.zeros((2, 4, 4), np.uint8))
    res = CliRunner().invoke(app, ["pool", "ingest", "--format", "npz", "--file", str(tmp_path / "d.npz"),
                                   "--out", str(tmp_path / "c"), "--workers", "2"])
    assert res.exit_code != 0 and "--workers applies to --format image-folder and image-list" in str(res.exception)
