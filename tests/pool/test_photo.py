"""The photo transform against torchvision's ImageNet eval transform, on real photos (scikit-image)."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pyarrow as pa
import pytest

skimage_data = pytest.importorskip("skimage.data")
transforms = pytest.importorskip("torchvision.transforms")
from PIL import Image  # noqa: E402

from dal_dist.pool import PhotoError, decode_images, decode_photos, photo_transform  # noqa: E402


def _encode(arr: np.ndarray, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format=fmt, **kw)
    return buf.getvalue()


def _reference(blob: bytes, size: int, mode: str = "RGB") -> np.ndarray:
    tf = transforms.Compose([transforms.Resize(round(size / 0.875)), transforms.CenterCrop(size)])
    pil = Image.open(io.BytesIO(blob)).convert(mode)
    arr = np.asarray(tf(pil))
    return arr[:, :, None] if arr.ndim == 2 else arr


PHOTOS = {  # name -> (array, format)
    "astronaut": ("astronaut", "JPEG"),
    "coffee": ("coffee", "PNG"),
    "chelsea": ("chelsea", "JPEG"),
    "camera": ("camera", "PNG"),  # grey
    "rocket": ("rocket", "JPEG"),  # 427x640, portrait
}


@pytest.mark.parametrize("name", sorted(PHOTOS))
@pytest.mark.parametrize("size", [224, 64])
def test_matches_torchvision_eval_transform(name, size):
    fn, fmt = PHOTOS[name]
    blob = _encode(getattr(skimage_data, fn)(), fmt)
    got = photo_transform(blob, size, 3)
    want = _reference(blob, size)
    assert got.shape == want.shape == (size, size, 3) and got.dtype == np.uint8
    assert np.abs(got.astype(int) - want.astype(int)).max() <= 2


def test_rgba_logo_and_grey_model():
    blob = _encode(skimage_data.logo(), "PNG")  # RGBA
    got = photo_transform(blob, 96, 3)
    assert np.abs(got.astype(int) - _reference(blob, 96).astype(int)).max() <= 2
    grey = photo_transform(_encode(skimage_data.camera(), "PNG"), 32, 1)
    assert grey.shape == (32, 32, 1)


def test_sixteen_bit_palette_cmyk_accepted():
    img16 = (skimage_data.camera().astype(np.uint16) * 257)
    blob16 = _encode(img16, "PNG")
    assert Image.open(io.BytesIO(blob16)).mode.startswith("I")
    a = photo_transform(blob16, 64, 3)
    b = photo_transform(_encode(skimage_data.camera(), "PNG"), 64, 3)
    assert np.abs(a.astype(int) - b.astype(int)).max() <= 1
    pal = Image.fromarray(skimage_data.coffee()).convert("P")
    buf = io.BytesIO()
    pal.save(buf, format="PNG")
    assert photo_transform(buf.getvalue(), 64, 3).shape == (64, 64, 3)
    cmyk = Image.fromarray(skimage_data.chelsea()).convert("CMYK")
    buf = io.BytesIO()
    cmyk.save(buf, format="JPEG")
    assert photo_transform(buf.getvalue(), 64, 3).shape == (64, 64, 3)


def test_exif_orientation_applied():
    arr = skimage_data.rocket()  # 427 (h) x 640 (w)
    pil = Image.fromarray(arr)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 CW on display
    buf = io.BytesIO()
    pil.save(buf, format="JPEG", exif=exif, quality=95)
    got = photo_transform(buf.getvalue(), 64, 3)
    upright = Image.open(io.BytesIO(buf.getvalue())).transpose(Image.Transpose.ROTATE_270)
    want = np.asarray(transforms.CenterCrop(64)(transforms.Resize(73)(upright)))
    assert np.abs(got.astype(int) - want.astype(int)).max() <= 2


def test_large_jpeg_decoded_at_reduced_size_close_to_full_decode():
    big = np.asarray(Image.fromarray(skimage_data.astronaut()).resize((2048, 2048), Image.BICUBIC))
    blob = _encode(big, "JPEG", quality=95)
    pil = Image.open(io.BytesIO(blob))
    pil.draft(None, (4 * 73, 4 * 73))
    assert pil.size[0] < 2048  # the codec really reduces
    got = photo_transform(blob, 64, 3).astype(int)
    want = _reference(blob, 64).astype(int)
    assert np.abs(got - want).mean() < 1.0 and np.abs(got - want).max() <= 12


def _png_header_bomb(w: int, h: int) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b""))


def test_bad_inputs_are_rejects_with_reasons():
    good = _encode(skimage_data.chelsea(), "JPEG")
    bomb = _png_header_bomb(30000, 30000)
    rb = pa.table({"id": pa.array([0, 1, 2, 3], pa.int64()),
                   "image": pa.array([good, bomb, good[: len(good) // 2], b""], pa.binary())})
    dec = decode_photos(rb, 64, 3)
    assert dec.ids.tolist() == [0] and dec.images.shape == (1, 64, 64, 3)
    reasons = dict(zip(dec.reject_ids.tolist(), dec.reject_reasons))
    assert set(reasons) == {1, 2, 3}
    assert "decompression bomb" in reasons[1]
    assert "corrupt" in reasons[2] and "corrupt" in reasons[3]
    with pytest.raises(PhotoError, match="decompression bomb"):
        photo_transform(bomb, 64)


def test_mixed_sizes_batch_independent_and_raw_model_size_unchanged():
    blobs = [_encode(skimage_data.astronaut(), "JPEG"), _encode(skimage_data.rocket(), "PNG"),
             _encode(skimage_data.camera(), "PNG")]
    rb = pa.table({"id": pa.array([5, 6, 7], pa.int64()), "image": pa.array(blobs, pa.binary())})
    whole = decode_photos(rb, 48, 3)
    for i in range(3):
        one = decode_photos(rb.slice(i, 1), 48, 3)
        assert np.array_equal(one.images[0], whole.images[i])
    raw = np.random.default_rng(0).integers(0, 256, (4, 48, 48, 3), dtype=np.uint8)
    rt = pa.table({"id": pa.array(range(4), pa.int64()),
                   "image": pa.array([r.tobytes() for r in raw], pa.binary()),
                   "height": pa.array([48] * 4, pa.int64()), "width": pa.array([48] * 4, pa.int64()),
                   "channels": pa.array([3] * 4, pa.int64())})
    assert np.array_equal(decode_photos(rt, 48, 3).images, decode_images(rt, size=None, channels=3).images)
    assert np.array_equal(decode_photos(rt, 48, 3).images, raw)


def test_threads_decode_the_same_pixels_and_rejects_in_row_order():
    """A GPU actor decodes a batch's rows on its CPUs in parallel: the same images, ids and rejects as one thread."""
    photos = [skimage_data.astronaut(), skimage_data.chelsea(), skimage_data.coffee(), skimage_data.camera(),
              skimage_data.rocket()]
    blobs = [_encode(p[: 300 + 17 * i, : 280 + 31 * i], "JPEG" if i % 2 else "PNG") for i, p in enumerate(photos * 3)]
    blobs[4] = blobs[4][:200]  # truncated: a reject
    blobs[9] = b"not an image"
    rb = pa.table({"id": pa.array(range(100, 100 + len(blobs)), pa.int64()), "image": pa.array(blobs, pa.binary())})
    one = decode_photos(rb, 40, 3)
    many = decode_photos(rb, 40, 3, threads=4)
    assert one.ids.tolist() == many.ids.tolist() == [i for i in range(100, 115) if i not in (104, 109)]
    assert np.array_equal(one.images, many.images)
    assert one.reject_ids.tolist() == many.reject_ids.tolist() == [104, 109]
    assert one.reject_reasons == many.reject_reasons
