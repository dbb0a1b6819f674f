"""Batched JPEG decode on a torch device (`pool.jpeg`) against the host photo path, on real photos (scikit-image).

Run on device "cpu" (torchvision's libjpeg-turbo), which is what a machine without a GPU can check; the
CUDA test at the end compares nvJPEG with it where a GPU is visible. Tolerances, measured here on the 18
photos below: against torchvision's own eval transform on a full Pillow decode (Resize(round(S/0.875)) +
CenterCrop) the device path is within 1 level everywhere for RGB (mean 0.003); grey models read libjpeg's
Y channel where Pillow converts clipped RGB to L: mean 0.05, worst image 0.41, single saturated pixels up
to 11. Against `decode_photos` it differs only where the host path decodes at reduced size (PIL draft,
large reductions: the 32-pixel cases), by 0.25 levels on average over the batch and 2.4 on the worst
image; the bounds are 0.5 and 4.
"""

from __future__ import annotations

import io
import re

import numpy as np
import pyarrow as pa
import pytest
import torch

skimage_data = pytest.importorskip("skimage.data")
transforms = pytest.importorskip("torchvision.transforms")
from PIL import Image  # noqa: E402

from dal_dist.pool import decode_images, decode_photos, decode_photos_on_device  # noqa: E402
from dal_dist.pool import jpeg as jpeg_mod  # noqa: E402
from dal_dist.pool.jpeg import device_jpeg_size, is_jpeg  # noqa: E402

PHOTOS = ["astronaut", "chelsea", "coffee", "camera", "rocket", "hubble_deep_field"]  # camera: grey


def encode(arr: np.ndarray, fmt: str = "JPEG", **kw) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format=fmt, **({"quality": 90} if fmt == "JPEG" else {}) | kw)
    return buf.getvalue()


def scaled(name: str, scale: float) -> np.ndarray:
    img = Image.fromarray(getattr(skimage_data, name)())
    return np.asarray(img.resize((max(8, int(img.width * scale)), max(8, int(img.height * scale)))))


@pytest.fixture(scope="module")
def jpegs() -> list[bytes]:
    """18 JPEGs of mixed sizes (about 40 to 390 pixels a side), colour and grey."""
    return [encode(scaled(name, scale)) for name in PHOTOS for scale in (0.1, 0.3, 0.6)]


def batch(blobs: list[bytes | None], ids: np.ndarray | None = None, labels: list | None = None) -> pa.RecordBatch:
    n = len(blobs)
    ids = np.arange(n) * 7 + 100 if ids is None else ids  # not row numbers: results must map back by row
    cols = {"id": pa.array(ids, pa.int64()), "image": pa.array(blobs, pa.binary())}
    if labels is not None:
        cols["label"] = pa.array(labels, pa.int64())
    return pa.record_batch(cols)


def reasons(rs: list[str]) -> list[str]:
    return [re.sub(r" at 0x[0-9a-f]+", "", r) for r in rs]  # PIL names the BytesIO object by address


def assert_same_rows(got, want) -> None:
    """Same ids, labels, rejects and reasons as `decode_photos`, images of the same shape and dtype."""
    np.testing.assert_array_equal(got.ids, want.ids)
    np.testing.assert_array_equal(got.reject_ids, want.reject_ids)
    assert reasons(got.reject_reasons) == reasons(want.reject_reasons)
    if want.labels is None:
        assert got.labels is None
    else:
        np.testing.assert_array_equal(got.labels, want.labels)
    assert isinstance(got.images, torch.Tensor) and got.images.dtype == torch.uint8
    assert tuple(got.images.shape) == want.images.shape


def full_decode_reference(blob: bytes, size: int, mode: str) -> np.ndarray:
    """torchvision's ImageNet eval transform on a full Pillow decode (no draft)."""
    tf = transforms.Compose([transforms.Resize(round(size / 0.875)), transforms.CenterCrop(size)])
    arr = np.asarray(tf(Image.open(io.BytesIO(blob)).convert(mode)))
    return arr[:, :, None] if arr.ndim == 2 else arr


@pytest.mark.parametrize("size,channels", [(224, 3), (64, 3), (32, 3), (32, 1), (32, 4)])
def test_device_path_on_cpu_matches_the_pil_path(jpegs, size, channels):
    rb = batch(jpegs, labels=list(range(len(jpegs))))
    want = decode_photos(rb, size, channels)
    got = decode_photos_on_device(rb, size, channels, "cpu")
    assert_same_rows(got, want)
    assert len(got.ids) == len(jpegs)
    diff = np.abs(got.images.numpy().astype(int) - want.images.astype(int))
    assert diff.mean() <= 0.5
    assert diff.reshape(len(diff), -1).mean(axis=1).max() <= 4
    if channels == 4:
        assert (got.images[..., 3] == 255).all()  # JPEGs have no alpha: opaque, as Pillow's RGB -> RGBA
    # Against a full decode it is the eval transform itself (the host path's draft is the approximation).
    mode = {1: "L", 3: "RGB", 4: "RGBA"}[channels]
    ref = np.stack([full_decode_reference(b, size, mode) for b in jpegs])
    full = np.abs(got.images.numpy().astype(int) - ref.astype(int))
    if channels == 1:
        assert full.mean() <= 0.1 and full.reshape(len(full), -1).mean(axis=1).max() <= 1
    else:
        assert full.max() <= 1 and full.mean() <= 0.01


def test_rows_the_device_cannot_take_go_through_the_host_path_unchanged(jpegs):
    """EXIF-rotated and CMYK JPEGs, PNGs, raw pixels, corrupt/truncated/non-image bytes, nulls: the same
    images (bit for bit), rejects and reasons as `decode_photos`; the plain JPEGs around them on the device."""
    photo = scaled("astronaut", 0.2)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise to display
    rotated = encode(photo[:, 20:], exif=exif.tobytes())
    cmyk = io.BytesIO()
    Image.fromarray(photo).convert("CMYK").save(cmyk, format="JPEG")
    truncated = jpegs[0][: len(jpegs[0]) // 2]
    garbage = b"\xff\xd8\xff" + b"not a jpeg at all" * 4
    trailing = jpegs[1] + b"\x00" * 16  # valid for Pillow, but not ending in EOI: taken by the host path
    blobs = [jpegs[0], rotated, encode(photo, "PNG"), cmyk.getvalue(), jpegs[2], truncated, garbage, None,
             b"plain text", trailing, encode(scaled("camera", 0.1), "PNG"), jpegs[3]]
    assert [device_jpeg_size(b) is not None for b in blobs if b is not None] == [
        True, False, False, False, True, False, False, False, False, False, True]
    assert is_jpeg(garbage) and not is_jpeg(blobs[2])
    rb = batch(blobs, labels=[i if i % 3 else None for i in range(len(blobs))])
    for size, channels in ((48, 3), (32, 1)):
        want = decode_photos(rb, size, channels)
        got = decode_photos_on_device(rb, size, channels, "cpu")
        assert_same_rows(got, want)
        np.testing.assert_array_equal(want.reject_ids, 100 + 7 * np.arange(5, 9))  # truncated, garbage, null, text
        host_rows = [k for k, i in enumerate(got.ids) if (i - 100) // 7 in (1, 2, 3, 9, 10)]
        np.testing.assert_array_equal(got.images.numpy()[host_rows], want.images[host_rows])


def test_batches_without_device_jpegs_are_the_host_result_as_it_is():
    """Raw pixels, PNGs, empty batches: `decode_photos`' own result (host images, for the scorer's pinned copy)."""
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(5, 32, 32, 3), dtype=np.uint8)
    rb = pa.record_batch({"id": pa.array(np.arange(5), pa.int64()), "image": pa.array([r.tobytes() for r in x]),
                          "height": pa.array([32] * 5, pa.int32()), "width": pa.array([32] * 5, pa.int32()),
                          "channels": pa.array([3] * 5, pa.int32())})
    got = decode_photos_on_device(rb, 32, 3, "cpu")
    assert isinstance(got.images, np.ndarray)
    np.testing.assert_array_equal(got.images, decode_images(rb, size=(32, 32), channels=3).images)
    pngs = batch([encode(scaled("coffee", 0.1), "PNG"), encode(scaled("camera", 0.1), "PNG"), b"\xff\xd8\xff"])
    got, want = decode_photos_on_device(pngs, 32, 3, "cpu"), decode_photos(pngs, 32, 3)
    np.testing.assert_array_equal(got.images, want.images)
    assert reasons(got.reject_reasons) == reasons(want.reject_reasons) and len(got.reject_ids) == 1
    empty = decode_photos_on_device(rb.slice(0, 0), 32, 3, "cpu")
    assert empty.images.shape == (0, 32, 32, 3) and len(empty.ids) == len(empty.reject_ids) == 0


def test_model_size_jpeg_is_taken_as_it_is():
    """An S×S photo is not resized (as the host path): only the codec's rounding separates the two."""
    photo = np.asarray(Image.fromarray(skimage_data.coffee()).resize((32, 32)))
    blob = encode(photo, quality=100)
    got = decode_photos_on_device(batch([blob]), 32, 3, "cpu").images.numpy()[0]
    np.testing.assert_array_equal(got, decode_photos(batch([blob]), 32, 3).images[0])


def test_chunks_and_a_failing_chunk_give_the_same_rows(jpegs, monkeypatch):
    """Small decode chunks, and a chunk torchvision refuses (retried row by row, the refused row decoded by
    the host path), give the same ids and images as one call."""
    rb = batch(jpegs)
    whole = decode_photos_on_device(rb, 40, 3, "cpu")
    monkeypatch.setattr(jpeg_mod, "DECODE_BYTES_BUDGET", 200_000)  # one or two photos per call
    chunked = decode_photos_on_device(rb, 40, 3, "cpu")
    np.testing.assert_array_equal(chunked.ids, whole.ids)
    np.testing.assert_array_equal(chunked.images.numpy(), whole.images.numpy())

    refused = len(jpegs[4])
    real = jpeg_mod._decode
    calls = []

    def flaky(tensors, channels, device):
        calls.append(len(tensors))
        if any(len(t) == refused for t in tensors):
            raise RuntimeError("decode_jpeg: simulated nvJPEG failure")
        return real(tensors, channels, device)

    monkeypatch.setattr(jpeg_mod, "_decode", flaky)
    got = decode_photos_on_device(rb, 40, 3, "cpu")
    want = decode_photos(rb, 40, 3)
    assert_same_rows(got, want)
    np.testing.assert_array_equal(got.images.numpy()[4], want.images[4])  # the refused row: the host's pixels
    others = [k for k in range(len(jpegs)) if k != 4]
    np.testing.assert_array_equal(got.images.numpy()[others], whole.images.numpy()[others])
    assert 1 in calls and max(calls) > 1  # the failing chunk was retried row by row


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (nvJPEG)")
@pytest.mark.parametrize("size,channels", [(224, 3), (32, 3), (32, 1)])
def test_cuda_matches_the_cpu_device_path(jpegs, size, channels):
    photo = scaled("astronaut", 0.2)
    exif = Image.Exif()
    exif[0x0112] = 3
    blobs = [*jpegs, encode(photo, exif=exif.tobytes()), encode(photo, "PNG"), b"\xff\xd8\xffbroken", None,
             encode(photo, progressive=True)]
    rb = batch(blobs)
    cpu = decode_photos_on_device(rb, size, channels, "cpu")
    cuda = decode_photos_on_device(rb, size, channels, "cuda")
    assert cuda.images.device.type == "cuda"
    assert_same_rows(cuda, decode_photos(rb, size, channels))
    diff = np.abs(cuda.images.cpu().numpy().astype(int) - cpu.images.numpy().astype(int))
    # nvJPEG's IDCT and chroma upsampling are not libjpeg-turbo's: a level or two, not a different image.
    assert diff.mean() <= 1.5
    assert diff.reshape(len(diff), -1).mean(axis=1).max() <= 4
