"""Pool format: ingest of real MNIST, image folders, npz, synth reproducibility, and every bad input."""

from __future__ import annotations

import gzip
import io
import json
import warnings
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from dal_dist.errors import DalDistError
from dal_dist.pool import (
    DECODE_COLUMNS, META_FILE, REJECTS_FILE, PoolWriter, decode_images, ingest_image_folder, ingest_mnist_idx,
    ingest_npz, iter_batches, pool_files, pool_info, pool_schema, raw_image_batch, validate_pool, write_pool,
)
from dal_dist.pool_synth import SYNTH_BLOCK, load_seed_digits, synth_pool

MNIST_TEST_HISTOGRAM = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


def _png(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def _decode_all(path: Path, **kw) -> tuple[np.ndarray, np.ndarray]:
    parts = [decode_images(b, **kw) for b in iter_batches(path, DECODE_COLUMNS)]
    assert all(len(p.reject_ids) == 0 for p in parts)
    return np.concatenate([p.ids for p in parts]), np.concatenate([p.images for p in parts])


# ------------------------------------------------------------------------------------------ ingest
def test_ingest_real_mnist_test_set(mnist_test_dir: Path, tmp_path: Path) -> None:
    images, labels = mnist_test_dir / "t10k-images-idx3-ubyte.gz", mnist_test_dir / "t10k-labels-idx1-ubyte.gz"
    result = ingest_mnist_idx(images, labels, tmp_path / "pool")
    assert (result.rows, result.rejects) == (10_000, 0)
    info = validate_pool(tmp_path / "pool")
    assert info.rows == 10_000 and info.num_classes == 10 and info.image_shape == (28, 28, 1)
    assert [info.label_counts[k] for k in range(10)] == MNIST_TEST_HISTOGRAM
    with gzip.open(images, "rb") as f:
        idx_pixels = np.frombuffer(f.read()[16:], dtype=np.uint8).reshape(10_000, 28, 28)
    ids, decoded = _decode_all(tmp_path / "pool")
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
    np.testing.assert_array_equal(_decode_all(tmp_path / "a")[1][..., 0], px)
    np.testing.assert_array_equal(_decode_all(tmp_path / "b")[1][..., 0], px)
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
    (root / "ant" / "broken.png").write_bytes(_png(imgs["zebra/a.png"])[:40])
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
    ids, images = _decode_all(tmp_path / "pool")
    np.testing.assert_array_equal(ids, [0, 1, 3, 5])
    np.testing.assert_array_equal(images[..., 0], np.rint(x[[0, 1, 3, 5]] * 255).astype(np.uint8))
    assert validate_pool(tmp_path / "pool").label_counts == {0: 2, 1: 1, 2: 1}


def test_ingest_npz_uint8_hwc_and_shape_errors(tmp_path: Path) -> None:
    x = np.random.default_rng(3).integers(0, 256, size=(3, 4, 5, 3), dtype=np.uint8)
    np.savez(tmp_path / "rgb.npz", x=x)
    ingest_npz(tmp_path / "rgb.npz", tmp_path / "pool")
    np.testing.assert_array_equal(_decode_all(tmp_path / "pool")[1], x)
    assert not validate_pool(tmp_path / "pool").has_label
    np.savez(tmp_path / "chw.npz", x=np.zeros((3, 3, 8, 8), np.uint8))
    with pytest.raises(DalDistError, match=r"chw.npz: array `x` has shape \(3, 3, 8, 8\).*channels-first"):
        ingest_npz(tmp_path / "chw.npz", tmp_path / "p2")
    np.savez(tmp_path / "nox.npz", images=x)
    with pytest.raises(DalDistError, match=r"nox.npz: missing array `x`"):
        ingest_npz(tmp_path / "nox.npz", tmp_path / "p3")


def test_writer_layout_is_independent_of_write_chunking(tmp_path: Path) -> None:
    images = np.random.default_rng(4).integers(0, 256, size=(23, 2, 2, 1), dtype=np.uint8)
    schema = pool_schema(has_label=False)
    outs = []
    for chunk in (1, 5, 23):
        out = tmp_path / f"c{chunk}"
        with PoolWriter(out, schema, file_rows=10, row_group_rows=4) as w:
            for s in range(0, 23, chunk):
                w.write(raw_image_batch(np.arange(s, min(23, s + chunk)), images[s:s + chunk], schema=schema))
            w.close({})
        outs.append(out)
    for out in outs:
        files = pool_files(out)
        assert [pq.ParquetFile(f).metadata.num_rows for f in files] == [10, 10, 3]
        md = pq.ParquetFile(files[0]).metadata
        assert [md.row_group(i).num_rows for i in range(md.num_row_groups)] == [4, 4, 2]
        assert [Path(f).read_bytes() for f in files] == [Path(f).read_bytes() for f in pool_files(outs[0])]
    with pytest.raises(DalDistError, match="already holds a pool"):
        write_pool(outs[0], images)


# ------------------------------------------------------------------------------------------- synth
def test_synth_is_reproducible_across_chunk_sizes_and_deforms_seeds(tmp_path: Path) -> None:
    n = 2 * SYNTH_BLOCK + 300  # two full blocks and a partial one
    synth_pool(n, tmp_path / "a", seed=7, chunk_size=SYNTH_BLOCK)
    synth_pool(n, tmp_path / "b", seed=7, chunk_size=4 * SYNTH_BLOCK)
    synth_pool(n, tmp_path / "c", seed=8)
    ta, tb, tc = (pq.read_table(tmp_path / d) for d in "abc")
    assert ta.equals(tb)
    def file_bytes(d: str) -> list[bytes]:
        return [Path(f).read_bytes() for f in pool_files(tmp_path / d)]

    assert file_bytes("a") == file_bytes("b")
    assert not ta.column("image").equals(tc.column("image"))
    labels = ta.column("label").to_numpy()
    assert labels.min() >= 0 and labels.max() <= 9 and len(np.unique(labels)) == 10
    seeds, _ = load_seed_digits()
    seed_bytes = {s.astype(np.uint8).tobytes() for s in seeds}
    synth_bytes = ta.column("image").to_pylist()
    assert sum(b in seed_bytes for b in synth_bytes) == 0  # every image is deformed
    info = validate_pool(tmp_path / "a")
    assert info.rows == n and info.num_classes == 10 and info.image_shape == (28, 28, 1)
    _, images = _decode_all(tmp_path / "a")
    assert 20 < images.mean() < 80  # digits on black, not blank or saturated (MNIST mean is ~33)


# ------------------------------------------------------------------------------------------ decode
def _batch(rows: list[dict]) -> pa.RecordBatch:
    schema = pa.schema([("id", pa.int64()), ("image", pa.binary()), ("height", pa.int32()),
                        ("width", pa.int32()), ("channels", pa.int32()), ("label", pa.int64())])
    return pa.RecordBatch.from_pylist(rows, schema=schema)


def test_decode_rejects_bad_rows_and_keeps_the_rest() -> None:
    good = np.arange(784, dtype=np.uint8).reshape(28, 28)
    rows = [
        {"id": 10, "image": good.tobytes(), "height": 28, "width": 28, "channels": 1, "label": 3},
        {"id": 11, "image": b"definitely not an image", "label": 4},
        {"id": 12, "image": good.tobytes()[:780], "height": 28, "width": 28, "channels": 1, "label": 5},
        {"id": 13, "image": None, "height": 28, "width": 28, "channels": 1},
        {"id": 14, "image": _png(good), "label": None},
        {"id": 15, "image": good.tobytes(), "height": 28, "width": None, "channels": 1},
        {"id": 16, "image": _png(good)[:60]},
    ]
    d = decode_images(_batch(rows))
    np.testing.assert_array_equal(d.ids, [10, 14])
    assert d.images.shape == (2, 28, 28, 1)
    np.testing.assert_array_equal(d.images[:, :, :, 0], [good, good])
    np.testing.assert_array_equal(d.labels, [3, -1])
    reasons = dict(zip(d.reject_ids.tolist(), d.reject_reasons))
    assert reasons[11].startswith("image: corrupt PNG/JPEG bytes (cannot identify image file")
    assert reasons[12] == "image: 780 bytes, expected 28*28*1=784"
    assert reasons[13] == "image: null"
    assert reasons[15].startswith("height/width/channels: partly null")
    assert reasons[16].startswith("image: corrupt PNG/JPEG bytes (")


def test_decode_resizes_and_converts_channels_to_the_target() -> None:
    small = np.full((14, 14, 3), 200, np.uint8)
    rows = [
        {"id": 1, "image": np.zeros((28, 28, 1), np.uint8).tobytes(), "height": 28, "width": 28, "channels": 1},
        {"id": 2, "image": small.tobytes(), "height": 14, "width": 14, "channels": 3},
        {"id": 3, "image": _png(np.full((30, 20), 7, np.uint8))},
    ]
    d = decode_images(_batch(rows), size=(16, 16), channels=3)
    assert d.images.shape == (3, 16, 16, 3) and len(d.reject_ids) == 0
    assert (d.images[1] == 200).all() and (d.images[2] == 7).all()
    first = decode_images(_batch(rows))  # no target: the first row's shape
    assert first.images.shape == (3, 28, 28, 1)
    assert (first.images[1] == 200).all()


def test_decode_fast_path_matches_per_row_reference() -> None:
    images = np.random.default_rng(5).integers(0, 256, size=(50, 9, 7, 3), dtype=np.uint8)
    batch = raw_image_batch(np.arange(100, 150), images).slice(5, 40)  # non-zero offset into the buffers
    d = decode_images(batch)
    np.testing.assert_array_equal(d.ids, np.arange(105, 145))
    np.testing.assert_array_equal(d.images, images[5:45])
    assert d.images.flags.writeable


# ------------------------------------------------------------------------------- structural errors
def _tiny_pool(path: Path, ids: list[int]) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    n = len(ids)
    batch = raw_image_batch(np.array(ids), np.zeros((n, 2, 2, 1), np.uint8), np.zeros(n, np.int64))
    pq.write_table(pa.Table.from_batches([batch]), path / f"part-{ids[0]:05d}.parquet")
    return path


def test_missing_id_column_is_named(tmp_path: Path) -> None:
    pq.write_table(pa.table({"image": [b"x"], "label": [1]}), tmp_path / "p.parquet")
    with pytest.raises(DalDistError, match=r"p.parquet: missing column `id`"):
        validate_pool(tmp_path)


def test_duplicate_ids_across_files_name_the_id_and_files(tmp_path: Path) -> None:
    _tiny_pool(tmp_path, [0, 1, 2])
    _tiny_pool(tmp_path, [3, 2, 4])
    with pytest.raises(DalDistError, match=r"column `id`: 1 duplicate id\(s\), e\.g\. id 2 appears 2 times in "
                                           r".*part-00000\.parquet, .*part-00003\.parquet"):
        validate_pool(tmp_path)


def test_truncated_parquet_file_is_named(tmp_path: Path) -> None:
    _tiny_pool(tmp_path, [0, 1])
    f = tmp_path / "part-00000.parquet"
    f.write_bytes(f.read_bytes()[:-20])
    with pytest.raises(DalDistError,
                       match=r"part-00000.parquet: not a readable Parquet file \(truncated or corrupt\?\)"):
        validate_pool(tmp_path)


def test_stray_files_are_warned_and_skipped(tmp_path: Path) -> None:
    _tiny_pool(tmp_path, [0, 1])
    (tmp_path / "notes.txt").write_text("hello")
    (tmp_path / "_SUCCESS").write_text("")
    (tmp_path / ".hidden.parquet").write_text("not parquet")
    with pytest.warns(UserWarning, match=r"skipping 1 non-Parquet entry: notes.txt"):
        info = validate_pool(tmp_path)
    assert info.rows == 2 and len(info.files) == 1


def test_other_structural_errors(tmp_path: Path) -> None:
    with pytest.raises(DalDistError, match="no .parquet files"):
        pool_files(tmp_path)
    cases = {
        "nullid": (pa.table({"id": pa.array([1, None], pa.int64()), "image": [b"a", b"b"]}), r"`id` has 1 null values"),
        "strid": (pa.table({"id": ["a"], "image": [b"a"]}), r"`id` has type string, expected int64"),
        "strimg": (pa.table({"id": [1], "image": ["a"]}), r"`image` has type string, expected binary"),
        "floatlabel": (pa.table({"id": [1], "image": [b"a"], "label": [0.5]}),
                       r"`label` has type double, expected integers"),
    }
    for name, (table, msg) in cases.items():
        (tmp_path / name).mkdir()
        pq.write_table(table, tmp_path / name / "p.parquet")
        with pytest.raises(DalDistError, match=msg):
            validate_pool(tmp_path / name)
    mixed = tmp_path / "mixed"
    _tiny_pool(mixed, [0])
    pq.write_table(pa.table({"id": [5], "image": [b"a"]}), mixed / "part-00009.parquet")
    with pytest.raises(DalDistError, match=r"part-00009.parquet: schema differs from .*part-00000.parquet: `channels`"):
        validate_pool(mixed)


def test_iter_batches_skips_absent_optional_columns(tmp_path: Path) -> None:
    pq.write_table(pa.table({"id": [1, 2], "image": [_png(np.zeros((3, 3), np.uint8))] * 2}), tmp_path / "p.parquet")
    (batch,) = list(iter_batches(tmp_path, DECODE_COLUMNS))
    assert batch.schema.names == ["id", "image"]
    assert decode_images(batch).images.shape == (2, 3, 3, 1)
    with pytest.raises(DalDistError, match=r"missing column\(s\) \['embedding'\]"):
        list(iter_batches(tmp_path, ["id", "embedding"]))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert pool_info(tmp_path)["label_counts"] == {}


def test_decode_accepts_ray_style_numpy_and_pandas_batches() -> None:
    good = np.arange(12, dtype=np.uint8).reshape(2, 2, 3)
    numpy_batch = {
        "id": np.array([1, 2, 3]),
        "image": np.array([good.tobytes(), None, _png(good)], dtype=object),
        "height": np.array([2.0, 2.0, np.nan]), "width": np.array([2.0, 2.0, np.nan]),
        "channels": np.array([3.0, 3.0, np.nan]),
    }
    d = decode_images(numpy_batch)
    np.testing.assert_array_equal(d.ids, [1, 3])
    np.testing.assert_array_equal(d.images, [good, good])
    assert d.reject_reasons == ["image: null"]
    import pandas as pd

    assert decode_images(pd.DataFrame(numpy_batch)).ids.tolist() == [1, 3]
