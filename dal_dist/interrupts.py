"""Interrupts: SIGTERM as an exception (so clean-up runs, as for Ctrl-C), and signals held over a publish.

Ctrl-C already raises KeyboardInterrupt; SIGTERM's default action (or Ray's driver handler, `sys.exit(15)`)
would end the process without removing the staging directory, or exit with a status that hides the
signal. Inside `sigterm_raises()` SIGTERM raises `Terminated` (a KeyboardInterrupt, so code that
handles an interrupt handles both); a CLI maps KeyboardInterrupt to exit 130 and `Terminated` to 143.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


class Terminated(KeyboardInterrupt):
    """SIGTERM arrived: stop like an interrupt (nothing published, staging removed); exit status 143."""

    signum = signal.SIGTERM
    exit_code = 128 + int(signal.SIGTERM)


received: list[int] = []  # SIGTERMs turned into `Terminated` in this process (the CLI's exit status reads it)


def _raise_terminated(signum: int, frame: Any) -> None:
    received.append(signum)
    raise Terminated(f"terminated by signal {signum}")


@contextmanager
def sigterm_raises() -> Iterator[None]:
    """Within the block SIGTERM raises `Terminated` in the main thread; the previous handler comes back after.

    Outside the main thread (where Python cannot install handlers) the block runs unchanged.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextmanager
def deferred_signals() -> Iterator[None]:
    """Hold SIGINT/SIGTERM until the block ends (a few renames), then raise what arrived.

    For steps that must not stop half-way: between moving the old output aside and renaming the new
    one into place, an interrupt would leave no output at all.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    arrived: list[int] = []

    def hold(signum: int, frame: Any) -> None:
        arrived.append(signum)

    previous = {s: signal.signal(s, hold) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    if arrived:
        if arrived[0] == signal.SIGTERM:
            received.append(arrived[0])
            raise Terminated(f"terminated by signal {arrived[0]}")
        raise KeyboardInterrupt
