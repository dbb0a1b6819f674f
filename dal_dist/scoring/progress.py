"""A tiny Ray actor that scoring actors report to: a live progress bar and first/last-batch times.

Kept free of torch and pyarrow imports: its worker process starts alongside the scoring actors, and
on a small machine every second of import time it saves goes to the pipeline's startup instead.
"""

from __future__ import annotations


class ProgressCounter:
    """Counts scored rows; remembers when the first and the last batch arrived."""

    def __init__(self) -> None:
        self.rows = 0
        self.first: float | None = None
        self.first_rows = 0
        self.last: float | None = None

    def report(self, n: int, t: float) -> None:
        if self.first is None:
            self.first, self.first_rows = t, n
        self.rows += n
        self.last = max(t, self.last or t)

    def get(self) -> tuple[int, float | None, int, float | None]:
        return self.rows, self.first, self.first_rows, self.last
