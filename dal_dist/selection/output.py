"""Publishing a selection: one Parquet file, written atomically, never over the user's data.

`check_selection_out` is the rule (cheap, so callers run it before a long selection); `write_selection`
applies it again and writes. Refused, whatever `overwrite` says: an `out` that is a directory, an
`out` equal to or inside one of the inputs (scores dataset, pool, labeled-ids file), an `out` inside a
dal-dist pool directory (every Parquet file there is read as pool data). An existing file is replaced
only with `overwrite`.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

import pyarrow as pa

from dal_dist import fs as fsx
from dal_dist.errors import DalDistError
from dal_dist.pool import META_FILE


def _location_key(where: str | os.PathLike) -> tuple[str, str]:
    """(filesystem kind, absolute path) for comparing locations; local paths with symlinks resolved."""
    local = fsx.is_local(where)
    if local is not None:
        return "local", os.path.realpath(local)
    fs, path = fsx.resolve(where)
    return fs.type_name, "/" + path.strip("/")


def _same_or_inside(out: str | os.PathLike, container: str | os.PathLike) -> bool:
    (kind_o, path_o), (kind_c, path_c) = _location_key(out), _location_key(container)
    return kind_o == kind_c and (path_o == path_c or path_o.startswith(path_c.rstrip("/") + "/"))


def check_selection_out(out: str | os.PathLike, inputs: Iterable[str | os.PathLike | None] = (),
                        overwrite: bool = False) -> None:
    """Refuse, before any work, an output path that would overwrite or corrupt data (see the module docstring)."""
    where = fsx.describe(out)
    for inp in inputs:
        if inp is not None and _same_or_inside(out, inp):
            raise DalDistError(f"out (--out) {where}: is, or is inside, the input {fsx.describe(inp)}; writing "
                               "there would corrupt it; choose a path outside every input")
    if fsx.is_dir(out):
        raise DalDistError(f"out (--out) {where}: is a directory; expected the path of the selection Parquet file")
    if fsx.is_file(fsx.join(fsx.parent(out), META_FILE)):
        raise DalDistError(f"out (--out) {where}: is inside the pool directory {fsx.describe(fsx.parent(out))} "
                           "(every Parquet file there is read as pool data); write the selection elsewhere")
    if fsx.exists(out) and not overwrite:
        raise DalDistError(f"out (--out) {where}: already exists; pass --overwrite (overwrite=True) to replace it")


def write_selection(table: pa.Table, out: str | os.PathLike, *, overwrite: bool = False,
                    inputs: Iterable[str | os.PathLike | None] = ()) -> str | Path:
    """Write the selection Parquet atomically (readers never see half a file); `out` may be a URI (dal_dist.fs).

    Refuses what `check_selection_out` refuses, so a selection never lands over the user's data.
    """
    check_selection_out(out, inputs, overwrite)
    fsx.write_table_atomic(out, table)
    return out if fsx.is_uri(out) else Path(out)
