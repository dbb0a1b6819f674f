"""PoolWriter: file and row-group layout independent of how callers chunk their writes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from dal_dist.errors import DalDistError
from dal_dist.pool import PoolWriter, pool_files, pool_schema, raw_image_batch, write_pool


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
