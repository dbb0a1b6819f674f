"""One exclusive `flock` per directory, so two processes never write the same run or stream output."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from typing import Any

from dal_dist.errors import DalDistError

LOCK_FILE = ".lock"


class DirectoryLock:
    """Exclusive, non-blocking `flock` on DIR/.lock holding the owner's pid; the OS releases it when the
    process dies, so a killed driver never leaves a stale lock behind."""

    def __init__(self, directory: str | os.PathLike, what: str, busy: str):
        self.path = Path(directory) / LOCK_FILE
        self.what = what  # what the directory is, e.g. "run directory"
        self.busy = busy  # what the holder is doing and what to do about it
        self.fd: int | None = None

    def __enter__(self) -> "DirectoryLock":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)  # not inherited by children (PEP 446)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise DalDistError(f"{self.what} {self.path.parent} is locked by pid {holder} ({self.busy})") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self.fd = fd
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.fd is not None:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None


def is_locked(directory: str | os.PathLike) -> bool:
    """Whether a live process holds DIR/.lock (read-only check: takes and drops a shared lock)."""
    path = Path(directory) / LOCK_FILE
    if not path.exists():
        return False
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
