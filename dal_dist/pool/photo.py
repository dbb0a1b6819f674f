"""Photos to model inputs: each image decoded and brought to the model's size on its own, before batching.

`photo_transform` is torchvision's ImageNet evaluation transform up to the uint8 pixels (normalization to
the model's mean/std stays in `models.preprocess`): EXIF orientation applied, any mode converted (16-bit,
float, palette, CMYK, grey+alpha, ...), the shorter side resized to round(S / 0.875) (bilinear,
antialiased: 256 for 224), the centre S×S cropped. JPEGs are decoded at a reduced size where the codec
allows (PIL `draft`, kept at least DRAFT_MARGIN times the resize target: DCT scaling is not the bilinear
filter, so the wider margin keeps the result within a level or two of a full decode). Memory is one
image at a time: a batch never holds anything bigger than S×S per row.
`decode_photos` applies it to a pool batch; images already S×S pass as they are (channels converted),
so a raw pool of the model's size decodes exactly as `decode_images` does.
"""

from __future__ import annotations

import io
from typing import Any, Mapping

import numpy as np
import pyarrow as pa

from dal_dist.pool.decode import (DecodedBatch, PixelValueError, as_8bit, as_record_batch, decode_images,
                                  pil_of_pixels, triage)

CROP_FRACTION = 0.875  # torchvision's ImageNet eval: Resize(256) + CenterCrop(224)
DRAFT_MARGIN = 4  # JPEG draft keeps both sides >= 4 x round(S / 0.875): 4000x3000 at S=224 decodes at 1/2
_MODES = {1: "L", 3: "RGB", 4: "RGBA"}


class PhotoError(ValueError):
    """An image that cannot become model input; the message is the reject reason."""


def resize_side(image_size: int) -> int:
    """The shorter side an image is resized to before the centre crop (256 for 224)."""
    return int(round(image_size / CROP_FRACTION))


def open_photo(blob: bytes, image_size: int) -> Any:
    """Encoded bytes as an upright 8-bit PIL image (L, RGB or RGBA); JPEGs decoded at reduced size when possible.

    Raises PhotoError with the reason (decompression bomb, corrupt or truncated bytes, pixels without an
    8-bit reading). Pillow's decompression-bomb guard stays on.
    """
    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        pil = Image.open(io.BytesIO(blob))
        if pil.format == "JPEG":
            side = DRAFT_MARGIN * resize_side(image_size)
            pil.draft(None, (side, side))  # DCT scaling: 1/2, 1/4, 1/8 while both sides stay >= side
        pil.load()
    except Image.DecompressionBombError as e:
        raise PhotoError(f"decompression bomb refused ({e})") from e
    except Exception as e:  # noqa: BLE001 - anything a decoder raises makes the row a reject
        # PIL's text names the in-memory file (<_io.BytesIO object at 0x...>): a reason must not vary by run.
        why = "cannot identify image file" if isinstance(e, UnidentifiedImageError) else e
        raise PhotoError(f"corrupt image bytes ({type(e).__name__}: {why})") from e
    try:
        pil = ImageOps.exif_transpose(pil)
    except Exception:  # noqa: BLE001 - unreadable EXIF: keep the stored orientation
        pass
    try:
        return as_8bit(pil)
    except PixelValueError as e:
        raise PhotoError(str(e)) from e


def fit_photo(pil: Any, image_size: int, channels: int = 3) -> np.ndarray:
    """An 8-bit PIL image as uint8 (S, S, C): mode conversion, shorter side to round(S/0.875), centre crop S."""
    from PIL import Image

    if channels not in _MODES:
        raise PhotoError(f"{channels} model input channels (expected 1, 3 or 4)")
    if pil.mode != _MODES[channels]:
        pil = pil.convert(_MODES[channels])
    w, h = pil.size
    short = resize_side(image_size)
    if w <= h:  # torchvision Resize(int): the long side is truncated, not rounded
        nw, nh = short, int(short * h / w)
    else:
        nw, nh = int(short * w / h), short
    if (nw, nh) != (w, h):
        pil = pil.resize((nw, nh), Image.BILINEAR)  # PIL's bilinear is antialiased when reducing
    top = int(round((nh - image_size) / 2.0))  # torchvision CenterCrop offsets
    left = int(round((nw - image_size) / 2.0))
    pil = pil.crop((left, top, left + image_size, top + image_size))
    arr = np.asarray(pil, dtype=np.uint8)
    return arr[:, :, None] if arr.ndim == 2 else arr


def photo_transform(image: bytes | Any, image_size: int, channels: int = 3) -> np.ndarray:
    """One photo (encoded bytes or a PIL image) as uint8 (S, S, C) model pixels; raises PhotoError with a reason.

    An image already S×S is taken as it is (channels converted), so a pool of the model's size reads the
    same whether its rows are raw or encoded, and training and scoring see the same pixels.
    """
    if isinstance(image, (bytes, bytearray, memoryview)):
        pil = open_photo(bytes(image), image_size)
    else:
        try:
            pil = as_8bit(image)
        except PixelValueError as e:
            raise PhotoError(str(e)) from e
    if pil.width < 1 or pil.height < 1:
        raise PhotoError(f"empty image {pil.width}x{pil.height}")
    if pil.size == (image_size, image_size):  # already the model's size: taken as it is, as raw rows are
        return convert_channels(pil, channels)
    return fit_photo(pil, image_size, channels)


def decode_photos(batch: pa.RecordBatch | pa.Table | Mapping[str, Any], image_size: int,
                  channels: int, threads: int = 1) -> DecodedBatch:
    """Decode a batch to uint8 N×S×S×C with `photo_transform`, row by row; bad rows become rejects with a reason.

    Rows already S×S are taken as they are (channels converted); a batch of only raw such rows decodes
    exactly as `decode_images` would. Every other row goes through the photo transform on its own, on
    `threads` threads (Pillow releases the GIL while it decodes and resizes: a GPU actor's CPUs feed it);
    the result does not depend on `threads`.
    """
    rb = as_record_batch(batch)
    rows = triage(rb)
    s = image_size
    if rows.good_raw.all() and (rows.h == s).all() and (rows.w == s).all():
        return decode_images(rb, size=(s, s), channels=channels)
    n = rb.num_rows
    ids_col = rb.column("id")
    ids = np.asarray(ids_col.fill_null(-1) if ids_col.null_count else ids_col, dtype=np.int64)
    images = np.empty((n, s, s, channels), dtype=np.uint8)
    ok = np.zeros(n, bool)
    col = rb.column("image")

    def one(i: int) -> None:
        try:
            if rows.good_raw[i]:
                start, end = int(rows.offsets[i]), int(rows.offsets[i + 1])
                px = rows.data[start:end].reshape(int(rows.h[i]), int(rows.w[i]), int(rows.c[i]))
                pil = pil_of_pixels(px)
                images[i] = (fit_photo(pil, s, channels) if (rows.h[i], rows.w[i]) != (s, s) else
                             convert_channels(pil, channels))
            elif rows.encoded[i]:
                images[i] = photo_transform(col[i].as_py(), s, channels)
            else:
                return
            ok[i] = True
        except Exception as e:  # noqa: BLE001 - any failure is this row's reject reason
            rows.reasons[i] = f"image: {e}"

    if threads > 1 and n > 1:
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(min(threads, n)) as pool:
            list(pool.map(one, range(n)))
    else:
        for i in range(n):
            one(i)
    labels = None
    if "label" in rb.schema.names:
        lab = rb.column("label")
        labels = np.asarray(lab.fill_null(-1) if lab.null_count else lab, dtype=np.int64)[ok]
    rej = sorted(rows.reasons)
    return DecodedBatch(ids[ok], images[ok], labels, ids[rej].astype(np.int64), [rows.reasons[i] for i in rej])


def convert_channels(pil: Any, channels: int) -> np.ndarray:
    """An image's pixels as uint8 (H, W, channels), with no resize."""
    if channels not in _MODES:
        raise PhotoError(f"{channels} model input channels (expected 1, 3 or 4)")
    if pil.mode != _MODES[channels]:
        pil = pil.convert(_MODES[channels])
    arr = np.asarray(pil, dtype=np.uint8)
    return arr[:, :, None] if arr.ndim == 2 else arr
