"""Reading a fixed-size vector column other than `embedding` (BADGE's `probs`) from a scores dataset.

`check_vector_column` looks at the schemas only (so a missing column is refused before any work);
`load_vector_column` then fills one preallocated float32 array, row group by row group.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from dal_dist import fs as fsx
from dal_dist.errors import DalDistError


def check_vector_column(files: list[str], column: str, hint: str) -> int:
    """The width of `column` (fixed_size_list<float>[C]) in every file; one line naming the file otherwise."""
    width, first = None, None
    for f in files:
        with fsx.open_input(f) as fh:
            schema = pq.read_schema(fh)
        if column not in schema.names:
            raise DalDistError(f"{f}: missing column `{column}` ({hint})")
        t = schema.field(column).type
        if not pa.types.is_fixed_size_list(t) or not pa.types.is_floating(t.value_type):
            raise DalDistError(f"{f}: column `{column}` has type {t}, expected fixed_size_list<float>[C]")
        if width is None:
            width, first = t.list_size, f
        elif t.list_size != width:
            raise DalDistError(f"{f}: column `{column}` has width {t.list_size}, {width} in {first}")
    if width is None:
        raise DalDistError(f"no files to read column `{column}` from")
    return int(width)


def load_vector_column(files: list[str], keep: list[np.ndarray], column: str, width: int,
                       ids: list[np.ndarray]) -> np.ndarray:
    """Rows of `column` where keep[file][row], in dataset order, as float32 (n, width); NaN/null refused by id."""
    n = int(sum(int(k.sum()) for k in keep))
    out = np.empty((n, width), np.float32)
    pos = 0
    for fi, (f, k) in enumerate(zip(files, keep)):
        if not k.any():
            continue
        pf = pq.ParquetFile(fsx.open_input(f))
        row = 0
        for rg in range(pf.num_row_groups):
            col = pf.read_row_group(rg, columns=[column]).column(column)
            for chunk in col.chunks:
                mm = k[row:row + len(chunk)]
                if mm.any():
                    if chunk.null_count and not chunk.is_valid().to_numpy(zero_copy_only=False)[mm].all():
                        bad = row + int(np.flatnonzero(mm & ~chunk.is_valid().to_numpy(zero_copy_only=False))[0])
                        raise DalDistError(f"{f}: `{column}` is empty for id {ids[fi][bad]}")
                    # `values` keeps one slot per row, null rows included (flatten() would drop them)
                    vals = chunk.values.slice(chunk.offset * width, len(chunk) * width).to_numpy(zero_copy_only=False)
                    sel = vals.reshape(-1, width)[mm].astype(np.float32, copy=False)
                    finite = np.isfinite(sel).all(axis=1)
                    if not finite.all():
                        r = row + int(np.flatnonzero(mm)[np.argmin(finite)])
                        raise DalDistError(f"{f}: `{column}` has NaN or inf values (id {ids[fi][r]})")
                    out[pos:pos + len(sel)] = sel
                    pos += len(sel)
                row += len(chunk)
    return out
