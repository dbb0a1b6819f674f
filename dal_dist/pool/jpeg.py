"""Batched JPEG decode on a torch device: a batch's JPEG rows decoded together where the model runs.

`decode_photos_on_device` is `photo.decode_photos` with the JPEG rows decoded by torchvision
(`decode_jpeg` on a list: nvJPEG on CUDA, libjpeg-turbo on CPU) and brought to the model's size on the
device (shorter side to round(S / 0.875), bilinear antialiased, centre crop S; an S×S image taken as it
is), so the scorer skips the host→device copy of its inputs. Every other row goes through
`decode_photos` on the host, unchanged: raw pixels, PNGs, rows that are not JPEG by their magic bytes
(FF D8 FF), JPEGs not ending in EOI (FF D9: truncated, which a GPU decoder may not refuse), modes other
than grey/RGB (CMYK, YCCK), EXIF orientation other than 1 (decode_jpeg on CUDA does not rotate), headers
Pillow refuses (corrupt, decompression bomb) and rows torchvision fails to decode. Bad rows therefore
become rejects with exactly the reasons `decode_photos` gives. A batch without a JPEG the device takes
is `decode_photos`' result as it is (images on the host, copied by the scorer as before).

Pixels: a full decode where the host path may decode a large JPEG at reduced size (PIL `draft`), so the
two differ by the DCT scaling, well under a level on average (tests/pool/test_jpeg.py). Memory on the
device: decoded JPEGs at full size, at most DECODE_BYTES_BUDGET of them at a time (one image alone may
exceed it), plus the S×S result per row.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np
import pyarrow as pa

from dal_dist.pool.decode import DecodedBatch, as_record_batch, triage
from dal_dist.pool.photo import decode_photos, resize_side

JPEG_MAGIC = b"\xff\xd8\xff"  # SOI marker, then the first segment's marker
JPEG_EOI = b"\xff\xd9"
DECODE_BYTES_BUDGET = 256 << 20  # full-size decoded pixels per decode_jpeg call
DEVICE_MODES = ("L", "RGB")  # JPEG modes decode_jpeg converts as Pillow does (CMYK/YCCK go to the host)
_TV_DEPRECATION = "The image decoding and encoding capabilities of TorchVision"


@dataclass
class DeviceDecodedBatch:
    """`DecodedBatch` with its images on the scoring device: uint8 (n, S, S, C) torch tensor, same row order."""

    ids: np.ndarray  # int64 (n,)
    images: Any  # torch.Tensor uint8 (n, S, S, C) on the device
    labels: np.ndarray | None  # int64 (n,), -1 where null; None without a label column
    reject_ids: np.ndarray  # int64 (r,)
    reject_reasons: list[str]


def is_jpeg(blob: bytes | np.ndarray) -> bool:
    """JPEG by its magic bytes, the way decoders recognise it (the pool does not record formats)."""
    return bytes(blob[:3]) == JPEG_MAGIC


def device_jpeg_size(blob: bytes) -> tuple[int, int] | None:
    """(width, height) of a JPEG the device can decode as stored; None sends the row to the host path.

    Reads the header only (Pillow parses markers up to the frame header and the EXIF segment, no pixels).
    """
    if not is_jpeg(blob) or not blob.endswith(JPEG_EOI):
        return None
    from PIL import Image

    try:
        with Image.open(io.BytesIO(blob)) as pil:
            if pil.format != "JPEG" or pil.mode not in DEVICE_MODES or pil.width < 1 or pil.height < 1:
                return None
            if pil.getexif().get(0x0112, 1) != 1:  # what ImageOps.exif_transpose reads (EXIF, else XMP)
                return None
            return pil.width, pil.height
    except Exception:  # noqa: BLE001 - whatever Pillow refuses, the host path refuses with its reason
        return None


def fit_on_device(image: Any, image_size: int) -> Any:
    """A uint8 C×H×W tensor as C×S×S: `photo.fit_photo`'s geometry (long side truncated, torchvision offsets)."""
    from torchvision.transforms.v2 import functional as TF

    if tuple(image.shape[-2:]) == (image_size, image_size):  # the model's size: taken as it is
        return image
    image = TF.resize(image, [resize_side(image_size)], interpolation=TF.InterpolationMode.BILINEAR,
                      antialias=True)
    return TF.center_crop(image, [image_size, image_size])


def decode_jpegs(blobs: list[bytes], sizes: list[tuple[int, int]], image_size: int, channels: int,
                 device: Any) -> list[Any | None]:
    """Each JPEG (of header `sizes`, width × height) as a uint8 S×S×C tensor on `device`; None where
    torchvision cannot decode it.

    One `decode_jpeg` call per chunk of at most DECODE_BYTES_BUDGET decoded bytes; a chunk that fails is
    retried row by row, so one bad row costs only itself.
    """
    import torch

    out: list[Any | None] = [None] * len(blobs)
    start = 0
    while start < len(blobs):
        end, total = start + 1, 3 * sizes[start][0] * sizes[start][1]
        while end < len(blobs) and total + 3 * sizes[end][0] * sizes[end][1] <= DECODE_BYTES_BUDGET:
            total += 3 * sizes[end][0] * sizes[end][1]
            end += 1
        tensors = [torch.frombuffer(bytearray(b), dtype=torch.uint8) for b in blobs[start:end]]
        try:
            decoded: list[Any | None] = list(_decode(tensors, channels, device))
        except RuntimeError:
            decoded = []
            for t in tensors:
                try:
                    decoded.append(_decode([t], channels, device)[0])
                except RuntimeError:
                    decoded.append(None)
        for k, img in enumerate(decoded):
            if img is not None:
                out[start + k] = _with_channels(fit_on_device(img, image_size), channels).permute(1, 2, 0)
        start = end
    return out


def _decode(tensors: list[Any], channels: int, device: Any) -> list[Any]:
    from torchvision.io import ImageReadMode, decode_jpeg

    mode = ImageReadMode.GRAY if channels == 1 else ImageReadMode.RGB
    with warnings.catch_warnings():  # deprecated for TorchCodec from 0.29; still the pinned version's decoder
        warnings.filterwarnings("ignore", message=_TV_DEPRECATION, category=DeprecationWarning)
        return decode_jpeg(tensors, mode=mode, device=device)


def _with_channels(image: Any, channels: int) -> Any:
    """Grey or RGB C×S×S as the model's channels: RGBA gets an opaque alpha plane, as Pillow's RGB→RGBA."""
    if channels == 4:
        import torch

        return torch.cat([image, torch.full_like(image[:1], 255)])
    return image


def decode_photos_on_device(batch: pa.RecordBatch | pa.Table | Mapping[str, Any], image_size: int,
                            channels: int, device: Any, threads: int = 1) -> DeviceDecodedBatch | DecodedBatch:
    """`decode_photos` with the JPEG rows decoded on `device`: same ids, labels, rejects and order, images there.

    A batch with no JPEG the device takes (raw pixels, PNGs) is `decode_photos`' own result, images on the
    host, for the caller's usual copy. Otherwise the host rows go through `decode_photos` as one sub-batch
    whose ids are their row numbers, so its results map back to this batch's rows exactly, whatever the
    ids hold.
    """
    import torch

    device = torch.device(device)
    rb = as_record_batch(batch)
    n, s = rb.num_rows, image_size
    rows = triage(rb)
    jpeg_rows: list[int] = []
    blobs: list[bytes] = []
    sizes: list[tuple[int, int]] = []
    if channels in (1, 3, 4):  # other counts: the host path gives the reject reason
        for i in np.flatnonzero(rows.encoded):
            start, end = int(rows.offsets[i]), int(rows.offsets[i + 1])
            if not is_jpeg(rows.data[start:start + 3]):
                continue
            blob = rows.data[start:end].tobytes()
            size = device_jpeg_size(blob)
            if size is not None:
                jpeg_rows.append(int(i))
                blobs.append(blob)
                sizes.append(size)
    decoded = decode_jpegs(blobs, sizes, s, channels, device)
    on_device = {i: img for i, img in zip(jpeg_rows, decoded) if img is not None}
    if not on_device:
        return decode_photos(rb, s, channels, threads)
    ok = np.zeros(n, bool)
    ok[list(on_device)] = True
    host = np.flatnonzero(~ok)
    host_rows, host_images = np.zeros(0, np.int64), None
    reject_rows, reasons = np.zeros(0, np.int64), []
    if len(host):
        sub = rb.take(pa.array(host))
        sub = sub.set_column(sub.schema.get_field_index("id"), "id", pa.array(host, pa.int64()))
        d = decode_photos(sub, s, channels, threads)
        host_rows, host_images, reject_rows, reasons = d.ids, d.images, d.reject_ids, d.reject_reasons
        ok[host_rows] = True
    position = np.cumsum(ok) - 1  # row -> its place among the decoded rows
    images = torch.empty((int(ok.sum()), s, s, channels), dtype=torch.uint8, device=device)
    if on_device:
        images[torch.as_tensor(position[list(on_device)], device=device)] = torch.stack(list(on_device.values()))
    if len(host_rows):  # one host->device copy for all of them
        images[torch.as_tensor(position[host_rows], device=device)] = torch.from_numpy(
            np.ascontiguousarray(host_images)).to(device)
    ids_col = rb.column("id")
    ids = np.asarray(ids_col.fill_null(-1) if ids_col.null_count else ids_col, dtype=np.int64)
    labels = None
    if "label" in rb.schema.names:
        lab = rb.column("label")
        labels = np.asarray(lab.fill_null(-1) if lab.null_count else lab, dtype=np.int64)[ok]
    return DeviceDecodedBatch(ids[ok], images, labels, ids[reject_rows].astype(np.int64), list(reasons))
