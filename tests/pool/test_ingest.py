"""Pool ingest: real MNIST, IDX files, image folders and npz, and every bad input named."""

from __future__ import annotations

import gzip
import io
import json
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
