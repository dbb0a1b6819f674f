"""Publishing a pool whole: a failed or interrupted ingest leaves nothing at --out, a finished one all of it.

Local paths (and file:// URIs): the pool is written into a hidden staging directory beside --out
(`.<name>.staging-<hex>`), which is renamed onto --out at the end (one atomic rename; an empty --out
directory is replaced). Object stores cannot rename a directory, so the pool is written in place behind
an in-progress marker (`_dal_pool.incomplete`, written first, deleted last) that every reader refuses
(`dal_dist.pool.listing`). Whatever fails (an exception, Ctrl-C), what was written is deleted; after a
hard kill the marker stays, readers keep refusing the directory, and a re-run into the same --out
clears the unfinished write (only files a pool write makes; anything else there is refused).
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import uuid
from pathlib import Path

import pyarrow as pa

from dal_dist import fs as fsx
from dal_dist.atomic import fsync_dir
from dal_dist.errors import DalDistError
from dal_dist.pool.schema import INCOMPLETE_MARKER, META_FILE

log = logging.getLogger(__name__)

# Names a pool write creates: part files, rejects, metadata, and the temp files/keys of their atomic writes.
_OWN_ENTRY = re.compile(r"^\.?(part-\d+\.parquet|_rejects\.parquet|_dal_pool\.json)(\.[A-Za-z0-9_]+\.tmp)?$")


def _names(names: list[str]) -> str:
    return ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")




def _delete_file(where: str) -> None:
    fs, path = fsx.resolve(where)
    try:
        fs.delete_file(path)
    except FileNotFoundError:
        pass


def _clear_failed_write(out: str, names: list[str]) -> None:
    """Delete what an unfinished pool write left at `out` (its marker last), so the re-run can take `out`."""
    log.warning("%s: clearing an unfinished pool write (%s)", out, _names(names))
    for name in sorted(names, key=lambda n: n == INCOMPLETE_MARKER):
        _delete_file(fsx.join(out, name))


def claim_out(out: str) -> None:
    """Refuse an --out that is a file or a non-empty directory (naming what is there); clear a failed write."""
    if fsx.exists(out) and not fsx.is_dir(out):
        raise DalDistError(f"{out}: exists and is not a directory; choose a new or empty --out directory")
    names = [i.base_name for i in fsx.list_dir(out)]
    if not names:
        return
    if INCOMPLETE_MARKER in names:
        foreign = [n for n in names if n != INCOMPLETE_MARKER and not _OWN_ENTRY.match(n)]
        if not foreign:
            _clear_failed_write(out, names)
            return
        raise DalDistError(f"{out}: holds an unfinished pool write and other files ({_names(foreign)}); "
                           "move them away or choose a new or empty --out directory")
    if any(n.endswith(".parquet") or n == META_FILE for n in names):
        raise DalDistError(f"{out}: already holds a pool ({_names(names)}); choose a new or empty --out directory")
    raise DalDistError(f"{out}: is not empty (holds {_names(names)}); choose a new or empty --out directory")


class PoolStage:
    """The directory a pool is written into until `publish` puts it at `out` whole; `discard` leaves nothing."""

    def __init__(self, out: str | os.PathLike) -> None:
        self.out = str(out)
        claim_out(self.out)
        self._local = fsx.is_local(self.out)
        self._created: list[Path] = []  # local parent directories this write created (deepest first)
        self._done = False
        if self._local is not None:
            if self._local.is_symlink():
                self._local = self._local.resolve()
            parent = self._local.parent
            p = parent
            while not p.exists():
                self._created.append(p)
                p = p.parent
            try:
                parent.mkdir(parents=True, exist_ok=True)
                staging = parent / f".{self._local.name}.staging-{uuid.uuid4().hex[:8]}"
                staging.mkdir()
            except OSError as e:
                self._remove_created()
                raise DalDistError(f"{self.out}: cannot create a staging directory beside it: {e}") from e
            self.dir: str = str(staging)
            self._existed = True
        else:
            self._existed = fsx.exists(self.out)
            fsx.make_dirs(self.out)
            self.dir = self.out
        try:
            fsx.write_bytes_atomic(fsx.join(self.dir, INCOMPLETE_MARKER), b"being written by dal-dist\n")
        except BaseException:
            self.discard()
            raise

    def publish(self) -> None:
        """Make the pool visible at `out` as a whole (marker removed, then the staging directory renamed)."""
        marker = fsx.join(self.dir, INCOMPLETE_MARKER)
        if self._local is None:
            _delete_file(marker)
            self._done = True
            return
        os.unlink(marker)
        try:
            os.rename(self.dir, self._local)  # replaces an empty directory; refuses a non-empty one
        except OSError as e:
            names = sorted(os.listdir(self._local)) if self._local.is_dir() else []
            raise DalDistError(f"{self.out}: cannot publish the pool there "
                               f"({'it now holds ' + _names(names) if names else e}); choose a new --out") from e
        fsync_dir(self._local.parent)
        self._done = True

    def discard(self) -> None:
        """Delete everything written (nothing is left at `out` nor beside it); a no-op once published."""
        if self._done:
            return
        self._done = True
        if self._local is not None:
            shutil.rmtree(self.dir, ignore_errors=True)
            self._remove_created()
            return
        try:
            names = [i.base_name for i in fsx.list_dir(self.out)]
            for name in sorted(names, key=lambda n: n == INCOMPLETE_MARKER):
                if name == INCOMPLETE_MARKER or _OWN_ENTRY.match(name):
                    _delete_file(fsx.join(self.out, name))
            if not self._existed and not fsx.list_dir(self.out):
                fsx.delete_dir(self.out)
        except (OSError, pa.ArrowException, DalDistError) as e:  # the marker (deleted last) keeps readers away
            log.warning("%s: could not remove the unfinished pool write: %s", self.out, e)

    def _remove_created(self) -> None:
        for p in self._created:
            try:
                p.rmdir()
            except OSError:
                break
