"""Scoring benchmark: plain forward vs full MC-dropout BALD scoring vs the Ray pipeline, one process, one run.

`forward_img_s` is one deterministic forward pass of the model; `bald_img_s` is dal-dist's full
scoring of the same tensors (backbone once + T head samples + scores + Arrow output);
`pipeline_img_s` is the Ray Data pipeline from a Parquet pool to the scores Parquet, steady state.
`source="jpeg"` measures from encoded photos instead of model-size raw pixels: JPEGs (quality 90) of
varied sizes around 1.15 times the model's, so every number includes decoding them (`decode`: PIL on
the host, or torchvision batched on the scoring device); `decode_img_s` is the decode alone.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import torch


def _synthetic_pool(out: Path, n: int, size: int, channels: int, seed: int) -> None:
    """A raw-pixel Parquet pool of random images (the content does not change the work done)."""
    import pyarrow.parquet as pq

    rng = np.random.default_rng(seed)
    out.mkdir(parents=True, exist_ok=True)
    per_file = 4096
    for start in range(0, n, per_file):
        m = min(per_file, n - start)
        px = rng.integers(0, 256, size=(m, size * size * channels), dtype=np.uint8)
        table = pa.table({
            "id": pa.array(np.arange(start, start + m, dtype=np.int64)),
            "image": pa.array([r.tobytes() for r in px], type=pa.binary()),
            "height": pa.array(np.full(m, size, np.int32)),
            "width": pa.array(np.full(m, size, np.int32)),
            "channels": pa.array(np.full(m, channels, np.int32)),
            "label": pa.array(rng.integers(0, 10, m), type=pa.int64()),
        })
        pq.write_table(table, out / f"part-{start // per_file:05d}.parquet", row_group_size=1024)


def _photo_pool(out: Path, n: int, size: int, channels: int, seed: int) -> None:
    """A pool of n JPEG photos (quality 90): smooth random scenes with sensor-like noise, the shorter side
    1.0-1.3 times `size`, aspect 3:4 to 4:3, so the decode resizes and crops as it would on real photos."""
    import io

    from PIL import Image

    from dal_dist.pool import PoolWriter
    from dal_dist.pool.schema import pool_schema

    rng = np.random.default_rng(seed)
    schema = pool_schema(has_label=True)
    mode = "L" if channels == 1 else "RGB"
    with PoolWriter(out, schema) as w:
        for start in range(0, n, 1024):
            m = min(1024, n - start)
            blobs = []
            for _ in range(m):
                short = max(8, int(round(size * rng.uniform(1.0, 1.3))))
                aspect = rng.uniform(0.75, 4 / 3)
                wh = (short, int(short * aspect)) if aspect >= 1 else (int(short / aspect), short)
                grid = (int(rng.integers(3, 9)), int(rng.integers(3, 9)), 3)  # a few blobs of colour per photo
                coarse = rng.integers(0, 256, size=grid, dtype=np.uint8)
                img = np.asarray(Image.fromarray(coarse).resize(wh, Image.BICUBIC), dtype=np.float32)
                img = np.clip(img + rng.normal(0, 6, img.shape), 0, 255).astype(np.uint8)
                buf = io.BytesIO()
                Image.fromarray(img).convert(mode).save(buf, format="JPEG", quality=90)
                blobs.append(buf.getvalue())
            w.write(pa.record_batch({
                "id": pa.array(np.arange(start, start + m, dtype=np.int64)), "image": pa.array(blobs, pa.binary()),
                "height": pa.nulls(m, pa.int32()), "width": pa.nulls(m, pa.int32()),
                "channels": pa.nulls(m, pa.int32()), "label": pa.array(rng.integers(0, 10, m), type=pa.int64()),
            }, schema=schema))
        w.close({"num_classes": 10, "source": "bench scoring --source jpeg"})


def _read_batches(pool: Path, batch_size: int) -> list[pa.Table]:
    """The pool's rows as scoring batches, in memory (encoded bytes: small), read once before timing."""
    import pyarrow.parquet as pq

    from dal_dist.pool import pool_files

    return [pa.Table.from_batches([b]) for f in pool_files(pool)
            for b in pq.ParquetFile(f).iter_batches(batch_size=batch_size)]


def _rate(fn: Any, n_images: int, repeats: int) -> float:
    fn()  # warm-up (allocator, oneDNN kernels)
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return n_images / best


def run(model: str = "resnet18-small", image_size: int = 32, n: int = 1024, mc_samples: int = 20,
        batch_size: int = 256, pipeline_n: int = 16384, workers: int = 1, repeats: int = 3,
        seed: int = 0, pipeline: bool = True, device: str | None = None,
        precision: str | None = None, source: str = "raw", decode: str = "auto",
        overlap: bool | None = None) -> dict[str, Any]:
    """Measure the three throughputs in one process and return them with their ratios.

    `source`: "raw" (model-size pixels, no decode) or "jpeg" (photos decoded as `decode` says; BALD then
    through `score_batches`, batch i+1 decoded beside batch i's compute where `overlap` says).
    """
    from dal_dist.device import device_name, torch_device
    from dal_dist.models import CHECKPOINT_FILE, build_model, default_config, save_checkpoint
    from dal_dist.scoring import BatchScorer
    from dal_dist.pool import decode_photos, decode_photos_on_device
    from dal_dist.scoring.scorer import resolve_precision, score_batches

    dev = torch_device(device)
    precision = resolve_precision(precision, dev)

    channels = 1 if model == "mnist-cnn" else 3
    config = default_config(model, 10, in_channels=channels, image_size=image_size, seed=seed)
    net = build_model(config)
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(n, image_size, image_size, channels), dtype=np.uint8)
    ids = np.arange(n, dtype=np.int64)
    result: dict[str, Any] = {"bench": "scoring", "device": dev.type, "device_name": device_name(dev),
                              "model": model, "image_size": image_size, "source": source, "precision": precision,
                              "n": n, "mc_samples": mc_samples, "batch_size": batch_size,
                              "torch_threads": torch.get_num_threads()}
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = Path(tmp) / CHECKPOINT_FILE
        save_checkpoint(net, ckpt)
        scorer = BatchScorer(ckpt.read_bytes(), ["bald"], mc_samples=mc_samples, device=str(dev),
                             precision=precision, decode=decode, overlap=overlap)
        on_device = scorer.device_decode  # auto: on the device when it is CUDA
        result["decode"] = "device" if on_device else "cpu"
        result["overlap"] = scorer.overlap
        from dal_dist.models import preprocess

        batches: list[pa.Table] = []
        if source == "jpeg":
            _photo_pool(Path(tmp) / "photos", n, image_size, channels, seed)
            batches = _read_batches(Path(tmp) / "photos", batch_size)

        def decoded(batch: pa.Table) -> Any:
            if on_device:
                return decode_photos_on_device(batch, image_size, channels, dev).images
            return decode_photos(batch, image_size, channels).images

        def inputs() -> Any:  # uint8 model-size images, batch by batch: as they are, or decoded from the photos
            if source == "jpeg":
                return (decoded(b) for b in batches)
            return (images[s:s + batch_size] for s in range(0, n, batch_size))

        def forward() -> None:  # the same decode, copy, preprocess and autocast as scoring: only the head differs
            with torch.inference_mode(), scorer.autocast():
                for x in inputs():
                    scorer.model(preprocess(scorer.to_device(x), config))
            if dev.type == "cuda":
                torch.cuda.synchronize()

        def bald() -> None:
            if source == "jpeg":
                for _ in score_batches(scorer, batches):  # the actors' whole call: decode, score, Arrow output
                    pass
            else:
                for s in range(0, n, batch_size):
                    scorer.score_images(ids[s:s + batch_size], images[s:s + batch_size])
            if dev.type == "cuda":
                torch.cuda.synchronize()

        def decode_only() -> None:
            for x in inputs():
                scorer.to_device(x)
            if dev.type == "cuda":
                torch.cuda.synchronize()

        if source == "jpeg":
            result["decode_img_s"] = _rate(decode_only, n, repeats)
        result["forward_img_s"] = _rate(forward, n, repeats)
        result["bald_img_s"] = _rate(bald, n, repeats)
        result["bald_vs_forward"] = result["bald_img_s"] / result["forward_img_s"]
        if pipeline:
            result.update(_pipeline(Path(tmp), ckpt, pipeline_n, image_size, channels, mc_samples,
                                    batch_size, workers, seed, 1 if dev.type == "cuda" else 0, precision,
                                    source, decode, overlap))
            result["pipeline_vs_bald"] = result["pipeline_img_s"] / result["bald_img_s"]
    return result


def _pipeline(tmp: Path, ckpt: Path, n: int, size: int, channels: int, mc_samples: int, batch_size: int,
              workers: int, seed: int, gpus: float = 0, precision: str | None = None, source: str = "raw",
              decode: str = "auto", overlap: bool | None = None) -> dict[str, Any]:
    import ray

    from dal_dist.scoring import score_pool

    pool = tmp / "pool"
    if source == "jpeg":
        _photo_pool(pool, n, size, channels, seed)
    else:
        _synthetic_pool(pool, n, size, channels, seed)
    t = time.time()
    if not ray.is_initialized():
        ray.init(include_dashboard=False, log_to_driver=False)
    ray_init_s = time.time() - t
    # Ray Data starts its cluster-wide helper actors (stats, autoscaling coordinator) on a cluster's
    # first dataset; a running cluster has them already. Timed apart, like ray.init.
    t = time.time()
    ray.data.range(8, override_num_blocks=1).materialize()
    ray_data_warmup_s = time.time() - t
    s = score_pool(pool, ckpt, tmp / "scores", acquisitions=["bald"], mc_samples=mc_samples,
                   workers=workers, batch_size=batch_size, seed=seed, progress=False,
                   gpus_per_worker=gpus / workers if gpus else 0, precision=precision, decode=decode,
                   overlap=overlap)
    return {"pipeline_n": n, "pipeline_workers": workers, "pipeline_img_s": s.steady_images_per_s,
            "pipeline_startup_s": s.startup_s, "pipeline_total_s": s.seconds,
            "pipeline_overall_img_s": s.images_per_s, "ray_init_s": ray_init_s,
            "ray_data_warmup_s": ray_data_warmup_s}


def main(**kwargs: Any) -> None:
    print(json.dumps(run(**kwargs)), flush=True)


if __name__ == "__main__":
    os.environ.setdefault("RAY_DATA_DISABLE_PROGRESS_BARS", "1")
    main()
