"""Pool ingest: real MNIST, IDX files, image folders and npz, and every bad input named."""

from __future__ import annotations

import gzip
import io
import json
import os
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image
from pool_helpers import decode_all, png_bytes

from dal_dist.errors import DalDistError
from dal_dist.pool import (
    META_FILE, REJECTS_FILE, decode_images, ingest_image_folder, ingest_mnist_idx, ingest_npz, validate_pool,
)

MNIST_TEST_HISTOGRAM = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


def test_ingest_real_mnist_test_set(mnist_test_dir: Path, tmp_path: Path) -> None:
    images, labels = mnist_test_dir / "t10k-images-idx3-ubyte.gz", mnist_test_dir / "t10k-labels-idx1-ubyte.gz"
    result = ingest_mnist_idx(images, labels, tmp_path / "pool")
    assert (result.rows, result.rejects) == (10_000, 0)
    info = validate_pool(tmp_path / "pool")
    assert info.rows == 10_000 and info.num_classes == 10 and info.image_shape == (28, 28, 1)
    assert [info.label_counts[k] for k in range(10)] == MNIST_TEST_HISTOGRAM
    with gzip.open(images, "rb") as f:
        idx_pixels = np.frombuffer(f.read()[16:], dtype=np.uint8).reshape(10_000, 28, 28)
    ids, decoded = decode_all(tmp_path / "pool")
    np.testing.assert_array_equal(ids, np.arange(10_000))
    np.testing.assert_array_equal(decoded[..., 0], idx_pixels)


def _write_idx(path: Path, magic: bytes, dims: list[int], payload: bytes, gz: bool = False) -> Path:
    data = magic + b"".join(int(d).to_bytes(4, "big") for d in dims) + payload
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


def test_ingest_idx_raw_and_gz_agree_and_bad_headers_are_named(tmp_path: Path) -> None:
    px = np.random.default_rng(0).integers(0, 256, size=(5, 4, 3), dtype=np.uint8)
    img_raw = _write_idx(tmp_path / "img", b"\x00\x00\x08\x03", [5, 4, 3], px.tobytes())
    img_gz = _write_idx(tmp_path / "img.gz", b"\x00\x00\x08\x03", [5, 4, 3], px.tobytes(), gz=True)
    lab = _write_idx(tmp_path / "lab", b"\x00\x00\x08\x01", [5], bytes([0, 1, 2, 1, 0]))
    ingest_mnist_idx(img_raw, lab, tmp_path / "a")
    ingest_mnist_idx(img_gz, None, tmp_path / "b")
    np.testing.assert_array_equal(decode_all(tmp_path / "a")[1][..., 0], px)
    np.testing.assert_array_equal(decode_all(tmp_path / "b")[1][..., 0], px)
    assert not validate_pool(tmp_path / "b").has_label

    with pytest.raises(DalDistError, match=r"img: IDX magic 00000803 is not a label file"):
        ingest_mnist_idx(img_raw, img_raw, tmp_path / "c")
    short = _write_idx(tmp_path / "short", b"\x00\x00\x08\x03", [5, 4, 3], px.tobytes()[:-7])
    with pytest.raises(DalDistError, match=r"short: truncated: header says 5 images of 4x3"):
        ingest_mnist_idx(short, None, tmp_path / "d")
    few = _write_idx(tmp_path / "few", b"\x00\x00\x08\x01", [4], bytes(4))
    with pytest.raises(DalDistError, match=r"5 images but .*few has 4 labels"):
        ingest_mnist_idx(img_raw, few, tmp_path / "e")
    (tmp_path / "junk").write_bytes(b"PK\x03\x04 not idx")
    with pytest.raises(DalDistError, match=r"junk: not an IDX file"):
        ingest_mnist_idx(tmp_path / "junk", None, tmp_path / "f")


def test_ingest_image_folder_labels_from_sorted_classes_and_rejects(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    root = tmp_path / "root"
    imgs = {}
    for cls, names in {"zebra": ["a.png", "b.png"], "ant": ["c.png", "d.bmp"]}.items():
        (root / cls).mkdir(parents=True)
        for name in names:
            arr = rng.integers(0, 256, size=(6, 5, 3), dtype=np.uint8)
            Image.fromarray(arr).save(root / cls / name)
            imgs[f"{cls}/{name}"] = arr
    (root / "ant" / "broken.png").write_bytes(png_bytes(imgs["zebra/a.png"])[:40])
    (root / "ant" / ".DS_Store").write_bytes(b"ignored")
    result = ingest_image_folder(root, tmp_path / "pool")
    assert (result.rows, result.rejects) == (4, 1)
    meta = json.loads((tmp_path / "pool" / META_FILE).read_text())
    assert meta["classes"] == ["ant", "zebra"] and meta["num_classes"] == 2
    rejects = pq.read_table(tmp_path / "pool" / REJECTS_FILE).to_pylist()
    assert len(rejects) == 1 and rejects[0]["reason"].startswith("ant/broken.png: image: corrupt PNG/JPEG bytes (")
    table = pq.read_table(tmp_path / "pool")
    by_path = dict(zip(table.column("path").to_pylist(), table.column("label").to_pylist()))
    assert by_path == {"ant/c.png": 0, "ant/d.bmp": 0, "zebra/a.png": 1, "zebra/b.png": 1}
    assert all(Image.open(io.BytesIO(b)).format == "PNG" for b in table.column("image").to_pylist())  # BMP re-encoded
    decoded = decode_images(table)
    for i, p in enumerate(table.column("path").to_pylist()):
        np.testing.assert_array_equal(decoded.images[i], imgs[p])
    assert validate_pool(tmp_path / "pool").image_shape == (6, 5, 3)


def test_ingest_npz_float_unit_range_with_nan_row_rejected(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    x = rng.random((6, 7, 8)).astype(np.float32)
    x[2, 3, 4] = np.nan
    x[4, 0, 0] = np.inf
    y = np.array([0, 1, 2, 0, 1, 2])
    np.savez(tmp_path / "d.npz", x=x, y=y)
    result = ingest_npz(tmp_path / "d.npz", tmp_path / "pool")
    assert (result.rows, result.rejects) == (4, 2)
    rejects = pq.read_table(tmp_path / "pool" / REJECTS_FILE).to_pylist()
    assert rejects == [{"id": 2, "reason": "image: NaN/inf pixel values"},
                       {"id": 4, "reason": "image: NaN/inf pixel values"}]
    ids, images = decode_all(tmp_path / "pool")
    np.testing.assert_array_equal(ids, [0, 1, 3, 5])
    np.testing.assert_array_equal(images[..., 0], np.rint(x[[0, 1, 3, 5]] * 255).astype(np.uint8))
    assert validate_pool(tmp_path / "pool").label_counts == {0: 2, 1: 1, 2: 1}


def test_ingest_npz_uint8_hwc_and_shape_errors(tmp_path: Path) -> None:
    x = np.random.default_rng(3).integers(0, 256, size=(3, 4, 5, 3), dtype=np.uint8)
    np.savez(tmp_path / "rgb.npz", x=x)
    ingest_npz(tmp_path / "rgb.npz", tmp_path / "pool")
    np.testing.assert_array_equal(decode_all(tmp_path / "pool")[1], x)
    assert not validate_pool(tmp_path / "pool").has_label
    np.savez(tmp_path / "chw.npz", x=np.zeros((3, 3, 8, 8), np.uint8))
    with pytest.raises(DalDistError, match=r"chw.npz: array `x` has shape \(3, 3, 8, 8\).*channels-first"):
        ingest_npz(tmp_path / "chw.npz", tmp_path / "p2")
    np.savez(tmp_path / "nox.npz", images=x)
    with pytest.raises(DalDistError, match=r"nox.npz: missing array `x`"):
        ingest_npz(tmp_path / "nox.npz", tmp_path / "p3")


def test_ingest_image_folder_16bit_and_float_tiffs_keep_their_grey_levels(tmp_path: Path) -> None:
    root = tmp_path / "root" / "cls"
    root.mkdir(parents=True)
    grey16 = np.repeat(np.linspace(0, 65535, 103).astype(np.uint16)[:, None], 3, axis=1)  # 103 grey levels
    unit = np.linspace(0, 1, 103 * 3, dtype=np.float32).reshape(103, 3)
    Image.fromarray(grey16).save(root / "a16.png")
    Image.fromarray(grey16).save(root / "b16.tif")
    Image.fromarray(unit).save(root / "c_float.tif")
    Image.fromarray(unit * 1000 - 1).save(root / "d_float_bad.tif")
    result = ingest_image_folder(tmp_path / "root", tmp_path / "pool")  # a float TIFF no longer aborts the ingest
    assert (result.rows, result.rejects) == (3, 1)
    rejects = pq.read_table(tmp_path / "pool" / REJECTS_FILE).to_pylist()
    assert rejects == [{"id": 3, "reason": "cls/d_float_bad.tif: image: 32-bit float pixels -1..999 "
                                           "outside [0, 1] and [0, 255]"}]
    ids, images = decode_all(tmp_path / "pool")
    np.testing.assert_array_equal(ids, [0, 1, 2])
    np.testing.assert_array_equal(images[0, ..., 0], grey16 >> 8)
    np.testing.assert_array_equal(images[1, ..., 0], grey16 >> 8)
    np.testing.assert_array_equal(images[2, ..., 0], np.rint(unit.astype(np.float64) * 255).astype(np.uint8))
    assert len(np.unique(images[0])) == 103
    assert validate_pool(tmp_path / "pool").image_shape == (103, 3, 1)


def test_ingest_image_folder_odd_entries_become_rejects_with_reasons(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "cat" / "sub").mkdir(parents=True)
    img = np.arange(12, dtype=np.uint8).reshape(3, 4)
    Image.fromarray(img).save(root / "cat" / "a.png")
    (root / "cat" / os.fsdecode(b"b\xff\xfe.png")).write_bytes(png_bytes(img))  # a non-UTF-8 file name
    (root / "cat" / "README.md").write_text("# my cats\n")
    (root / "cat" / "LICENSE").write_text("no image\n")
    os.symlink("loop2", root / "cat" / "loop1")
    os.symlink("loop1", root / "cat" / "loop2")
    os.symlink("missing.png", root / "cat" / "dangling.png")
    os.symlink("..", root / "cat" / "sub" / "up")  # a folder link back to an enclosing folder
    os.mkfifo(root / "cat" / "pipe.png")  # reading it would block forever
    result = ingest_image_folder(root, tmp_path / "pool")
    assert (result.rows, result.rejects) == (2, 7)
    assert result.reject_examples[:2] == ["cat/LICENSE: not an image file (no suffix, and not a format PIL knows)",
                                          "cat/README.md: not an image file (suffix .md)"]  # for the summary line
    table = pq.read_table(tmp_path / "pool")
    assert table.column("path").to_pylist() == ["cat/a.png", "cat/b\\xff\\xfe.png"]
    assert table.column("label").to_pylist() == [0, 0]
    rejects = {r["reason"] for r in pq.read_table(tmp_path / "pool" / REJECTS_FILE).to_pylist()}
    assert rejects == {
        "cat/LICENSE: not an image file (no suffix, and not a format PIL knows)",
        "cat/README.md: not an image file (suffix .md)",
        "cat/dangling.png: broken symlink to missing.png",
        "cat/loop1: symlink loop",
        "cat/loop2: symlink loop",
        "cat/pipe.png: not a regular file (FIFO, socket or device)",
        "cat/sub/up: symlink loop (links back to an enclosing folder)",
    }
    assert json.loads((tmp_path / "pool" / META_FILE).read_text())["classes"] == ["cat"]


def test_ingest_image_folder_follows_symlinked_folders(tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    Image.fromarray(np.zeros((2, 2), np.uint8)).save(elsewhere / "x.png")
    (tmp_path / "root" / "dog").mkdir(parents=True)
    os.symlink(elsewhere, tmp_path / "root" / "dog" / "more")
    assert ingest_image_folder(tmp_path / "root", tmp_path / "pool").rows == 1
    assert pq.read_table(tmp_path / "pool").column("path").to_pylist() == ["dog/more/x.png"]


def test_ingest_unlabeled_image_tree_makes_no_classes(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "docs").mkdir(parents=True)
    (root / "empty").mkdir()
    (root / "docs" / "notes.txt").write_text("not images")
    for name in ("a.png", "b.jpg"):
        Image.fromarray(np.full((5, 5, 3), 9, np.uint8)).save(root / name)
    result = ingest_image_folder(root, tmp_path / "pool")
    assert (result.rows, result.rejects) == (2, 1)
    info = validate_pool(tmp_path / "pool")
    assert not info.has_label and info.num_classes is None and info.label_counts == {}
    meta = json.loads((tmp_path / "pool" / META_FILE).read_text())
    assert meta["classes"] == [] and meta["num_classes"] is None
    assert pq.read_table(tmp_path / "pool" / REJECTS_FILE).column("reason").to_pylist() == [
        "docs/notes.txt: not an image file (suffix .txt)"]


@pytest.mark.parametrize("kind", ["npy", "text", "zip", "dir"])
def test_ingest_npz_refuses_other_files_in_one_line(tmp_path: Path, kind: str) -> None:
    path = tmp_path / f"x.{kind}"
    if kind == "npy":
        np.save(tmp_path / "x.npy", np.zeros((3, 4, 4), np.uint8))
    elif kind == "text":
        path.write_text("hello\n")
    elif kind == "zip":
        path.write_bytes(b"PK\x03\x04 truncated zip")
    else:
        path.mkdir()
    with pytest.raises(DalDistError) as e:
        ingest_npz(path, tmp_path / "pool")
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith(f"{path}: ")
    assert msg.endswith("expected an .npz archive with array `x` (and optional `y`), "
                        "as np.savez(file, x=x, y=y) writes")
    assert not (tmp_path / "pool").exists()
