"""Checks a command makes on its own flags before calling the library (issue 16: validation before work).

Each raises `DalDistError` naming the flag, so `main()` prints one line and exits 2: an empty value
(never meaningful: an empty path would mean the current directory), a path of the wrong kind, a
request a local Ray cluster dal-dist starts itself could never meet, a size no memory or disk here can
hold. Range checks of plain numbers are Typer's `min=`/`max=`; checks that hold for Python callers too
live in the library.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

from dal_dist.errors import DalDistError

MAX_THREADS = 1024  # torch threads per process: beyond any node's cores (and torch's C int)


def nonempty(flag: str, value: str | os.PathLike, expected: str) -> str:
    """`value` as a string; an empty one is refused (an empty path would name the current directory)."""
    text = os.fspath(value)
    if not text.strip():
        raise DalDistError(f"{flag}: empty value; expected {expected}")
    return text


def input_file(flag: str, value: str, what: str = "a file") -> Path:
    """An existing local file (not a directory)."""
    path = Path(nonempty(flag, value, what))
    if path.is_dir():
        raise DalDistError(f"{flag} {path}: is a directory; expected {what}")
    if not path.exists():
        raise DalDistError(f"{flag} {path}: not found; expected {what}")
    return path


def input_dir(flag: str, value: str, what: str = "a directory") -> str:
    """An existing directory when local (a URI is left to the library, which reads it)."""
    from dal_dist.fs import is_local  # pyarrow: loaded only when a command runs

    text = nonempty(flag, value, what)
    local = is_local(text)
    if local is not None:
        if not local.exists():
            raise DalDistError(f"{flag} {text}: not found; expected {what}")
        if not local.is_dir():
            raise DalDistError(f"{flag} {text}: is a file; expected {what}")
    return text


def output_dir(flag: str, value: str, what: str = "a directory") -> str:
    """A directory to write: absent or a directory (whether it may be used is the library's rule)."""
    from dal_dist.fs import is_local  # pyarrow: loaded only when a command runs

    text = nonempty(flag, value, what)
    local = is_local(text)
    if local is not None and local.exists() and not local.is_dir():
        raise DalDistError(f"{flag} {text}: is a file; expected {what}")
    return text


def ray_running() -> bool:
    """Whether this process is already connected to Ray (then no local cluster is started)."""
    ray = sys.modules.get("ray")
    return ray is not None and bool(ray.is_initialized())


def local_cpus() -> int:
    """The most CPUs a local Ray started here can have (Ray counts at most the machine's CPUs)."""
    return os.cpu_count() or 1


def check_local_workers(flag: str, workers: int, starts_local: bool = True) -> None:
    """Refuse more actor processes than a local cluster dal-dist starts itself has CPUs (nothing will add any)."""
    if starts_local and not ray_running() and workers > local_cpus():
        raise DalDistError(f"{flag} {workers}: the local Ray cluster dal-dist starts here has at most {local_cpus()} "
                           f"CPUs and each worker is a process; use {flag} <= {local_cpus()}")


def check_fits_memory(what: str, nbytes: float) -> None:
    """Refuse an allocation larger than this machine's memory, with the figure."""
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    if nbytes > total:
        raise DalDistError(f"{what}: needs {nbytes / 2**30:,.1f} GiB of memory; this machine has "
                           f"{total / 2**30:,.1f} GiB")


def check_fits_disk(what: str, nbytes: float, where: str | os.PathLike) -> None:
    """Refuse writing more than the free space of the (local) filesystem holding `where`, with the figure."""
    from dal_dist.fs import is_local

    local = is_local(where)
    if local is None:
        return  # an object store: no free-space figure to compare with
    probe = Path(local).absolute()
    while not probe.exists():
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    if nbytes > free:
        raise DalDistError(f"{what}: writes at least {nbytes / 2**30:,.1f} GiB; {probe} has "
                           f"{free / 2**30:,.1f} GiB free")
