"""Ingest of real photos: unlabeled trees, image lists (CSV), and bad files as rejects with reasons."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

skimage_data = pytest.importorskip("skimage.data")
from PIL import Image  # noqa: E402

from dal_dist.errors import DalDistError  # noqa: E402
from dal_dist.pool import (  # noqa: E402
    REJECTS_FILE, decode_photos, ingest_image_folder, ingest_image_list, iter_batches, read_pool_meta,
)


def png_header_bomb(w: int = 30000, h: int = 30000) -> bytes:
    """A PNG whose header claims w×h pixels: Pillow's decompression-bomb guard refuses it on open."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b""))


def save(arr: np.ndarray, path: Path, **kw) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path, **kw)


def _rows(pool: Path) -> dict:
    t = {}
    for rb in iter_batches(pool):
        for row in rb.to_pylist():
            t[row["id"]] = row
    return t


def test_unlabeled_tree_sub_folders_are_not_classes(tmp_path):
    root = tmp_path / "photos"
    save(skimage_data.astronaut(), root / "2019" / "a.jpg")
    save(skimage_data.coffee(), root / "2019" / "trip" / "b.png")
    save(skimage_data.camera(), root / "2020" / "c.png")
    save(skimage_data.chelsea(), root / "d.jpg")
    r = ingest_image_folder(root, tmp_path / "pool", unlabeled=True)
    assert r.rows == 4 and r.rejects == 0
    rows = _rows(tmp_path / "pool")
    assert sorted(x["path"] for x in rows.values()) == ["2019/a.jpg", "2019/trip/b.png", "2020/c.png", "d.jpg"]
    assert all("label" not in x for x in rows.values())
    meta = read_pool_meta(tmp_path / "pool")
    assert meta["classes"] == [] and meta["num_classes"] is None and "height" not in meta  # mixed sizes
    labeled = ingest_image_folder(root, tmp_path / "pool2")  # without the flag: 2019/2020 are classes
    assert read_pool_meta(tmp_path / "pool2")["classes"] == ["2019", "2020"] and labeled.rows == 4


def test_image_list_paths_labels_and_rejects(tmp_path):
    save(skimage_data.astronaut(), tmp_path / "img" / "a.jpg")
    save(skimage_data.coffee(), tmp_path / "img" / "b.png")
    save(skimage_data.logo(), tmp_path / "elsewhere.png")  # RGBA
    (tmp_path / "img" / "bomb.png").write_bytes(png_header_bomb())
    good = (tmp_path / "img" / "a.jpg").read_bytes()
    (tmp_path / "img" / "trunc.jpg").write_bytes(good[: len(good) // 3])
    (tmp_path / "img" / "empty.jpg").write_bytes(b"")
    csv = tmp_path / "list.csv"
    csv.write_text("path,label\nimg/a.jpg,cat\nimg/b.png,dog\n"
                   f"{tmp_path / 'elsewhere.png'},\nimg/bomb.png,cat\nimg/trunc.jpg,dog\nimg/empty.jpg,cat\n"
                   "img/missing.png,dog\n")
    r = ingest_image_list(csv, tmp_path / "pool")
    assert r.rows == 3 and r.rejects == 4
    rows = _rows(tmp_path / "pool")
    assert [rows[i]["label"] for i in (0, 1, 2)] == [0, 1, None]
    assert rows[0]["path"] == "img/a.jpg"
    meta = read_pool_meta(tmp_path / "pool")
    assert meta["classes"] == ["cat", "dog"] and meta["num_classes"] == 2
    rej = dict(zip(*pq.read_table(tmp_path / "pool" / REJECTS_FILE).to_pydict().values()))
    assert set(rej) == {3, 4, 5, 6}
    assert "decompression bomb" in rej[3] and "img/bomb.png" in rej[3]
    assert "corrupt" in rej[4] and "corrupt" in rej[5]
    assert "img/missing.png" in rej[6] and "No such file" in rej[6]
    dec = decode_photos(next(iter_batches(tmp_path / "pool")), 64, 3)  # mixed sizes and modes, one batch
    assert dec.images.shape == (3, 64, 64, 3) and len(dec.reject_ids) == 0


def test_image_list_integer_labels_and_bad_lines(tmp_path):
    save(skimage_data.chelsea(), tmp_path / "c.jpg")
    (tmp_path / "ok.csv").write_text("c.jpg,3\nc.jpg\n")
    ingest_image_list(tmp_path / "ok.csv", tmp_path / "pool")
    assert read_pool_meta(tmp_path / "pool")["num_classes"] == 4
    (tmp_path / "bad.csv").write_text("c.jpg,1,extra\n")
    with pytest.raises(DalDistError, match=r"bad.csv: line 1: expected `path\[,label\]`"):
        ingest_image_list(tmp_path / "bad.csv", tmp_path / "pool3")
    (tmp_path / "neg.csv").write_text("c.jpg,-1\n")
    with pytest.raises(DalDistError, match="must be >= 0"):
        ingest_image_list(tmp_path / "neg.csv", tmp_path / "pool4")
    (tmp_path / "none.csv").write_text("path,label\n")
    with pytest.raises(DalDistError, match="no rows"):
        ingest_image_list(tmp_path / "none.csv", tmp_path / "pool5")
    assert not (tmp_path / "pool3").exists() or not any((tmp_path / "pool3").iterdir())


def test_cli_ingest_image_list_and_unlabeled(tmp_path):
    from typer.testing import CliRunner

    from dal_dist.cli.main import app

    save(skimage_data.chelsea(), tmp_path / "t" / "x" / "c.jpg")
    (tmp_path / "l.csv").write_text("t/x/c.jpg,0\n")
    runner = CliRunner()
    res = runner.invoke(app, ["pool", "ingest", "--format", "image-list", "--file", str(tmp_path / "l.csv"),
                              "--out", str(tmp_path / "p1")])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["pool", "ingest", "--format", "image-folder", "--unlabeled", "--root",
                              str(tmp_path / "t"), "--out", str(tmp_path / "p2")])
    assert res.exit_code == 0, res.output
    assert read_pool_meta(tmp_path / "p2")["classes"] == []
    res = runner.invoke(app, ["pool", "ingest", "--format", "npz", "--unlabeled", "--file",
                              str(tmp_path / "l.csv"), "--out", str(tmp_path / "p3")])
    assert res.exit_code != 0 and "--unlabeled applies to --format image-folder" in str(res.exception)
