"""Scoring with JPEG rows decoded on the scoring device (`decode="device"`, here on CPU) against the PIL path.

Both write exactly one row per id and the same rejects; the scores differ only by the decoders' pixel
differences (well under a level on average, see tests/pool/test_jpeg.py), so the predicted classes agree.
"""

from __future__ import annotations

import io
import re

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

skimage_data = pytest.importorskip("skimage.data")
from PIL import Image  # noqa: E402

from dal_dist.errors import DalDistError  # noqa: E402
from dal_dist.models import build_model, default_config, save_checkpoint  # noqa: E402
from dal_dist.scoring import BatchScorer, score_pool  # noqa: E402

PHOTOS = ["astronaut", "chelsea", "coffee", "rocket", "immunohistochemistry", "camera"]


def encode(arr: np.ndarray, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format=fmt, **kw)
    return buf.getvalue()


@pytest.fixture(scope="module")
def photo_pool(tmp_path_factory):
    """48 photo crops of varied sizes, three JPEGs to one PNG, plus an EXIF-rotated JPEG, a corrupt JPEG and
    a null image, in two files."""
    rng = np.random.default_rng(0)
    blobs: list[bytes | None] = []
    for i in range(48):
        img = getattr(skimage_data, PHOTOS[i % len(PHOTOS)])()
        h, w = img.shape[:2]
        ch, cw = int(rng.integers(h // 4, h // 2)), int(rng.integers(w // 4, w // 2))
        top, left = int(rng.integers(0, h - ch)), int(rng.integers(0, w - cw))
        crop = Image.fromarray(img[top:top + ch, left:left + cw])
        short = int(rng.integers(36, 80))
        crop = crop.resize((short, int(short * ch / cw)) if cw < ch else (int(short * cw / ch), short))
        blobs.append(encode(np.asarray(crop), "PNG") if i % 4 == 0 else encode(np.asarray(crop), "JPEG", quality=90))
    exif = Image.Exif()
    exif[0x0112] = 8
    blobs += [encode(skimage_data.astronaut()[::8, ::6], "JPEG", exif=exif.tobytes()), b"\xff\xd8\xff\xe0broken", None]
    n = len(blobs)
    table = pa.table({"id": pa.array(rng.permutation(n) + 500, pa.int64()), "image": pa.array(blobs, pa.binary()),
                      "label": pa.array(np.arange(n) % 10, pa.int64())})
    root = tmp_path_factory.mktemp("photos")
    (root / "pool").mkdir()
    pq.write_table(table.slice(0, 30), root / "pool" / "part-0.parquet")
    pq.write_table(table.slice(30), root / "pool" / "part-1.parquet")
    ckpt = root / "cnn-rgb.pt"  # a small RGB model: the forward passes cost little beside the decode
    save_checkpoint(build_model(default_config("mnist-cnn", 10, in_channels=3, image_size=32, seed=0)), ckpt)
    return root / "pool", ckpt, table


def scored(out):
    data = pa.concat_tables(pq.read_table(f) for f in sorted(out.glob("*.parquet")))
    rejects = pq.read_table(out / "rejects") if (out / "rejects").exists() else None
    return data.sort_by("id"), rejects.sort_by("id") if rejects is not None else None


def test_device_decode_scores_every_id_once_like_the_pil_path(photo_pool, tmp_path):
    pool, ckpt, table = photo_pool
    for decode in ("cpu", "device"):
        score_pool(pool, ckpt, tmp_path / decode, acquisitions="bald,entropy", mc_samples=8, batch_size=16,
                   executor="local", progress=False, decode=decode)
    cpu, cpu_rej = scored(tmp_path / "cpu")
    dev, dev_rej = scored(tmp_path / "device")
    bad = table.column("id").to_numpy()[-2:]  # the corrupt JPEG and the null image
    for data, rej in ((cpu, cpu_rej), (dev, dev_rej)):
        ids = data.column("id").to_numpy()
        assert len(np.unique(ids)) == len(ids) == table.num_rows - 2  # one row per id, the EXIF JPEG scored
        assert set(ids) | set(rej.column("id").to_numpy()) == set(table.column("id").to_numpy())
        np.testing.assert_array_equal(rej.column("id").to_numpy(), np.sort(bad))
    strip = [re.sub(r" at 0x[0-9a-f]+", "", r) for r in cpu_rej.column("reason").to_pylist()]
    assert strip == [re.sub(r" at 0x[0-9a-f]+", "", r) for r in dev_rej.column("reason").to_pylist()]
    np.testing.assert_array_equal(cpu.column("id").to_numpy(), dev.column("id").to_numpy())
    pred_cpu, pred_dev = cpu.column("pred").to_numpy(), dev.column("pred").to_numpy()
    assert len(np.unique(pred_cpu)) > 1  # (an untrained model: nearly one class, so BALD and embeddings too)
    assert (pred_cpu == pred_dev).mean() >= 0.9
    # Same dropout masks (seeded by each batch's ids), nearly the same pixels: nearly the same scores.
    bald_cpu, bald_dev = cpu.column("bald").to_numpy(), dev.column("bald").to_numpy()
    assert np.abs(bald_cpu - bald_dev).mean() <= 0.02 * bald_cpu.std()  # measured: 0.0005
    emb_cpu = np.stack(cpu.column("embedding").to_numpy(zero_copy_only=False)).astype(np.float32)
    emb_dev = np.stack(dev.column("embedding").to_numpy(zero_copy_only=False)).astype(np.float32)
    cos = (emb_cpu * emb_dev).sum(1) / np.linalg.norm(emb_cpu, axis=1) / np.linalg.norm(emb_dev, axis=1)
    assert cos.min() >= 0.999  # measured: 0.999998; a channel swap, a wrong crop or row would fall far below


def test_the_decode_option(photo_pool, tmp_path):
    pool, ckpt, table = photo_pool
    data = ckpt.read_bytes()
    assert not BatchScorer(data, ["bald"], mc_samples=2, device="cpu").device_decode  # auto: PIL on a CPU
    scorer = BatchScorer(data, ["bald"], mc_samples=2, device="cpu", decode="device")
    assert scorer.device_decode and not BatchScorer(data, ["bald"], mc_samples=2, decode="cpu").device_decode
    x = torch.zeros(2, 32, 32, 3, dtype=torch.uint8)
    assert scorer.to_device(x).data_ptr() == x.data_ptr()  # decoded on the device already: no copy
    out = scorer(table.slice(0, 8))
    np.testing.assert_array_equal(out.column("id").to_numpy(), table.column("id").to_numpy()[:8])
    with pytest.raises(DalDistError, match="--decode must be one of auto, cpu, device, got 'gpu'"):
        BatchScorer(data, ["bald"], mc_samples=2, decode="gpu")
    with pytest.raises(DalDistError, match="--decode"):
        score_pool(pool, ckpt, tmp_path / "out", mc_samples=2, executor="local", decode="nvjpeg")
    assert not (tmp_path / "out").exists()  # refused before any work
