"""Decoding pool rows: bad rows become rejects, targets are met, the fast path matches, Ray-style batches work."""

from __future__ import annotations

import io

import numpy as np
import pyarrow as pa
from PIL import Image
from pool_helpers import png_bytes

from dal_dist.pool import decode_images, decode_to_shape, raw_image_batch


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
        {"id": 14, "image": png_bytes(good), "label": None},
        {"id": 15, "image": good.tobytes(), "height": 28, "width": None, "channels": 1},
        {"id": 16, "image": png_bytes(good)[:60]},
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
        {"id": 3, "image": png_bytes(np.full((30, 20), 7, np.uint8))},
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


def test_decode_accepts_ray_style_numpy_and_pandas_batches() -> None:
    good = np.arange(12, dtype=np.uint8).reshape(2, 2, 3)
    numpy_batch = {
        "id": np.array([1, 2, 3]),
        "image": np.array([good.tobytes(), None, png_bytes(good)], dtype=object),
        "height": np.array([2.0, 2.0, np.nan]), "width": np.array([2.0, 2.0, np.nan]),
        "channels": np.array([3.0, 3.0, np.nan]),
    }
    d = decode_images(numpy_batch)
    np.testing.assert_array_equal(d.ids, [1, 3])
    np.testing.assert_array_equal(d.images, [good, good])
    assert d.reject_reasons == ["image: null"]
    import pandas as pd

    assert decode_images(pd.DataFrame(numpy_batch)).ids.tolist() == [1, 3]


def test_decode_to_shape_is_decode_images_with_a_pool_shape() -> None:
    images = np.random.default_rng(6).integers(0, 256, size=(4, 6, 5, 1), dtype=np.uint8)
    batch = raw_image_batch(np.arange(4), images)
    np.testing.assert_array_equal(decode_to_shape(batch, None).images, images)
    d = decode_to_shape(batch, (3, 2, 3))
    assert d.images.shape == (4, 3, 2, 3)
    np.testing.assert_array_equal(d.images, decode_images(batch, size=(3, 2), channels=3).images)


def _encoded(arr: np.ndarray, fmt: str) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format=fmt)
    return buf.getvalue()


def test_decode_scales_16bit_png_and_tiff_instead_of_clipping() -> None:
    grey16 = np.repeat(np.linspace(0, 65535, 103).astype(np.uint16)[:, None], 4, axis=1)  # 103 grey levels
    blobs = {"png": _encoded(grey16, "PNG"), "tiff": _encoded(grey16, "TIFF"),
             "int32": _encoded(grey16.astype(np.int32), "TIFF")}
    assert [Image.open(io.BytesIO(b)).mode for b in blobs.values()] == ["I;16", "I;16", "I"]
    d = decode_images(_batch([{"id": i, "image": b} for i, b in enumerate(blobs.values())]))
    assert len(d.reject_ids) == 0 and d.images.shape == (3, 103, 4, 1)
    for img in d.images:
        np.testing.assert_array_equal(img[..., 0], grey16 >> 8)
        assert len(np.unique(img)) == 103  # clipped to 8 bits it was 2 levels (0 and 255)


def test_decode_float_tiff_reads_unit_or_byte_range_and_rejects_others() -> None:
    unit = np.linspace(0, 1, 24, dtype=np.float32).reshape(4, 6)
    rows = [
        {"id": 1, "image": _encoded(unit, "TIFF")},
        {"id": 2, "image": _encoded(unit * 200, "TIFF")},
        {"id": 3, "image": _encoded(unit * 900 - 5, "TIFF")},
        {"id": 4, "image": _encoded(np.full((4, 6), np.nan, np.float32), "TIFF")},
        {"id": 5, "image": _encoded(np.array([[0, 70000]], np.int32), "TIFF")},
    ]
    d = decode_images(_batch(rows))
    np.testing.assert_array_equal(d.ids, [1, 2])
    np.testing.assert_array_equal(d.images[0, ..., 0], np.rint(unit.astype(np.float64) * 255).astype(np.uint8))
    np.testing.assert_array_equal(d.images[1, ..., 0], np.rint(unit.astype(np.float64) * 200).astype(np.uint8))
    assert dict(zip(d.reject_ids.tolist(), d.reject_reasons)) == {
        3: "image: 32-bit float pixels -5..895 outside [0, 1] and [0, 255]",
        4: "image: 32-bit float pixels with NaN/inf values",
        5: "image: 32-bit integer pixels 0..70000 outside [0, 65535] (integer grey images are read as 16-bit)",
    }
