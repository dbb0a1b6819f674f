"""Turning datasets into pools: MNIST-style IDX files, image folders, image lists (CSV), and .npz arrays.

Structural problems of the source raise `DalDistError` naming the file before anything is published;
single rows that cannot be taken go to `_rejects.parquet` with a reason (in an image folder: files that do
not decode, are not images by suffix, float/integer pixels with no 8-bit reading, broken links, symlink
loops, FIFOs). Each ingest publishes the pool whole (`PoolWriter`): a failure leaves nothing at --out.
Image files are read and checked by a pool of threads (decoding releases the GIL), in id order.
"""

from __future__ import annotations

import csv
import errno
import gzip
import io
import itertools
import os
import stat
import sys
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
import pyarrow as pa

from dal_dist.errors import DalDistError
from dal_dist.pool.decode import PixelValueError, as_8bit, open_image
from dal_dist.pool.schema import FILE_ROWS, ROW_GROUP_ROWS, SHAPE_COLUMNS, pool_schema
from dal_dist.pool.write import IngestResult, PoolWriter, num_classes_of, raw_image_batch

# ------------------------------------------------------------------------------------------ IDX
_IDX_DTYPES = {0x08: np.uint8}


def _idx_open(path: Path) -> io.BufferedIOBase:
    if not path.is_file():
        raise DalDistError(f"{path}: IDX file not found")
    with open(path, "rb") as f:
        gz = f.read(2) == b"\x1f\x8b"
    return gzip.open(path, "rb") if gz else open(path, "rb")  # type: ignore[return-value]


def _idx_header(path: Path, f: io.BufferedIOBase, ndim: int, what: str) -> tuple[int, ...]:
    try:
        head = f.read(4)
    except (OSError, EOFError) as e:
        raise DalDistError(f"{path}: cannot read IDX file (corrupt gzip?): {e}") from e
    if len(head) < 4 or head[0] != 0 or head[1] != 0:
        raise DalDistError(f"{path}: not an IDX file (magic number {head.hex() or 'missing'}, "
                           f"expected 000008{ndim:02x})")
    if head[2] not in _IDX_DTYPES or head[3] != ndim:
        raise DalDistError(f"{path}: IDX magic {head.hex()} is not {what} (expected 000008{ndim:02x}: "
                           f"unsigned bytes, {ndim} dimension(s))")
    dims_raw = f.read(4 * ndim)
    if len(dims_raw) < 4 * ndim:
        raise DalDistError(f"{path}: IDX header truncated")
    return tuple(int(d) for d in np.frombuffer(dims_raw, dtype=">u4"))


def _idx_labels(labels: Path) -> np.ndarray:
    """The int64 labels of an IDX label file, exactly as many as its header declares."""
    with _idx_open(labels) as f:
        (nl,) = _idx_header(labels, f, 1, "a label file")
        try:
            raw = f.read(nl + 1)
        except (OSError, EOFError) as e:
            raise DalDistError(f"{labels}: cannot read IDX data (corrupt gzip?): {e}") from e
    if len(raw) != nl:
        raise DalDistError(f"{labels}: header says {nl} labels, file holds "
                           f"{'more' if len(raw) > nl else len(raw)} bytes of labels")
    return np.frombuffer(raw, dtype=np.uint8).astype(np.int64)


def ingest_mnist_idx(images: str | os.PathLike, labels: str | os.PathLike | None, out: str | os.PathLike, *,
                     chunk_rows: int = FILE_ROWS) -> IngestResult:
    """Turn MNIST-style IDX files (raw or gzipped) into a raw-pixel pool; ids are the IDX row numbers."""
    images = Path(images)  # sources are local files; `out` may be any location (dal_dist.fs)
    y = None if labels is None else _idx_labels(Path(labels))
    with _idx_open(images) as f:
        n, hh, ww = _idx_header(images, f, 3, "an image file")
        if y is not None and len(y) != n:
            raise DalDistError(f"{images}: {n} images but {labels} has {len(y)} labels (expected the same count)")
        schema = pool_schema(has_label=y is not None)
        row = hh * ww
        with PoolWriter(out, schema) as w:
            for s in range(0, n, chunk_rows):
                k = min(chunk_rows, n - s)
                try:
                    raw = f.read(k * row)
                except (OSError, EOFError) as e:
                    raise DalDistError(f"{images}: cannot read IDX data at image {s} (corrupt gzip?): {e}") from e
                if len(raw) != k * row:
                    raise DalDistError(f"{images}: truncated: header says {n} images of {hh}x{ww}, "
                                       f"data ends inside image {s + len(raw) // row}")
                px = np.frombuffer(raw, dtype=np.uint8).reshape(k, hh, ww, 1)
                w.write(raw_image_batch(np.arange(s, s + k), px, None if y is None else y[s:s + k], schema))
            if f.read(1):
                raise DalDistError(f"{images}: unexpected bytes after the {n} images the header declares")
            return w.close({"num_classes": num_classes_of(y), "height": hh, "width": ww, "channels": 1,
                            "source": f"mnist-idx:{images.name}"})


# --------------------------------------------------------------------------------- image folder
@dataclass
class _Entry:
    """One file of an image folder, in id order: its label, and why it is rejected before being read (if so)."""

    path: Path
    label: int | None
    reason: str | None = None
    shown: str | None = None  # the path as the source names it (image list); None: relative to the root


def _shown(name: str) -> str:
    """A file name as text: bytes that are not UTF-8 (os.fsencode) shown as \\xNN escapes, never an encode error."""
    return os.fsencode(name).decode("utf-8", "backslashreplace")


def _visible(d: Path) -> list[str]:
    """Names in `d` in sorted order, hidden (`.x`) and private (`_x`) ones left out."""
    return sorted(n for n in os.listdir(d) if not n.startswith((".", "_")))


def _kind(p: Path) -> tuple[str, str | None]:
    """("file" | "dir" | "bad", reason) of a folder entry, symlinks followed; loops and broken links are "bad"."""
    try:
        mode = p.stat().st_mode
    except OSError as e:
        if p.is_symlink():
            return "bad", ("symlink loop" if e.errno == errno.ELOOP else
                           f"broken symlink to {_shown(os.readlink(p))}")
        return "bad", f"cannot read ({e.strerror or e})"
    if stat.S_ISDIR(mode):
        return "dir", None
    if stat.S_ISREG(mode):
        return "file", None
    return "bad", "not a regular file (FIFO, socket or device)"


def _suffix_reason(p: Path) -> str | None:
    """Why a file is not read as an image because of its suffix (None: an image suffix, or no suffix)."""
    from PIL import Image

    suffix = p.suffix.lower()
    if not suffix or suffix in Image.registered_extensions():
        return None
    return f"not an image file (suffix {_shown(suffix)})"


def _files_under(d: Path, seen: frozenset[str]) -> Iterator[tuple[Path, str | None]]:
    """(file, reason or None) under `d`, depth first in name order; symlinked folders followed unless they loop."""
    try:
        names = _visible(d)
    except OSError as e:
        yield d, f"cannot list folder ({e.strerror or e})"
        return
    for name in names:
        p = d / name
        kind, reason = _kind(p)
        if kind == "dir":
            real = os.path.realpath(p)
            if real in seen:
                yield p, "symlink loop (links back to an enclosing folder)"
            else:
                yield from _files_under(p, seen | {real})
        else:
            yield p, reason if reason is not None else _suffix_reason(p)


def _folder_entries(root: Path, unlabeled: bool = False) -> tuple[list[_Entry], list[str]]:
    """Files in id order (sorted paths: unlabeled `root/<file>` and class folders `root/<class>/**`), and classes.

    A sub-folder is a class when it holds at least one file with an image suffix (or none); files that are not
    images (by suffix), broken links, symlink loops and unreadable entries come back with their reason.
    `unlabeled`: sub-folders are no classes (every file unlabeled, no class list).
    """
    try:
        names = _visible(root)
    except OSError as e:
        raise DalDistError(f"{root}: cannot list the image folder: {e.strerror or e}") from e
    top: list[tuple[Path, list[tuple[Path, str | None]] | str | None]] = []
    for name in names:
        p = root / name
        kind, reason = _kind(p)
        if kind == "dir":
            top.append((p, list(_files_under(p, frozenset({os.path.realpath(root), os.path.realpath(p)})))))
        else:
            top.append((p, reason if reason is not None else _suffix_reason(p)))
    classes = [] if unlabeled else [p.name for p, files in top
                                    if isinstance(files, list) and any(r is None for _, r in files)]
    label_of = {c: i for i, c in enumerate(classes)}
    entries: list[_Entry] = [_Entry(p, None, r) for p, r in top if not isinstance(r, list)]
    for p, files in top:
        if isinstance(files, list):
            entries.extend(_Entry(f, label_of.get(p.name), r) for f, r in files)
    return entries, [_shown(c) for c in classes]


def _read_image(entry: _Entry, rel: str) -> tuple[bytes, tuple[int, int, int]] | str:
    """(bytes to store, (H, W, C) as decoded) of one file, or the reason it is rejected.

    PNG and JPEG bytes are kept as they are (a 16-bit PNG too: decode scales it); other formats are
    re-encoded to PNG, at 8 bits unless PNG holds their mode (16-bit grey).
    """
    from PIL import Image, UnidentifiedImageError

    if entry.reason is not None:
        return f"{rel}: {entry.reason}"
    try:
        blob = entry.path.read_bytes()
    except OSError as e:
        return f"{rel}: cannot read file ({e.strerror or e})"
    try:
        pil = open_image(blob)
    except Image.DecompressionBombError as e:  # Pillow's guard stays on: such a file is a reject
        return f"{rel}: image: decompression bomb refused ({e})"
    except Exception as e:  # noqa: BLE001 - anything a decoder raises makes this file a reject
        if not entry.path.suffix and isinstance(e, UnidentifiedImageError):
            return f"{rel}: not an image file (no suffix, and not a format PIL knows)"
        what = Image.registered_extensions().get(entry.path.suffix.lower(), "image")
        what = "PNG/JPEG" if what in ("PNG", "JPEG") else what
        # PIL's text names the in-memory file (<_io.BytesIO object at 0x...>): a reason must not vary by run.
        why = "cannot identify image file" if isinstance(e, UnidentifiedImageError) else e
        return f"{rel}: image: corrupt {what} bytes ({why})"
    try:
        pil8 = as_8bit(pil)
    except PixelValueError as e:
        return f"{rel}: image: {e}"
    if pil.format not in ("PNG", "JPEG"):
        buf = io.BytesIO()
        try:
            (pil if pil.mode == "I;16" else pil8).save(buf, format="PNG")
        except (OSError, ValueError) as e:
            return f"{rel}: image: cannot re-encode {pil.format} mode {pil.mode} as PNG ({e})"
        blob = buf.getvalue()
    return blob, (pil.height, pil.width, len(pil8.getbands()))


# Threads, not processes: PIL decodes with the GIL released and file reads wait on the disk, while a process
# pool would pickle every file's bytes back to the writer. (On a shared 2-core box that gave one process one
# core, threads and processes tied at ~30 files/s of 0.3-12 MP JPEGs: the box, not the choice, was the limit.)
DEFAULT_MAX_WORKERS = 32  # the default is one thread per CPU, up to this many
MAX_WORKERS = 256  # more threads than this only add memory (a slow network disk is served well before)
READ_AHEAD = 8  # files read ahead per thread: keeps threads busy while a row group is written


def default_workers() -> int:
    """Threads that read and check image files: one per CPU (decoding is CPU-bound), capped."""
    return max(1, min(os.cpu_count() or 1, DEFAULT_MAX_WORKERS))


def check_workers(workers: int | None) -> int:
    """`workers` as a thread count (None: `default_workers()`); refused outside 1..MAX_WORKERS."""
    if workers is None:
        return default_workers()
    if isinstance(workers, bool) or not isinstance(workers, int) or not 1 <= workers <= MAX_WORKERS:
        raise DalDistError(f"workers: expected an integer thread count in 1..{MAX_WORKERS}, got {workers!r}")
    return workers


class IngestProgress:
    """Progress lines on stderr, at most one a second and a final one: a long ingest shows it is alive."""

    def __init__(self, total: int, every: float = 1.0) -> None:
        self.total, self.every = total, every
        self.files = self.rejects = 0
        self.start = self.last = time.monotonic()

    def update(self, files: int, rejects: int) -> None:
        self.files += files
        self.rejects += rejects
        now = time.monotonic()
        if now - self.last >= self.every:
            self.last = now
            self._line("")

    def done(self) -> None:
        self._line(f" in {time.monotonic() - self.start:,.1f} s")

    def _line(self, took: str) -> None:
        rate = self.files / max(time.monotonic() - self.start, 1e-9)
        print(f"ingest: {self.files:,}/{self.total:,} files{took} ({rate:,.0f} files/s), {self.rejects:,} rejects",
              file=sys.stderr, flush=True)


def _rel(root: Path, entry: _Entry) -> str:
    """The path a row and its reject reason show: as the list names it, else relative to the folder."""
    return entry.shown if entry.shown is not None else _shown(entry.path.relative_to(root).as_posix())


Checked = tuple[_Entry, str, tuple[bytes, tuple[int, int, int]] | str]  # entry, shown path, `_read_image`


def _checked_files(root: Path, entries: list[_Entry], workers: int) -> Iterator[Checked]:
    """(entry, shown path, `_read_image` result) of every entry, in id order, read by `workers` threads.

    Memory: at most READ_AHEAD files per thread are read ahead of the consumer (which holds one row group).
    """
    jobs = ((e, _rel(root, e)) for e in entries)
    if workers == 1:
        yield from ((e, rel, _read_image(e, rel)) for e, rel in jobs)
        return
    window = min(READ_AHEAD * workers, ROW_GROUP_ROWS)
    pending: deque[tuple[_Entry, str, Future]] = deque()
    pool = ThreadPoolExecutor(workers, thread_name_prefix="dal-dist-ingest")
    try:
        for e, rel in jobs:
            pending.append((e, rel, pool.submit(_read_image, e, rel)))
            if len(pending) >= window:
                first, first_rel, fut = pending.popleft()
                yield first, first_rel, fut.result()
        for first, first_rel, fut in pending:
            yield first, first_rel, fut.result()
    finally:  # an error or interrupt downstream: drop the queued reads, wait only for the running ones
        pool.shutdown(wait=True, cancel_futures=True)


def _folder_chunk(w: PoolWriter, checked: Iterable[Checked], start: int, shapes: set[tuple[int, int, int]],
                  progress: IngestProgress | None) -> pa.RecordBatch:
    """One row group of an image folder: images kept as bytes, every other file a reject with its reason."""
    ids, blobs, labels, paths = [], [], [], []
    for j, (entry, rel, got) in enumerate(checked):
        if progress is not None:
            progress.update(1, isinstance(got, str))
        if isinstance(got, str):
            w.reject([start + j], [got])
            continue
        blob, shape = got
        shapes.add(shape)
        ids.append(start + j)
        blobs.append(blob)
        labels.append(entry.label)
        paths.append(rel)
    n = len(ids)
    cols = {"id": pa.array(ids, pa.int64()), "image": pa.array(blobs, pa.binary()),
            "label": pa.array(labels, pa.int64()), "path": pa.array(paths, pa.string())}
    return pa.RecordBatch.from_arrays([cols.get(f.name, pa.nulls(n, f.type)) for f in w.schema], schema=w.schema)


def ingest_image_folder(root: str | os.PathLike, out: str | os.PathLike, *, unlabeled: bool = False,
                        workers: int | None = None, progress: bool = False) -> IngestResult:
    """Pool from `root/<class>/<file>` (sorted class names give labels 0..C-1) and unlabeled `root/<file>`.

    Images directly under `root` with no class folders give an unlabeled pool (no `label` column); a
    sub-folder without image files is no class. `unlabeled`: a tree whose sub-folders are not classes
    (every image under `root`, at any depth, an unlabeled row). Files keep their encoded bytes (PNG/JPEG as is; other
    formats re-encoded to PNG) and their relative path in a `path` column (bytes of non-UTF-8 names as
    \\xNN escapes). Files that do not decode, are not images by suffix, broken links and symlink loops
    become rejects with their reason. Ids follow sorted paths, rejects included. `workers` threads read
    and check files (default: one per CPU; the pool is the same for any count); `progress`: lines on stderr.
    """
    workers = check_workers(workers)
    root = Path(root)
    if not root.is_dir():
        raise DalDistError(f"{root}: image folder not found")
    entries, classes = _folder_entries(root, unlabeled)
    if not entries:
        raise DalDistError(f"{root}: no image files (expected class sub-folders of images, or images)")
    return _write_entries(root, entries, out, bool(classes), len(classes) or None, classes,
                          f"image-folder:{_shown(root.name)}", workers, progress)


def _write_entries(root: Path, entries: list[_Entry], out: str | os.PathLike, has_label: bool,
                   num_classes: int | None, classes: list[str], source: str, workers: int,
                   progress: bool) -> IngestResult:
    """Publish image files (in id order) as one pool with a `path` column; unreadable ones become rejects."""
    schema = pool_schema(has_label=has_label, extra=[pa.field("path", pa.string())])
    shapes: set[tuple[int, int, int]] = set()
    with PoolWriter(out, schema) as w:
        meter = IngestProgress(len(entries)) if progress else None  # once --out is claimed, as synth does
        checked = _checked_files(root, entries, workers)
        try:
            for start in range(0, len(entries), ROW_GROUP_ROWS):
                w.write(_folder_chunk(w, itertools.islice(checked, ROW_GROUP_ROWS), start, shapes, meter))
        finally:
            checked.close()  # stops the reader threads now, also when a write fails
        if meter is not None:
            meter.done()
        shape = dict(zip(SHAPE_COLUMNS, shapes.pop())) if len(shapes) == 1 else {}
        return w.close({"num_classes": num_classes, "classes": classes, **shape, "source": source})


# ----------------------------------------------------------------------------------- image list
def _list_rows(file: Path) -> list[tuple[int, str, str | None]]:
    """(line number, path, label text or None) of a `path[,label]` CSV; an optional `path[,label]` header is skipped."""
    try:
        with open(file, newline="", encoding="utf-8") as f:
            lines = list(csv.reader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise DalDistError(f"{file}: cannot read the image list ({e})") from e
    rows: list[tuple[int, str, str | None]] = []
    for n, cells in enumerate(lines, start=1):
        cells = [c.strip() for c in cells]
        if not cells or cells == [""]:
            continue
        if n == 1 and cells[0].lower() == "path" and cells[1:] in ([], ["label"]):
            continue
        if len(cells) > 2 or not cells[0]:
            raise DalDistError(f"{file}: line {n}: expected `path[,label]`, got {','.join(cells)!r}")
        rows.append((n, cells[0], cells[1] if len(cells) == 2 and cells[1] else None))
    return rows


def _list_labels(file: Path, texts: list[str | None]) -> tuple[list[int | None], list[str], int | None]:
    """Labels of an image list as class indices: integers as given, names by sorted order (classes listed)."""
    given = [t for t in texts if t is not None]
    if all(t.lstrip("-").isdigit() for t in given):
        values = [int(t) if t is not None else None for t in texts]
        bad = [v for v in values if v is not None and v < 0]
        if bad:
            raise DalDistError(f"{file}: label {bad[0]}: integer labels must be >= 0 (class indices)")
        return values, [], (max(v for v in values if v is not None) + 1) if given else None
    classes = sorted(set(given))
    index = {c: i for i, c in enumerate(classes)}
    return [index[t] if t is not None else None for t in texts], classes, len(classes)


def ingest_image_list(file: str | os.PathLike, out: str | os.PathLike, *, workers: int | None = None,
                      progress: bool = False) -> IngestResult:
    """Pool from a CSV of `path[,label]` (paths relative to the CSV's folder, or absolute), ids in list order.

    Labels are class indices (integers) or class names (sorted names give 0..C-1); a row without a label
    is unlabeled (null). Missing or undecodable files become rejects with their reason, as in an image folder.
    `workers` and `progress` as in `ingest_image_folder`.
    """
    workers = check_workers(workers)
    file = Path(file)
    rows = _list_rows(file)
    if not rows:
        raise DalDistError(f"{file}: the image list has no rows (expected `path[,label]` lines)")
    labels, classes, num_classes = _list_labels(file, [t for _, _, t in rows])
    base = file.parent
    entries = []
    for (n, text, _), label in zip(rows, labels):
        p = Path(text) if os.path.isabs(text) else base / text
        kind, reason = _kind(p)
        reason = reason if kind == "bad" else ("a folder, not an image file" if kind == "dir" else _suffix_reason(p))
        entries.append(_Entry(p, label, reason, shown=text))
    has_label = num_classes is not None
    return _write_entries(base, entries, out, has_label, num_classes, classes, f"image-list:{_shown(file.name)}",
                          workers, progress)


# ------------------------------------------------------------------------------------------ npz
def _npz_arrays(file: Path) -> tuple[np.ndarray, np.ndarray | None]:
    """(x as N×H×W×C, y as int64 or None) of an .npz, with its shapes, dtypes and labels checked."""
    expected = "expected an .npz archive with array `x` (and optional `y`), as np.savez(file, x=x, y=y) writes"
    if not file.is_file():
        raise DalDistError(f"{file}: npz file not found ({expected})" if not file.exists() else
                           f"{file}: not a file; {expected}")
    try:
        npz = np.load(file, allow_pickle=False)
    except Exception as e:  # noqa: BLE001 - np.load tries pickle on anything that is not npy/npz
        raise DalDistError(f"{file}: not an .npz archive; {expected}") from e
    if not isinstance(npz, np.lib.npyio.NpzFile):
        raise DalDistError(f"{file}: a single .npy array of shape {getattr(npz, 'shape', '?')}; {expected}")
    with npz:
        if "x" not in npz.files:
            raise DalDistError(f"{file}: missing array `x` (N×H×W or N×H×W×C images); arrays: {npz.files}")
        try:
            x = npz["x"]
            y = npz["y"] if "y" in npz.files else None
        except Exception as e:  # noqa: BLE001
            raise DalDistError(f"{file}: cannot read arrays: {e}") from e
    if x.ndim == 3:
        x = x[..., None]
    if x.ndim != 4 or x.shape[3] not in (1, 3, 4):
        hint = " (looks channels-first: transpose to N×H×W×C)" if x.ndim == 4 and x.shape[1] in (1, 3, 4) else ""
        raise DalDistError(f"{file}: array `x` has shape {x.shape}, "
                           f"expected N×H×W or N×H×W×C with C in 1/3/4{hint}")
    if not (np.issubdtype(x.dtype, np.integer) or np.issubdtype(x.dtype, np.floating)):
        raise DalDistError(f"{file}: array `x` has dtype {x.dtype}, expected uint8, integers or floats")
    return x, None if y is None else _npz_labels(file, y, x.shape[0])


def _npz_labels(file: Path, y: np.ndarray, n: int) -> np.ndarray:
    if y.shape != (n,):
        raise DalDistError(f"{file}: array `y` has shape {y.shape}, expected ({n},) to match `x`")
    if np.issubdtype(y.dtype, np.floating):
        if not (np.isfinite(y).all() and (y == np.round(y)).all()):
            raise DalDistError(f"{file}: array `y` has non-integer values, expected class indices")
    elif not np.issubdtype(y.dtype, np.integer):
        raise DalDistError(f"{file}: array `y` has dtype {y.dtype}, expected integers")
    y = y.astype(np.int64)
    if n and y.min() < 0:
        raise DalDistError(f"{file}: array `y` has negative label {y.min()} (row {int(np.argmin(y))}), "
                           "expected 0..C-1")
    return y


def _npz_scale(x: np.ndarray, chunk_rows: int) -> float:
    """255 for a float array whose finite values all lie at or below 1 (read as [0, 1]), else 1."""
    if not np.issubdtype(x.dtype, np.floating):
        return 1.0
    finite_max = -np.inf
    for s in range(0, x.shape[0], chunk_rows):
        chunk = x[s:s + chunk_rows]
        finite = chunk[np.isfinite(chunk)]
        if finite.size:
            finite_max = max(finite_max, float(finite.max()))
    return 255.0 if finite_max <= 1.0 else 1.0


def _npz_pixels(x: np.ndarray, scale: float) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(uint8 pixels, ok mask, reasons of bad rows) for one chunk of an npz `x` array."""
    n = x.shape[0]
    if x.dtype == np.uint8:
        return x, np.ones(n, bool), []
    flat = x.reshape(n, -1)
    ok = np.ones(n, bool)
    reasons = []
    if np.issubdtype(x.dtype, np.floating):
        finite = np.isfinite(flat).all(axis=1)
        ok &= finite
    lo = np.where(ok, flat.min(axis=1), 0)
    hi = np.where(ok, flat.max(axis=1), 0)
    limit = 1.0 if scale != 1.0 else 255
    in_range = (lo >= 0) & (hi <= limit)
    for i in range(n):
        if not ok[i]:
            reasons.append("image: NaN/inf pixel values")
        elif not in_range[i]:
            reasons.append(f"image: pixel values {lo[i]}..{hi[i]} outside [0, {limit}]")
    ok &= in_range
    safe = np.where(ok.reshape((n,) + (1,) * (x.ndim - 1)), x, 0)
    px = np.clip(np.rint(safe.astype(np.float64) * scale), 0, 255).astype(np.uint8)
    return px, ok, reasons


def ingest_npz(file: str | os.PathLike, out: str | os.PathLike, *, chunk_rows: int = FILE_ROWS) -> IngestResult:
    """Pool from an .npz with `x` (N×H×W or N×H×W×C, C in 1/3/4) and optional integer `y` (N,).

    Pixel rule: uint8 taken as is; integer arrays must lie in [0, 255]; float arrays are read as
    [0, 1] when every finite value is ≤ 1 and as [0, 255] otherwise (one rule for the whole array, so
    a dark image is not rescaled alone), then rounded. Rows with NaN/inf or out-of-range pixels are
    rejected. The arrays are loaded whole (npz members cannot be memory-mapped).
    """
    file = Path(file)
    x, y = _npz_arrays(file)
    n, hh, ww, cc = x.shape
    scale = _npz_scale(x, chunk_rows)
    schema = pool_schema(has_label=y is not None)
    with PoolWriter(out, schema) as w:
        for s in range(0, n, chunk_rows):
            px, ok, reasons = _npz_pixels(x[s:s + chunk_rows], scale)
            idx = np.arange(s, s + len(px))
            if not ok.all():
                w.reject(idx[~ok], reasons)
            w.write(raw_image_batch(idx[ok], px[ok], None if y is None else y[s:s + chunk_rows][ok], schema))
        return w.close({"num_classes": num_classes_of(y), "height": hh, "width": ww, "channels": cc,
                        "source": f"npz:{file.name}", "pixel_scale": "0..1" if scale != 1.0 else "0..255"})
