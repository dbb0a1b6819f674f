"""Reading a scores dataset (`dal-dist score` output) for selection: validated once, embeddings read once.

Two passes keep memory at one copy of the embeddings: `scan_scores` reads only the small columns
(`id`, `labeled`, a score) and the schemas, so every bad-input error (empty pool, dimension mismatch,
unknown labeled ids, duplicate ids) is raised before any embedding is read; `load_embeddings` then
fills a preallocated array file by file, row group by row group.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from dal_dist import fs as fsx
from dal_dist.errors import DalDistError
from dal_dist.selection.kcenter import as_storage


@dataclass
class ScoresScan:
    """Per-file row bookkeeping of a scores dataset (no embeddings): what selection needs to plan."""

    files: list[str]                      # locations (local paths or URIs, see dal_dist.fs)
    dim: int | None
    ids: list[np.ndarray]                 # int64 ids per file, in file order
    labeled: list[np.ndarray]             # bool per row: an existing center, never a candidate
    scores: list[np.ndarray] = field(default_factory=list)  # float64 per row when a score was asked

    @property
    def num_candidates(self) -> int:
        return int(sum((~m).sum() for m in self.labeled))

    @property
    def num_labeled(self) -> int:
        return int(sum(m.sum() for m in self.labeled))

    def candidate_ids(self) -> np.ndarray:
        """Candidate ids in dataset order (files by name, rows in file order)."""
        return np.concatenate([i[~m] for i, m in zip(self.ids, self.labeled)]) if self.ids else np.empty(0, np.int64)


def score_files(path: str | os.PathLike) -> list[str]:
    """The `*.parquet` files of a scores directory in name order (`_`/`.` files and `rejects/` ignored).

    `path` may be a URI (dal_dist.fs); off local disk the directory must carry `_COMPLETE`, which
    `dal-dist score` writes after the last file, so a half-published output is never read.
    """
    if fsx.is_file(path):
        return [str(path)]
    if not fsx.is_dir(path):
        raise DalDistError(f"{path}: scores directory not found")
    if not fsx.is_complete_dir(path):
        raise DalDistError(f"{path}: scores directory is incomplete (no {fsx.COMPLETE_MARKER} marker: still being "
                           "published, or its `dal-dist score` was interrupted); score again with --overwrite")
    files = fsx.list_files(path, ".parquet")
    if not files:
        raise DalDistError(f"{path}: no *.parquet files (empty scores dataset)")
    return files


def _embedding_dim(f: str, schema: pa.Schema) -> int | None:
    if "embedding" not in schema.names:
        return None
    t = schema.field("embedding").type
    if not pa.types.is_fixed_size_list(t) or t.value_type not in (pa.float32(), pa.float16()):
        raise DalDistError(f"{f}: column `embedding` has type {t}, expected fixed_size_list<float32|float16>[D]")
    return t.list_size


NOT_SCORES = frozenset({"id", "labeled", "embedding", "pred", "label"})  # columns that never rank rows


def score_columns(schema: pa.Schema) -> list[str]:
    """The columns of a scores file that can rank rows (`--by`): numeric, and not an id, flag, class or embedding."""
    return [f.name for f in schema if f.name not in NOT_SCORES
            and (pa.types.is_floating(f.type) or pa.types.is_integer(f.type))]


def check_score_column(f: str, schema: pa.Schema, score: str) -> None:
    """`score` must be a score column of file `f` (checked from the schema, before any data is read)."""
    valid = score_columns(schema)
    if score in valid:
        return
    have = ", ".join(valid) or "none"
    if score in schema.names:
        raise DalDistError(f"{f}: `{score}` is not a score column (by / --by takes one of: {have})")
    raise DalDistError(f"{f}: missing score column `{score}` (score columns: {have})")


def scan_scores(path: str | os.PathLike, *, labeled_ids: np.ndarray | None = None, score: str | None = None,
                need_embeddings: bool = True) -> ScoresScan:
    """Read ids/labeled flags (and one score column) of every file and validate them, before any work."""
    files = score_files(path)
    dim, dim_file = None, None
    ids, labeled, scores = [], [], []
    for f in files:
        try:
            with fsx.open_input(f) as fh:
                schema = pq.read_schema(fh)
        except (pa.ArrowInvalid, OSError) as e:
            raise DalDistError(f"{f}: not a readable Parquet file: {e}") from e
        if "id" not in schema.names:
            raise DalDistError(f"{f}: missing column `id`")
        fdim = _embedding_dim(f, schema)
        if need_embeddings:
            if fdim is None:
                raise DalDistError(f"{f}: missing column `embedding` (score with embeddings for k-center)")
            if dim is None:
                dim, dim_file = fdim, f
            elif fdim != dim:
                raise DalDistError(f"{f}: embedding dimension {fdim} differs from {dim} in {dim_file}")
        cols = ["id"] + [c for c in ("labeled",) if c in schema.names]
        if score is not None:
            check_score_column(f, schema, score)
            cols.append(score)
        with fsx.open_input(f) as fh:
            t = pq.read_table(fh, columns=cols)
        if t.column("id").null_count:
            raise DalDistError(f"{f}: column `id` has empty values")
        fid = t.column("id").to_numpy().astype(np.int64, copy=False)
        lab = (t.column("labeled").fill_null(False).to_numpy(zero_copy_only=False).astype(bool)
               if "labeled" in cols else np.zeros(len(fid), dtype=bool))
        ids.append(fid)
        labeled.append(lab)
        if score is not None:
            s = pc.cast(t.column(score), pa.float64()).to_numpy(zero_copy_only=False)
            bad = ~lab & ~np.isfinite(s)  # labeled rows have null scores by contract
            if bad.any():
                raise DalDistError(f"{f}: score `{score}` is missing/NaN/inf for id {fid[np.argmax(bad)]}")
            scores.append(s)
    scan = ScoresScan(files, dim, ids, labeled, scores)
    all_ids = np.concatenate(ids)
    if len(all_ids) == 0:
        raise DalDistError(f"{path}: the scores dataset has no rows (empty pool)")
    uniq, counts = np.unique(all_ids, return_counts=True)
    if len(uniq) != len(all_ids):
        raise DalDistError(f"{path}: duplicate ids in the scores dataset, e.g. {uniq[counts > 1][:5].tolist()}")
    if labeled_ids is not None and len(labeled_ids):
        missing = np.setdiff1d(labeled_ids, all_ids)
        if len(missing):
            raise DalDistError(f"labeled ids not in the scores dataset {path}: {len(missing)} ids, "
                               f"e.g. {missing[:5].tolist()}")
        for fid, lab in zip(ids, labeled):
            lab |= np.isin(fid, labeled_ids)
    if scan.num_candidates == 0:
        raise DalDistError(f"{path}: no unlabeled candidates (every row is labeled)")
    return scan


def load_embeddings(files: list[str], keep: list[np.ndarray], dim: int,
                    storage_dtype: str | None = None, ids: list[np.ndarray] | None = None) -> np.ndarray:
    """Rows of `embedding` where keep[file][row] is true, in dataset order, as one (n, dim) array.

    Reads row group by row group into a preallocated array (storage dtype: float32 by default,
    float16 when the files store float16), rejecting NaN/inf with the file and id.
    """
    n = int(sum(int(k.sum()) for k in keep))
    if storage_dtype is None:
        if files:
            with fsx.open_input(files[0]) as fh:
                t = pq.read_schema(fh).field("embedding").type.value_type
        else:
            t = pa.float32()
        storage_dtype = "float16" if t == pa.float16() else "float32"
    probe = as_storage(np.zeros((1, dim), np.float32), storage_dtype)
    out = np.empty((n, dim), dtype=probe.dtype)
    pos = 0
    for fi, (f, k) in enumerate(zip(files, keep)):
        if not k.any():
            continue
        pf = pq.ParquetFile(fsx.open_input(f))
        row = 0  # first file row of the current chunk
        for rg in range(pf.num_row_groups):
            col = pf.read_row_group(rg, columns=["embedding"]).column("embedding")
            if col.null_count and k[row:row + len(col)].any():
                raise DalDistError(f"{f}: `embedding` is empty for some rows of row group {rg}")
            for chunk in col.chunks:
                mm = k[row:row + len(chunk)]
                if mm.any():
                    vals = chunk.flatten().to_numpy(zero_copy_only=False).reshape(-1, dim)
                    sel = vals[mm]
                    finite = np.isfinite(sel).all(axis=1)
                    if not finite.all():
                        r = row + int(np.flatnonzero(mm)[np.argmin(finite)])
                        who = f"id {ids[fi][r]}" if ids is not None else f"row {r}"
                        raise DalDistError(f"{f}: `embedding` has NaN or inf values ({who})")
                    out[pos:pos + len(sel)] = as_storage(sel, storage_dtype)
                    pos += len(sel)
                row += len(chunk)
    return out
