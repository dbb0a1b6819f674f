"""Publishing a scores dataset: staging → verify → promote, or abandon; what `--overwrite` may replace.

A scoring job writes into a hidden staging directory beside `out`. Publishing verifies it (exactly one
row per expected id), writes the `_dal_scores.json` marker into it, and renames it into place (off local
disk: copy, `_COMPLETE` last). Abandoning removes the staging directory and nothing else. `--overwrite`
only ever replaces a directory that is a dal-dist scores output (`foreign_entries` says what is not).
"""

from __future__ import annotations

import os
import shutil
import time
import uuid
from pathlib import Path
from typing import Any, NoReturn

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from dal_dist import fs as fsx
from dal_dist.errors import DalDistError, StorageError
from dal_dist.interrupts import deferred_signals

REJECTS_DIR = "rejects"
SCORES_MARKER = "_dal_scores.json"  # written into every published scores output (before the rename)
SCORES_FORMAT = "dal-dist-scores/1"
# Columns every scores file holds besides `id` and the acquisition columns (see scorer.output_schema).
SCORES_COLUMNS = ("embedding", "pred", "confidence", "labeled")


def make_staging(out: Path | str) -> fsx.Location:
    """A fresh staging directory beside `out` on its filesystem (a `(filesystem, path)` pair off local disk)."""
    staging = fsx.join(fsx.parent(out), f".{fsx.basename(out)}.staging-{uuid.uuid4().hex[:8]}")
    if isinstance(staging, str) and fsx.is_local(staging) is not None:
        staging = Path(staging)
        staging.mkdir(parents=True)
        return staging
    staging = fsx.resolve(staging)
    fsx.make_dirs(staging)
    return staging


def publish(staging: fsx.Location, out: Path | str, expected: int, overwrite: bool,
            marker: dict[str, Any] | None = None) -> tuple[int, int]:
    """Verify the staged output (rows, ids once), mark it and promote it to `out`; returns (rows, rejects)."""
    written, rejects = verify_staging(staging, expected)
    write_marker(staging, written, rejects, marker or {})
    with deferred_signals():  # an interrupt between the renames would leave `out` missing: finish them first
        promote(staging, out, overwrite)
    return written, rejects


def write_marker(staging: fsx.Location, rows: int, rejects: int, extra: dict[str, Any]) -> None:
    """`_dal_scores.json` in the staged data: what this output is, so a later `--overwrite` may replace it."""
    data = fsx.join(staging, "data")
    fsx.make_dirs(data)
    fsx.write_json_atomic(fsx.join(data, SCORES_MARKER), {
        "format": SCORES_FORMAT, "rows": int(rows), "rejects": int(rejects),
        "files": [fsx.basename(f) for f in fsx.list_files(data, ".parquet")],
        "reject_files": [fsx.basename(f) for f in fsx.list_files(fsx.join(staging, REJECTS_DIR), ".parquet")],
        **extra})


def abandon(staging: fsx.Location | None, out: Path | str, e: BaseException) -> NoReturn:
    """Remove the staging directory and re-raise `e`; a file error becomes one StorageError line."""
    if staging is not None:
        with deferred_signals():  # a second Ctrl-C must not cut the clean-up short
            remove_staging(staging)
    err = storage_error(e, out)
    if err is e:
        raise e
    raise err from e


def remove_staging(staging: fsx.Location, settle_s: float = 1.0) -> None:
    """Delete `staging`; delete it again if a task that was still finishing re-created it meanwhile."""
    deadline = time.monotonic() + settle_s
    while True:
        fsx.delete_dir(staging)
        if time.monotonic() >= deadline or fsx.is_local(staging) is None:
            return
        time.sleep(0.2)
        if not fsx.exists(staging):
            return


def storage_error(e: BaseException, out: fsx.Location) -> BaseException:
    """A file error here or in a Ray task (`RayTaskError(OSError)`, its `cause` the original) as one line."""
    if isinstance(e, DalDistError) or not isinstance(e, OSError):
        return e
    cause = getattr(e, "cause", None)
    cause = cause if isinstance(cause, OSError) else e
    why = f"[Errno {cause.errno}] {cause.strerror}" if cause.strerror else str(cause)  # not Ray's retry note
    err = StorageError(f"{fsx.describe(out)}: scoring failed on a file operation ({why}); nothing was published "
                       "and the previous output, if any, is intact")
    err.errno = cause.errno
    return err


def num_rows(location: fsx.Location) -> int:
    """Rows of one Parquet file, from its footer."""
    with fsx.open_input(location) as f:
        return pq.ParquetFile(f).metadata.num_rows


def verify_staging(staging: fsx.Location, expected: int) -> tuple[int, int]:
    """Exactly `expected` rows (footer counts) and every id once, or refuse to publish.

    The id check catches what a count cannot: a retried task whose first attempt left a file behind
    (a duplicate) while another block went missing. It reads only the `id` column (8 bytes a row).
    """
    data = fsx.list_files(fsx.join(staging, "data"), ".parquet")
    reject_files = fsx.list_files(fsx.join(staging, REJECTS_DIR), ".parquet")
    written = sum(num_rows(f) for f in data)
    rejects = sum(num_rows(f) for f in reject_files)
    if written + rejects != expected:
        raise DalDistError(f"scoring wrote {written} rows + {rejects} rejects, expected {expected}: "
                           f"output not published (staging {fsx.describe(staging)} removed)")
    ids = [np.zeros(0, np.int64)]
    for f in data + reject_files:
        with fsx.open_input(f) as fh:
            ids.append(pq.read_table(fh, columns=["id"]).column("id").to_numpy().astype(np.int64, copy=False))
    uniq, counts = np.unique(np.concatenate(ids), return_counts=True)
    if len(uniq) != written + rejects:
        raise DalDistError(f"scoring wrote ids more than once, e.g. {uniq[counts > 1][:5].tolist()} (a retried task "
                           f"left a second copy?): output not published (staging {fsx.describe(staging)} removed)")
    return written, rejects


def promote(staging: fsx.Location, out: Path | str, overwrite: bool) -> None:
    """Publish: staging/data → out (and rejects → out/rejects) with renames, never a half-written out.

    Off local disk there is no rename: `out` is replaced by copying, `_COMPLETE` written last
    (`fsx.move_dir`), and readers of scores require the marker there (`selection.io.score_files`).
    """
    if not isinstance(staging, Path):
        if fsx.list_dir(out):
            check_replaceable(out, overwrite, when="appeared while scoring; not overwritten")
            fsx.delete_dir(out)
        if fsx.is_dir(fsx.join(staging, REJECTS_DIR)):
            fsx.copy_tree(fsx.join(staging, REJECTS_DIR), fsx.join(staging, "data", REJECTS_DIR))
        fsx.make_dirs(fsx.join(staging, "data"))
        fsx.move_dir(fsx.join(staging, "data"), fsx.resolve(out))
        fsx.delete_dir(staging)
        return
    out = Path(out)
    final = staging / "final"
    (staging / "data").rename(final) if (staging / "data").exists() else final.mkdir()
    if (staging / REJECTS_DIR).exists():
        (staging / REJECTS_DIR).rename(final / REJECTS_DIR)
    old = None
    if out.exists():
        if any(out.iterdir()):
            check_replaceable(out, overwrite, when="appeared while scoring; not overwritten")
        old = out.parent / f".{out.name}.old-{uuid.uuid4().hex[:8]}"
        out.rename(old)
    final.rename(out)
    shutil.rmtree(staging, ignore_errors=True)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def check_replaceable(out: fsx.Location, overwrite: bool, when: str = "") -> None:
    """Refuse unless `out` is absent, empty, or (with `overwrite`) a dal-dist scores output and nothing else."""
    if not overwrite:
        raise DalDistError(f"{fsx.describe(out)}: " + (when or "output directory exists and is not empty "
                                                       "(pass --overwrite to replace it)"))
    foreign = foreign_entries(out)
    if foreign:
        shown = ", ".join(foreign[:8]) + (f", ... ({len(foreign) - 8} more)" if len(foreign) > 8 else "")
        raise DalDistError(f"{fsx.describe(out)}: holds {len(foreign)} entr{'y' if len(foreign) == 1 else 'ies'} that "
                           f"{'is' if len(foreign) == 1 else 'are'} not a dal-dist scores output: {shown}; --overwrite "
                           "only replaces a scores output (choose another --out, or move them away)")


def foreign_entries(out: fsx.Location) -> list[str]:
    """Names in `out` that are not part of a dal-dist scores output (directories end in '/'); [] = replaceable.

    An output carrying `_dal_scores.json` may hold what it lists, `rejects/` and `_COMPLETE`; one published
    before the marker existed is recognised by its structure: Parquet files with the scores columns, plus
    `rejects/` of (id, reason) Parquet files, plus `_COMPLETE` off local disk.
    """
    entries = fsx.list_dir(out)
    marker = _read_marker(out, entries)
    foreign = []
    for info in entries:
        name = info.base_name
        is_dir = info.type == pafs.FileType.Directory
        if is_dir and name == REJECTS_DIR:
            foreign += [f"{REJECTS_DIR}/{n}" for n in _foreign_rejects(fsx.join(out, name), marker)]
        elif is_dir:
            foreign.append(name + "/")
        elif name in (SCORES_MARKER, fsx.COMPLETE_MARKER) and (name != SCORES_MARKER or marker is not None):
            continue
        elif marker is not None and name in marker.get("files", ()):
            continue
        elif not (name.endswith(".parquet") and _has_columns(fsx.join(out, name), ("id", *SCORES_COLUMNS))):
            foreign.append(name)
    return foreign


def _read_marker(out: fsx.Location, entries: list[pafs.FileInfo]) -> dict[str, Any] | None:
    if not any(i.base_name == SCORES_MARKER for i in entries):
        return None
    import json

    try:
        marker = json.loads(fsx.read_bytes(fsx.join(out, SCORES_MARKER)))
    except (DalDistError, ValueError, UnicodeDecodeError):
        return None
    return marker if isinstance(marker, dict) and marker.get("format") == SCORES_FORMAT else None


def _foreign_rejects(rejects: fsx.Location, marker: dict[str, Any] | None) -> list[str]:
    listed = set(marker.get("reject_files", ())) if marker is not None else set()
    foreign = []
    for info in fsx.list_dir(rejects):
        name = info.base_name
        if info.type == pafs.FileType.Directory:
            foreign.append(name + "/")
        elif name not in listed and not (name.endswith(".parquet")
                                         and _has_columns(fsx.join(rejects, name), ("id", "reason"))):
            foreign.append(name)
    return foreign


def _has_columns(location: fsx.Location, columns: tuple[str, ...]) -> bool:
    try:
        with fsx.open_input(location) as f:
            names = pq.read_schema(f).names
    except (DalDistError, pa.ArrowException, OSError):
        return False
    return all(c in names for c in columns)


def read_scores_table(path: str | os.PathLike, columns: list[str] | None = None) -> pa.Table:
    """Small-data helper (tests, reports): the whole scores dataset as one table, rejects excluded."""
    files = fsx.list_files(path, ".parquet")
    if not files:
        raise DalDistError(f"{path}: no scores Parquet files")
    return pa.concat_tables([pq.read_table(fsx.open_input(f), columns=columns) for f in files])
