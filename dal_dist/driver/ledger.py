"""The label ledger: every label a run has paid for, append-only, one atomic Parquet file per round.

`RUN_DIR/labels/round-NNNN.parquet` (columns `id` int64, `label` int64, `round` int32, `source` string);
the directory is a `pyarrow.dataset` (files starting with `.` are temp files and ignored). A round's
file is written once, atomically: re-appending the same content for the same round is a no-op, so a
driver killed between "labels written" and "round manifest written" cannot apply labels twice on resume.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from dal_dist.atomic import write_parquet_atomic
from dal_dist.errors import DalDistError, StorageError

SCHEMA = pa.schema([pa.field("id", pa.int64(), nullable=False), pa.field("label", pa.int64(), nullable=False),
                    pa.field("round", pa.int32(), nullable=False), pa.field("source", pa.string())])
_FILE = re.compile(r"^round-(\d{4,})\.parquet$")


class LabelLedger:
    """Append-only record of (id, label, round, source) under `RUN_DIR/labels/`."""

    def __init__(self, run_dir: str | os.PathLike):
        self.dir = Path(run_dir) / "labels"

    def path(self, round: int) -> Path:
        return self.dir / f"round-{round:04d}.parquet"

    def rounds(self) -> list[int]:
        """Rounds that have a ledger file, ascending."""
        if not self.dir.is_dir():
            return []
        return sorted(int(m.group(1)) for p in self.dir.iterdir() if (m := _FILE.match(p.name)))

    def has_round(self, round: int) -> bool:
        return self.path(round).is_file()

    def table(self, before_round: int | None = None) -> pa.Table:
        """All entries (or those of rounds < `before_round`), in round order then append order."""
        parts = [self._read(r) for r in self.rounds() if before_round is None or r < before_round]
        return pa.concat_tables(parts) if parts else SCHEMA.empty_table()

    def ids(self, before_round: int | None = None) -> np.ndarray:
        return self.table(before_round).column("id").to_numpy().astype(np.int64, copy=False)

    def count(self) -> int:
        return sum(pq.ParquetFile(self.path(r)).metadata.num_rows for r in self.rounds())

    def append(self, round: int, ids: np.ndarray, labels: np.ndarray, source: str) -> bool:
        """Record one round's labels; False when exactly this content is already recorded (idempotent).

        Refused, with nothing written: ids already labeled in another round, duplicate ids, a round file
        that exists with different content, negative labels.
        """
        ids = np.asarray(ids, dtype=np.int64)
        labels = np.asarray(labels, dtype=np.int64)
        if ids.shape != labels.shape or ids.ndim != 1:
            raise DalDistError(f"ledger round {round}: {len(ids)} ids but {len(labels)} labels")
        uniq, counts = np.unique(ids, return_counts=True)
        if len(uniq) != len(ids):
            raise DalDistError(f"ledger round {round}: duplicate ids {uniq[counts > 1][:5].tolist()}")
        if len(labels) and labels.min() < 0:
            raise DalDistError(f"ledger round {round}: negative label for id {ids[np.argmin(labels)]}")
        table = pa.table({"id": ids, "label": labels, "round": np.full(len(ids), round, np.int32),
                          "source": pa.array([source] * len(ids), pa.string())}, schema=SCHEMA)
        if self.has_round(round):
            if self._read(round).equals(table):
                return False
            raise DalDistError(f"{self.path(round)}: round {round} is already in the ledger with different "
                               "labels; the ledger is append-only")
        prior = self.ids()
        again = np.intersect1d(ids, prior)
        if len(again):
            raise DalDistError(f"ledger round {round}: ids already labeled in an earlier round, "
                               f"e.g. {again[:5].tolist()} (nothing written)")
        try:
            write_parquet_atomic(self.path(round), table)
        except OSError as e:  # full disk, permissions: the atomic writer left the ledger as it was
            raise StorageError(f"{self.path(round)}: cannot write round {round} of the ledger ({e}); nothing was "
                               "recorded and the earlier rounds are intact") from e
        return True

    def _read(self, round: int) -> pa.Table:
        path = self.path(round)
        try:
            return pq.read_table(path, schema=SCHEMA)
        except (pa.ArrowException, OSError) as e:
            raise DalDistError(f"{path}: ledger file unreadable (truncated or corrupt?): {e}") from e
