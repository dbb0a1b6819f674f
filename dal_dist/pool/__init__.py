"""Parquet image pools: what a pool is, how it is listed, validated, read, decoded, written and ingested.

A pool is a directory of `*.parquet` files with columns `id` (int64, unique), `image` (PNG/JPEG bytes, or
raw uint8 HWC pixels with `height`/`width`/`channels`), optional `label` and any metadata (docs/architecture.md,
"Pool"). Modules, bottom up: schema (names, columns, checks) < listing (files, metadata, unfinished-write
refusal) < validate, decode < photo (per-image model-size transform) < jpeg (batched JPEG decode on a torch
device) < read; publish (whole-pool staging) < write < ingest, synth, builtin; idfile
reads id lists. Builtin datasets are reached as the module `dal_dist.pool.builtin`.
"""

from dal_dist.pool.decode import DecodedBatch, decode_images, decode_to_shape
from dal_dist.pool.idfile import read_ids
from dal_dist.pool.ingest import ingest_image_folder, ingest_image_list, ingest_mnist_idx, ingest_npz
from dal_dist.pool.jpeg import DeviceDecodedBatch, decode_photos_on_device
from dal_dist.pool.listing import pool_files, pool_listing, read_pool_meta
from dal_dist.pool.photo import PhotoError, decode_photos, photo_transform
from dal_dist.pool.read import iter_batches, read_images, read_labeled_images, read_pool_labels
from dal_dist.pool.schema import (
    DECODE_COLUMNS, INCOMPLETE_MARKER, META_FILE, REJECTS_FILE, REJECTS_SCHEMA, check_schema, pool_schema,
)
from dal_dist.pool.synth import synth_pool
from dal_dist.pool.validate import PoolInfo, pool_info, validate_pool
from dal_dist.pool.write import IngestResult, PoolWriter, raw_image_batch, write_pool

__all__ = [
    "DECODE_COLUMNS", "INCOMPLETE_MARKER", "META_FILE", "REJECTS_FILE", "REJECTS_SCHEMA", "DecodedBatch",
    "DeviceDecodedBatch", "decode_photos_on_device",
    "IngestResult", "PhotoError", "PoolInfo", "PoolWriter", "check_schema", "decode_images", "decode_photos",
    "decode_to_shape",
    "ingest_image_folder", "ingest_image_list", "ingest_mnist_idx", "ingest_npz", "iter_batches", "pool_files", "pool_info",
    "pool_listing", "pool_schema", "raw_image_batch", "read_ids", "read_images", "read_labeled_images", "read_pool_labels",
    "photo_transform", "read_pool_meta", "synth_pool", "validate_pool", "write_pool",
]
