"""What a pool is made of: file names, column layout, the schema writers use and the checks readers apply.

A pool is a directory of `*.parquet` files (read in name order) with columns `id` (int64, unique),
`image` (encoded PNG/JPEG bytes, or raw uint8 HWC pixels when `height`/`width`/`channels` are set),
optional `label` (int64 ground truth) and any extra metadata. See docs/architecture.md, "Pool".
"""

from __future__ import annotations

from typing import Sequence

import pyarrow as pa

from dal_dist.errors import DalDistError

META_FILE = "_dal_pool.json"  # written last by ingest/synth: rows, classes, image shape, source
REJECTS_FILE = "_rejects.parquet"  # rows an ingest could not take (id, reason)
INCOMPLETE_MARKER = "_dal_pool.incomplete"  # present while a pool is being written; readers refuse the directory
POOL_FORMAT = "dal-dist-pool/1"
FILE_ROWS = 65_536  # rows per Parquet file written by ingest/synth
ROW_GROUP_ROWS = 4_096  # rows per row group: the unit a streaming reader holds in memory
SHAPE_COLUMNS = ("height", "width", "channels")
DECODE_COLUMNS = ("id", "image", *SHAPE_COLUMNS)  # what decode_images needs; absent optional ones are skipped
OPTIONAL_COLUMNS = frozenset({*SHAPE_COLUMNS, "label"})
REJECTS_SCHEMA = pa.schema([pa.field("id", pa.int64(), nullable=False), pa.field("reason", pa.string())])


def pool_schema(*, has_label: bool, extra: Sequence[pa.Field] = ()) -> pa.Schema:
    """The schema ingest and synth write: one schema for every file of a pool."""
    fields = [pa.field("id", pa.int64(), nullable=False), pa.field("image", pa.binary()),
              *(pa.field(c, pa.int32()) for c in SHAPE_COLUMNS)]
    if has_label:
        fields.append(pa.field("label", pa.int64()))
    return pa.schema([*fields, *extra])


def check_schema(path: str, schema: pa.Schema) -> None:
    """Refuse a pool file whose columns cannot be read as images (`id` int64 or narrower, `image`, integer shape/label).

    uint64 ids are refused by type (not by value): every reader and writer downstream carries ids as int64.
    """
    names = schema.names
    if "id" not in names:
        raise DalDistError(f"{path}: missing column `id` (expected int64 image ids); columns: {names}")
    id_type = schema.field("id").type
    if not pa.types.is_integer(id_type):
        raise DalDistError(f"{path}: column `id` has type {id_type}, expected int64")
    if pa.types.is_uint64(id_type):
        raise DalDistError(f"{path}: column `id` has type uint64, expected int64 (signed: uint64 is refused, ids "
                           "≥ 2^63 would come back negative); cast the column to int64")
    if "image" not in names:
        raise DalDistError(f"{path}: missing column `image` (expected binary PNG/JPEG or raw pixels); columns: {names}")
    t = schema.field("image").type
    if not (pa.types.is_binary(t) or pa.types.is_large_binary(t)):
        raise DalDistError(f"{path}: column `image` has type {t}, expected binary")
    for name in (*SHAPE_COLUMNS, "label"):
        if name in names and not pa.types.is_integer(schema.field(name).type):
            raise DalDistError(f"{path}: column `{name}` has type {schema.field(name).type}, expected integers")
