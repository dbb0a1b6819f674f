"""Where pools, scores and selections live: a local path or any URI `pyarrow.fs` resolves (file://, s3://, gs://, hdfs://).

A *location* is a plain path (local, made absolute), a URI, or an already resolved
`(pyarrow.fs.FileSystem, path on it)` pair (what travels to Ray workers: a filesystem object pickles, a
scheme registered in this process does not); `resolve` turns each into the pair, and the helpers below are the only file operations
the readers and writers of pools and scores use, so every one of them works on every filesystem.

Atomicity (readers see the old state or the whole new one, never half of it):
- Local filesystem: temp file beside the target + fsync + `os.replace` (`dal_dist.atomic`); a directory
  is published with one `rename`.
- Object stores have no rename, but an object becomes visible only when its upload completes (one PUT,
  or the final "complete" call of a multipart upload). Whole-object writes (JSON, ledger-sized tables)
  are serialised in memory and written straight to the final key. Streamed writes (pool part files) go
  to a hidden temp key that is copied into place (a server-side copy is all-or-nothing too), because a
  stream closed while an exception unwinds would otherwise publish a truncated object.
- A directory on an object store cannot appear at once: `move_dir` copies its objects and writes
  `_COMPLETE` last; readers of published directories (`is_complete_dir`) require that marker there.

Run directories need an exclusive lock and atomic renames, so they stay local (`is_local`); see loop.py.
Filesystems pyarrow cannot build from a URI (e.g. fsspec ones wrapped in `pyarrow.fs.PyFileSystem`) can be
given a scheme with `register_filesystem`.
"""

from __future__ import annotations

import functools
import io
import json
import os
import re
import shutil
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Union

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from dal_dist import atomic
from dal_dist.errors import DalDistError

Location = Union[str, os.PathLike, "tuple[pafs.FileSystem, str]"]
COMPLETE_MARKER = "_COMPLETE"  # written last into a directory published on a non-local filesystem
_URI = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
_LOCAL = pafs.LocalFileSystem()
_REGISTERED: dict[str, pafs.FileSystem] = {}


def register_filesystem(scheme: str, filesystem: pafs.FileSystem | None) -> None:
    """Make `scheme://path` resolve to `path` on `filesystem` (None removes it), for filesystems without a URI form."""
    if filesystem is None:
        _REGISTERED.pop(scheme.lower(), None)
    else:
        _REGISTERED[scheme.lower()] = filesystem


def is_uri(where: Location) -> bool:
    return isinstance(where, str) and _URI.match(where) is not None


def describe(where: Location) -> str:
    """How a location is named in messages."""
    if isinstance(where, tuple):
        fs, path = where
        return path if isinstance(fs, pafs.LocalFileSystem) else f"{fs.type_name}:{path}"
    return os.fspath(where)


def resolve(where: Location) -> tuple[pafs.FileSystem, str]:
    """(filesystem, path on it) of a plain path or URI; an unknown scheme or unreachable store names the URI."""
    if isinstance(where, tuple):
        return where
    if not is_uri(where):
        return _LOCAL, os.path.abspath(os.path.expanduser(os.fspath(where)))
    assert isinstance(where, str)
    scheme = _URI.match(where).group(1).lower()  # type: ignore[union-attr]
    if scheme in _REGISTERED:
        return _REGISTERED[scheme], where.split("://", 1)[1].strip("/")
    try:
        fs, path = _from_uri(where)
    except pa.ArrowInvalid as e:
        raise DalDistError(f"{describe(where)}: unsupported filesystem URI ({e}); use a local path, file://, or a "
                           "scheme pyarrow.fs supports (s3://, gs://, hdfs://)") from e
    except (OSError, pa.ArrowException) as e:
        raise DalDistError(f"{describe(where)}: cannot open its filesystem: {e}") from e
    return fs, path.rstrip("/") if len(path) > 1 else path


@functools.lru_cache(maxsize=4096)
def _from_uri(uri: str) -> tuple[pafs.FileSystem, str]:
    # Cached: building an S3 filesystem without ?region= asks the bucket for its region, once per call.
    return pafs.FileSystem.from_uri(uri)


def is_local(where: Location) -> Path | None:
    """The local path of a plain path or `file://` URI; None for any other filesystem."""
    if isinstance(where, tuple):
        return Path(where[1]) if isinstance(where[0], pafs.LocalFileSystem) else None
    if not is_uri(where):
        return Path(resolve(where)[1])
    if _URI.match(str(where)).group(1).lower() == "file":  # type: ignore[union-attr]
        return Path(resolve(where)[1])
    return None


def join(where: Location, *names: str) -> Location:
    """`where/name/...` as a location of the same kind (URI query strings such as ?region= are kept)."""
    if isinstance(where, tuple):
        base = where[1].rstrip("/")
        return where[0], "/".join([base, *names] if base else names)  # type: ignore[return-value]
    if not is_uri(where):
        return os.path.join(os.fspath(where), *names)
    base, q, query = str(where).partition("?")
    scheme, _, rest = base.partition("://")
    stripped = rest.rstrip("/")
    prefix = stripped + "/" if stripped else ("/" if rest.startswith("/") else "")
    return f"{scheme}://{prefix}{'/'.join(names)}" + q + query


def parent(where: Location) -> Location:
    """The directory holding `where`."""
    if isinstance(where, tuple):
        return where[0], where[1].rstrip("/").rpartition("/")[0]  # type: ignore[return-value]
    if not is_uri(where):
        return os.path.dirname(resolve(where)[1])
    base, q, query = str(where).partition("?")
    scheme, _, rest = base.partition("://")
    head = rest.rstrip("/").rpartition("/")[0]
    return f"{scheme}://{head or ('/' if rest.startswith('/') else '')}" + q + query


def basename(where: Location) -> str:
    if isinstance(where, tuple):
        return where[1].rstrip("/").rpartition("/")[2]
    return str(where).partition("?")[0].rstrip("/").rpartition("/")[2] if is_uri(where) else os.path.basename(
        os.fspath(where).rstrip(os.sep))


def _info(where: Location) -> pafs.FileInfo:
    fs, path = resolve(where)
    try:
        return fs.get_file_info(path)
    except (OSError, pa.ArrowException) as e:
        raise DalDistError(f"{describe(where)}: cannot stat: {e}") from e


def exists(where: Location) -> bool:
    return _info(where).type != pafs.FileType.NotFound


def is_dir(where: Location) -> bool:
    return _info(where).type == pafs.FileType.Directory


def is_file(where: Location) -> bool:
    return _info(where).type == pafs.FileType.File


def size(where: Location) -> int:
    return int(_info(where).size or 0)


def list_dir(where: Location) -> list[pafs.FileInfo]:
    """Direct children of a directory, sorted by name (empty when it does not exist)."""
    fs, path = resolve(where)
    try:
        infos = fs.get_file_info(pafs.FileSelector(path, allow_not_found=True, recursive=False))
    except (OSError, pa.ArrowException) as e:
        raise DalDistError(f"{describe(where)}: cannot list: {e}") from e
    return sorted(infos, key=lambda i: i.base_name)


def list_files(where: Location, suffix: str = "") -> list[str]:
    """Locations of the files in a directory ending with `suffix`, by name; `_`/`.` files (metadata, temp) skipped."""
    return [join(where, i.base_name) for i in list_dir(where)
            if i.type == pafs.FileType.File and i.base_name.endswith(suffix)
            and not i.base_name.startswith(("_", "."))]


def open_input(where: Location) -> pa.NativeFile:
    """A random-access reader (what Parquet footers need)."""
    fs, path = resolve(where)
    try:
        return fs.open_input_file(path)
    except FileNotFoundError as e:
        raise DalDistError(f"{describe(where)}: not found") from e
    except (OSError, pa.ArrowException) as e:
        raise DalDistError(f"{describe(where)}: cannot open: {e}") from e


def read_bytes(where: Location) -> bytes:
    with open_input(where) as f:
        return f.read()


def make_dirs(where: Location) -> None:
    fs, path = resolve(where)
    fs.create_dir(path, recursive=True)


def write_bytes_atomic(where: Location, data: bytes) -> None:
    """Readers see the old file or the whole new one (local: temp + rename; object store: one upload)."""
    local = is_local(where)
    if local is not None:
        atomic.write_bytes_atomic(local, data)
        return
    fs, path = resolve(where)
    head = path.rpartition("/")[0]
    if head:
        fs.create_dir(head, recursive=True)
    with fs.open_output_stream(path) as f:
        f.write(data)


def write_json_atomic(where: Location, obj: Any) -> None:
    write_bytes_atomic(where, (json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n").encode())


def write_table_atomic(where: Location, table: pa.Table, **kwargs: Any) -> None:
    """One Parquet file, atomically (off local disk the table is serialised in memory, then uploaded once)."""
    local = is_local(where)
    if local is not None:
        atomic.write_parquet_atomic(local, table, **kwargs)
        return
    buf = io.BytesIO()
    pq.write_table(table, buf, **kwargs)
    write_bytes_atomic(where, buf.getvalue())


@contextmanager
def atomic_output(where: Location) -> Iterator[Any]:
    """Yield a sink for a streamed write (a temp path locally, an output stream elsewhere), published on success."""
    local = is_local(where)
    if local is not None:
        with atomic.atomic_path(local) as tmp:
            yield str(tmp)
        return
    fs, path = resolve(where)
    head, _, name = path.rpartition("/")
    tmp = f"{head}/.{name}.{uuid.uuid4().hex[:8]}.tmp" if head else f".{name}.{uuid.uuid4().hex[:8]}.tmp"
    if head:
        fs.create_dir(head, recursive=True)
    stream = fs.open_output_stream(tmp)
    try:
        yield stream
        stream.close()
        _move_file(fs, tmp, path)
    except BaseException:
        if not stream.closed:
            stream.close()
        try:
            fs.delete_file(tmp)
        except (OSError, pa.ArrowException):
            pass
        raise


def _move_file(fs: pafs.FileSystem, src: str, dst: str) -> None:
    try:
        fs.move(src, dst)  # S3/GCS: server-side copy + delete; the copy appears whole
    except (NotImplementedError, pa.ArrowNotImplementedError):
        fs.copy_file(src, dst)
        fs.delete_file(src)


def delete_dir(where: Location) -> None:
    """Remove a directory and everything under it (nothing when absent)."""
    local = is_local(where)
    if local is not None:
        shutil.rmtree(local, ignore_errors=True)
        return
    fs, path = resolve(where)
    try:
        fs.delete_dir(path)
    except FileNotFoundError:
        pass


def copy_tree(src: Location, dst: Location) -> None:
    """Copy every file under `src` to the same relative path under `dst` (same filesystem)."""
    fs, sp = resolve(src)
    _, dp = resolve(dst)
    fs.create_dir(dp, recursive=True)
    for info in fs.get_file_info(pafs.FileSelector(sp, allow_not_found=True, recursive=True)):
        rel = info.path[len(sp):].lstrip("/")
        if info.type == pafs.FileType.Directory:
            fs.create_dir(f"{dp}/{rel}", recursive=True)
        elif info.type == pafs.FileType.File:
            fs.copy_file(info.path, f"{dp}/{rel}")


def move_dir(src: Location, dst: Location) -> None:
    """Publish `src` as `dst` (which must not exist): one rename locally; copy, `_COMPLETE` last, delete elsewhere."""
    s_local, d_local = is_local(src), is_local(dst)
    if s_local is not None and d_local is not None:
        s_local.rename(d_local)
        return
    if resolve(src)[0].type_name != resolve(dst)[0].type_name:
        raise DalDistError(f"cannot move {describe(src)} to {describe(dst)}: different filesystems")
    copy_tree(src, dst)
    write_bytes_atomic(join(dst, COMPLETE_MARKER), b"")
    delete_dir(src)


def is_complete_dir(where: Location) -> bool:
    """A published directory: any existing local directory (renamed whole); elsewhere, one holding `_COMPLETE`."""
    if is_local(where) is not None:
        return is_dir(where)
    return is_file(join(where, COMPLETE_MARKER))


def require_local(where: Location, what: str) -> Path:
    """The local path of `where`, or an error saying why `what` must be on a local/shared POSIX filesystem."""
    local = is_local(where)
    if local is None:
        raise DalDistError(f"{describe(where)}: {what} must be a local path or file:// URI (a shared POSIX filesystem such "
                           "as NFS works): it needs an exclusive file lock and atomic renames, which object stores "
                           "do not offer; keep pools and scores on the object store and the run directory local")
    return local
