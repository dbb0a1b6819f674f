"""Stream-based selective sampling, the plumbing: score each arriving item once, label it or skip it for good.

`StreamSelector` takes batches from a Python iterator or a growing Parquet directory, scores them
in-process with `scoring.BatchScorer`, decides item by item in arrival order with a `BudgetCalibrator`
(dal_dist.stream.calibrator, pure), writes atomically per batch, and restarts from a state file.

Output directory (`--out`):
    _stream_state.json      config, calibrator state, processed batch keys, trace (written last per batch)
    decisions/<key>.parquet id, arrival, score, threshold, decision ("label"/"skip"), reason (calibrator rule)
    selected/<key>.parquet  id, arrival, score of the labeled items (the rows to send to an oracle)
    labels/<key>.parquet    id, label (with the simulated oracle)
    rejects/                rows that could not be decoded (id, reason), as `dal-dist score` writes them
    .lock                   flock held while a stream runs (dal_dist.locks.DirectoryLock)
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from dal_dist.atomic import write_json_atomic, write_parquet_atomic
from dal_dist.errors import DalDistError
from dal_dist.locks import LOCK_FILE, DirectoryLock
from dal_dist.stream.calibrator import BudgetCalibrator

log = logging.getLogger(__name__)

STATE_FILE = "_stream_state.json"
MAX_THREADS = 1024  # torch threads: beyond any node's cores
MAX_POLL_SECONDS = 86_400.0
STATE_FORMAT = "dal-dist-stream/1"
DECISIONS_DIR, SELECTED_DIR, LABELS_DIR = "decisions", "selected", "labels"
OWN_ENTRIES = {STATE_FILE, DECISIONS_DIR, SELECTED_DIR, LABELS_DIR, "rejects", LOCK_FILE}  # what a stream writes
DECISIONS_SCHEMA = pa.schema([pa.field("id", pa.int64(), nullable=False), pa.field("arrival", pa.int64()),
                              pa.field("score", pa.float32()), pa.field("threshold", pa.float64()),
                              pa.field("decision", pa.string()), pa.field("reason", pa.string())])
_TRACE_POINTS = 20  # threshold-trace entries in the printed summary (the state keeps one per batch)


@dataclass
class StreamSummary:
    """What a stream run did (printed as the CLI's last JSON line); counts cover restarts too."""

    budget: int
    expected: int
    labeled: int
    seen: int
    budget_used: float
    final_threshold: float | None
    batches: int
    rejected_rows: int
    rejected_files: list[dict[str, str]]
    stopped: str  # "budget_spent" | "idle_timeout" | "source_exhausted" | "stop_requested"
    threshold_trace: list[dict[str, Any]]
    seconds: float
    items_per_s: float
    out: str
    labels_written: int = 0


class StreamSelector:
    """Score arriving batches with `BatchScorer`, decide each item with a `BudgetCalibrator`, commit per batch.

    Commit order per batch: decisions/selected/labels files (atomic, named by the batch key), then the
    state file (atomic). A crash in between redoes that batch on restart with the same calibrator state
    and the same content-seeded dropout masks, so it rewrites identical files: every item is decided
    exactly once, and a restarted stream decides exactly as an uninterrupted one.
    """

    def __init__(self, out: str | os.PathLike, checkpoint: str | os.PathLike, *, budget: int,
                 expected: int | None = None, rate: float | None = None, acquisition: str = "bald",
                 mc_samples: int = 20, seed: int = 0, batch_size: int = 256, window: int | None = None,
                 warmup: int | None = None, slack: int | None = None, oracle: str | None = None,
                 bad_files: str = "skip", threads: int | None = None, device: str | None = None):
        from dal_dist.device import torch_device
        from dal_dist.scoring import REJECTS_DIR, BatchScorer, parse_acquisitions  # imports torch
        from dal_dist.scoring.scorer import check_batch_memory

        names = parse_acquisitions(acquisition, extra=("pred_loss",))
        if len(names) != 1:
            raise DalDistError(f"--acquisition: a stream decides on one score, got {names}")
        if mc_samples < 2:
            raise DalDistError(f"--mc-samples must be >= 2 (MC dropout needs several samples), got {mc_samples}")
        if oracle not in (None, "none", "simulated"):
            raise DalDistError(f"--oracle must be 'simulated' or 'none', got {oracle!r}")
        if bad_files not in ("skip", "error"):
            raise DalDistError(f"--bad-files must be 'skip' or 'error', got {bad_files!r}")
        if batch_size < 1:
            raise DalDistError(f"--batch-size must be >= 1, got {batch_size}")
        if seed < 0:
            raise DalDistError(f"seed (--seed) = {seed}: expected an integer >= 0")
        if threads is not None and not 1 <= threads <= MAX_THREADS:
            raise DalDistError(f"threads (--threads) = {threads}: expected an integer in [1, {MAX_THREADS}]")
        if device is not None:
            torch_device(device)  # an unknown name, or cuda without a GPU
        try:
            calibrator = BudgetCalibrator(budget, expected, rate=rate, window=window, warmup=warmup, slack=slack)
        except ValueError as e:
            raise DalDistError(f"stream budget: {e}") from e
        ckpt = Path(checkpoint)
        if not ckpt.is_file():
            raise DalDistError(f"checkpoint {ckpt}: file not found")
        data = ckpt.read_bytes()
        self.out = check_stream_out(Path(out))
        self.rejects_dir = self.out / REJECTS_DIR
        self.acquisition = names[0]
        self.batch_size = batch_size
        self.oracle = oracle if oracle == "simulated" else None
        self.bad_files = bad_files
        self.config = {"acquisition": self.acquisition, "budget": calibrator.budget,
                       "expected": calibrator.expected, "window": calibrator.window, "warmup": calibrator.warmup,
                       "slack": calibrator.slack, "mc_samples": mc_samples, "seed": seed, "batch_size": batch_size,
                       "checkpoint_sha256": hashlib.sha256(data).hexdigest()}
        self.scorer = BatchScorer(data, [self.acquisition], mc_samples=mc_samples, seed=seed, threads=threads,
                                  rejects_dir=str(self.rejects_dir), device=device)
        if self.acquisition == "pred_loss" and not self.scorer.model.has_loss_module:
            raise DalDistError(f"checkpoint {ckpt}: `pred_loss` needs a model trained with Learning Loss")
        check_batch_memory(self.scorer.model, mc_samples, batch_size, None)
        self._fresh = calibrator
        self.calibrator = calibrator
        self.state: dict[str, Any] = {}

    def _lock(self) -> DirectoryLock:
        """Exclusive lock on the output directory: two streams writing one output would double-decide."""
        return DirectoryLock(self.out, "stream output", "another stream is writing this output directory")

    # -- sources
    def run_iterator(self, batches: Iterable[tuple[np.ndarray, ...]], source: str = "iterator") -> StreamSummary:
        """Consume (ids, uint8 N×H×W×C images[, labels]) batches; batch i is keyed `batch-<i>` for restarts."""
        with self._lock():
            t0 = time.perf_counter()
            self._load_state(source)
            stopped = "source_exhausted"
            for i, batch in enumerate(batches):
                key = f"batch-{i:08d}"
                if key in self._processed:
                    continue
                ids, images, labels = _unpack(batch, key)
                if self.calibrator.remaining_budget == 0:
                    stopped = "budget_spent"
                    break
                snap = self.calibrator.state()
                try:
                    ids, dec, labels = self._score_arrays(key, ids, images, labels)
                except BaseException:
                    self.calibrator = BudgetCalibrator.from_state(snap)
                    raise
                self._commit(key, ids, dec, labels)
                if self.calibrator.remaining_budget == 0:
                    stopped = "budget_spent"
                    break
            return self._summary(stopped, t0)

    def run_directory(self, source: str | os.PathLike, *, poll_seconds: float = 2.0,
                      idle_timeout: float | None = None, stop: threading.Event | None = None) -> StreamSummary:
        """Follow a growing pool directory: each complete Parquet file once, in name order, until idle or spent.

        A file is taken only once its Parquet footer is complete (a writer still appending is waited
        for). `idle_timeout`: stop after that many seconds with no new file and no file growing; files
        still without a footer then are truncated and handled as bad files. None: follow until `stop`
        is set (complete files present then are still taken) or the budget is spent.
        """
        if not 0 < poll_seconds <= MAX_POLL_SECONDS:
            raise DalDistError(f"poll_seconds (--poll-seconds) = {poll_seconds}: expected seconds in "
                               f"(0, {MAX_POLL_SECONDS}]")
        if idle_timeout is not None and not idle_timeout >= 0:
            raise DalDistError(f"idle_timeout (--idle-timeout) = {idle_timeout}: expected seconds >= 0")
        source = Path(source)
        if not source.is_dir():
            raise DalDistError(f"{source}: stream source not found (expected a directory of .parquet files)")
        with self._lock():
            t0 = time.perf_counter()
            self._load_state(str(source.resolve()))
            last_change = time.monotonic()
            sizes: dict[str, int] = {}
            while self.calibrator.remaining_budget > 0:
                ready, pending = _scan(source, self._processed)
                for path in ready:
                    self._process_file(path)
                    if self.calibrator.remaining_budget == 0:
                        return self._summary("budget_spent", t0)
                now_sizes = {p.name: _size(p) for p in pending}
                if ready or now_sizes != sizes:
                    last_change = time.monotonic()
                sizes = now_sizes
                if stop is not None and stop.is_set():  # drain what has fully arrived, then stop
                    for path in _scan(source, self._processed)[0]:
                        self._process_file(path)
                        if self.calibrator.remaining_budget == 0:
                            return self._summary("budget_spent", t0)
                    return self._summary("stop_requested", t0)
                if idle_timeout is not None and time.monotonic() - last_change >= idle_timeout:
                    for p in pending:
                        self._bad_file(p, f"truncated: no complete Parquet footer after {idle_timeout:g}s "
                                               f"idle ({_size(p)} bytes)")
                    return self._summary("idle_timeout", t0)
                if stop is not None:
                    stop.wait(poll_seconds)
                else:
                    time.sleep(poll_seconds)
            return self._summary("budget_spent", t0)

    # -- per batch
    def _process_file(self, path: Path) -> None:
        """Read, score and decide one arrived file; a corrupt file is rejected whole (or raised)."""
        from dal_dist.pool import DECODE_COLUMNS, check_schema

        snap = self.calibrator.state()
        ids_parts, dec_parts, label_parts = [], [], []
        try:
            try:
                pf = pq.ParquetFile(path)
                check_schema(str(path), pf.schema_arrow)
                names = pf.schema_arrow.names
                if self.oracle and "label" not in names:
                    raise DalDistError(f"{path}: the simulated oracle needs a `label` column; this file has none")
                cols = [c for c in (*DECODE_COLUMNS, "label") if c in names]
                for rb in pf.iter_batches(batch_size=self.batch_size, columns=cols):
                    ids, dec, labels = self._score_record_batch(path, rb)
                    ids_parts.append(ids)
                    dec_parts.append(dec)
                    label_parts.append(labels)
            except (pa.ArrowException, OSError) as e:
                raise DalDistError(f"{path}: not a readable Parquet file (truncated or corrupt?): {e}") from e
        except DalDistError as e:
            self.calibrator = BudgetCalibrator.from_state(snap)
            if self.bad_files == "error":
                raise
            self._bad_file(path, str(e))
            return
        except BaseException:
            self.calibrator = BudgetCalibrator.from_state(snap)
            raise
        self._commit(path.stem, *_concat(ids_parts, dec_parts, label_parts), name=path.name)

    def _score_record_batch(self, path: Path, rb: pa.RecordBatch
                            ) -> tuple[np.ndarray, dict[str, Any], np.ndarray | None]:
        """Score one pool batch with `BatchScorer.__call__` (undecodable rows go to rejects/) and decide it."""
        if rb.column("id").null_count:
            raise DalDistError(f"{path}: column `id` has {rb.column('id').null_count} null values")
        scored = self.scorer(pa.Table.from_batches([rb]))
        ids = scored.column("id").to_numpy().astype(np.int64, copy=False)
        labels = None
        if self.oracle:
            all_ids = rb.column("id").to_numpy()
            lab = rb.column("label").filter(pa.array(np.isin(all_ids, ids)))  # scorer keeps input order
            labels = np.asarray(lab.fill_null(-1), dtype=np.int64)
        scores = scored.column(self.acquisition).to_numpy(zero_copy_only=False)
        return ids, self._decide(ids, scores, labels, str(path)), labels

    def _score_arrays(self, key: str, ids: np.ndarray, images: np.ndarray,
                      labels: np.ndarray | None) -> tuple[np.ndarray, dict[str, Any], np.ndarray | None]:
        """Score an iterator batch with `BatchScorer.score_images` (already decoded pixels) and decide it."""
        if self.oracle and labels is None:
            raise DalDistError(f"{key}: the simulated oracle needs (ids, images, labels) batches")
        chunks_scores = []
        for s in range(0, len(ids), self.batch_size):
            t = self.scorer.score_images(ids[s:s + self.batch_size], images[s:s + self.batch_size])
            chunks_scores.append(t.column(self.acquisition).to_numpy(zero_copy_only=False))
        scores = np.concatenate(chunks_scores) if chunks_scores else np.zeros(0, np.float32)
        return ids, self._decide(ids, scores, labels, key), labels

    def _decide(self, ids: np.ndarray, scores: np.ndarray, labels: np.ndarray | None, where: str) -> dict[str, Any]:
        """Run the calibrator over the batch in arrival order; returns the decision columns."""
        start = self.calibrator.seen
        lab, thr, reasons = self.calibrator.decide_many(scores)
        if labels is not None and (labels[lab] < 0).any():  # the caller rolls the calibrator back
            bad = int(ids[lab & (labels < 0)][0])
            raise DalDistError(f"{where}: selected id {bad} has no label (the simulated oracle answers from `label`)")
        return {"arrival": np.arange(start, start + len(ids), dtype=np.int64), "score": scores.astype(np.float32),
                "threshold": thr, "label": lab, "reason": reasons}

    def _commit(self, key: str, ids: np.ndarray, dec: dict[str, Any], labels: np.ndarray | None,
                name: str | None = None) -> None:
        """Write this batch's decisions, selected ids and labels, then the state naming it processed."""
        lab = dec["label"]
        table = pa.table({"id": pa.array(ids, pa.int64()), "arrival": dec["arrival"], "score": dec["score"],
                          "threshold": pa.array(dec["threshold"], pa.float64(), from_pandas=True),
                          "decision": pa.array(np.where(lab, "label", "skip").tolist(), pa.string()),
                          "reason": pa.array(dec["reason"], pa.string())}, schema=DECISIONS_SCHEMA)
        write_parquet_atomic(self.out / DECISIONS_DIR / f"{key}.parquet", table)
        write_parquet_atomic(self.out / SELECTED_DIR / f"{key}.parquet",
                             table.filter(pa.array(lab)).select(["id", "arrival", "score"]))
        if self.oracle and labels is not None:
            write_parquet_atomic(self.out / LABELS_DIR / f"{key}.parquet",
                                 pa.table({"id": pa.array(ids[lab], pa.int64()),
                                           "label": pa.array(labels[lab], pa.int64())}))
            self.state["labels_written"] += int(lab.sum())
        thr = dec["threshold"][-1] if len(ids) else math.nan
        self.state["trace"].append({"batch": name or key, "items": int(len(ids)), "batch_labeled": int(lab.sum()),
                                    "seen": self.calibrator.seen, "labeled": self.calibrator.labeled,
                                    "threshold": _json_float(thr)})
        self._processed.add(key)
        self.state["processed"].append(key)
        self._run_items += len(ids)
        self._save_state()

    def _bad_file(self, path: Path, reason: str) -> None:
        """Record a rejected file (state `rejected_files`); it is never retried."""
        if not reason.startswith(str(path)):
            reason = f"{path}: {reason}"
        if self.bad_files == "error":
            raise DalDistError(reason)
        log.warning("stream: skipping %s", reason)
        self.state["rejected_files"].append({"file": path.name, "reason": reason})
        self._processed.add(path.stem)
        self.state["processed"].append(path.stem)
        self._save_state()

    # -- state
    def _load_state(self, source: str) -> None:
        path = self.out / STATE_FILE
        config = {**self.config, "source": source}
        if path.is_file():
            try:
                state = json.loads(path.read_text())
            except (OSError, ValueError) as e:
                raise DalDistError(f"{path}: not valid JSON: {e}") from e
            if not isinstance(state, dict) or state.get("format") != STATE_FORMAT:
                raise DalDistError(f"{path}: not a dal-dist stream state (expected format {STATE_FORMAT!r})")
            diff = {k: (state["config"].get(k), v) for k, v in config.items() if state["config"].get(k) != v}
            if diff:
                shown = ", ".join(f"{k}: {a!r} in the state vs {b!r} now" for k, (a, b) in sorted(diff.items()))
                raise DalDistError(f"{path}: this output directory belongs to a stream with other settings "
                                   f"({shown}); use a new --out or the same settings to resume")
            self.calibrator = BudgetCalibrator.from_state(state["calibrator"])
        else:
            state = {"format": STATE_FORMAT, "config": config, "processed": [], "rejected_files": [],
                     "trace": [], "labels_written": 0}
            self.calibrator = BudgetCalibrator.from_state(self._fresh.state())
        self.state = state
        self._processed = set(state["processed"])
        self._run_items = 0

    def _save_state(self) -> None:
        self.state["calibrator"] = self.calibrator.state()
        write_json_atomic(self.out / STATE_FILE, self.state)

    def _summary(self, stopped: str, t0: float) -> StreamSummary:
        c = self.calibrator
        if not self.state.get("calibrator"):
            self._save_state()
        trace = self.state["trace"]
        step = max(1, math.ceil(len(trace) / _TRACE_POINTS))
        shown = [{k: t[k] for k in ("seen", "labeled", "threshold")} for t in trace[::step]]
        if trace and trace[-1]["seen"] != (shown[-1]["seen"] if shown else None):
            shown.append({k: trace[-1][k] for k in ("seen", "labeled", "threshold")})
        last = next((t["threshold"] for t in reversed(trace) if t["threshold"] is not None), None)
        seconds = time.perf_counter() - t0
        return StreamSummary(
            budget=c.budget, expected=c.expected, labeled=c.labeled, seen=c.seen,
            budget_used=c.labeled / c.budget if c.budget else 1.0, final_threshold=last, batches=len(trace),
            rejected_rows=_count_rows(self.rejects_dir), rejected_files=list(self.state["rejected_files"]),
            stopped=stopped, threshold_trace=shown, seconds=seconds,
            items_per_s=self._run_items / seconds if seconds else 0.0, out=str(self.out),
            labels_written=int(self.state["labels_written"]))


# --------------------------------------------------------------------------------------- helpers
def check_stream_out(out: Path) -> Path:
    """`out`, refused when it is a file, or a non-empty directory that is not a stream's output (a stream
    never writes into the user's other data)."""
    if out.exists() and not out.is_dir():
        raise DalDistError(f"out (--out) {out}: is a file; expected a stream output directory")
    if out.is_dir() and not (out / STATE_FILE).is_file():
        foreign = sorted(n for n in os.listdir(out) if n not in OWN_ENTRIES)
        if foreign:
            raise DalDistError(f"out (--out) {out}: holds {', '.join(foreign[:5])}"
                               f"{' ...' if len(foreign) > 5 else ''} and is not a stream output (no {STATE_FILE}); "
                               "choose a new or empty directory")
    return out


def parquet_footer_complete(path: str | os.PathLike) -> bool:
    """True when a file ends in a whole Parquet footer (`<metadata><len:4><PAR1>`): its writer has closed it."""
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size < 12 or f.read(4) != _MAGIC:
                return False
            f.seek(size - 8)
            tail = f.read(8)
    except OSError:
        return False
    return tail[4:] == _MAGIC and int.from_bytes(tail[:4], "little") <= size - 12


_MAGIC = b"PAR1"


def _scan(source: Path, processed: set[str]) -> tuple[list[Path], list[Path]]:
    """(complete unprocessed files in name order, unprocessed files still without a footer)."""
    ready, pending = [], []
    for p in sorted(source.iterdir()):
        if p.name.startswith(("_", ".")) or p.suffix != ".parquet" or p.stem in processed or not p.is_file():
            continue
        (ready if parquet_footer_complete(p) else pending).append(p)
    return ready, pending


def _size(p: Path) -> int:
    try:
        return p.stat().st_size
    except OSError:
        return -1


def _unpack(batch: Any, key: str) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Validate an iterator batch at the boundary: int ids, uint8 N×H×W×C images, optional int labels."""
    if not isinstance(batch, (tuple, list)) or len(batch) not in (2, 3):
        raise DalDistError(f"{key}: expected a tuple (ids, images) or (ids, images, labels), got {type(batch).__name__}")
    ids = np.asarray(batch[0])
    images = np.asarray(batch[1])
    labels = np.asarray(batch[2], dtype=np.int64) if len(batch) == 3 and batch[2] is not None else None
    if ids.ndim != 1 or not np.issubdtype(ids.dtype, np.integer):
        raise DalDistError(f"{key}: ids must be a 1-d integer array, got {ids.dtype} {ids.shape}")
    if images.dtype != np.uint8 or images.ndim != 4 or len(images) != len(ids):
        raise DalDistError(f"{key}: images must be uint8 N×H×W×C with N={len(ids)}, got {images.dtype} {images.shape}")
    if labels is not None and labels.shape != ids.shape:
        raise DalDistError(f"{key}: labels must have one entry per id, got shape {labels.shape}")
    return ids.astype(np.int64, copy=False), images, labels


def _concat(ids: list[np.ndarray], decs: list[dict[str, Any]], labels: list[np.ndarray | None]
            ) -> tuple[np.ndarray, dict[str, Any], np.ndarray | None]:
    if not ids:
        return (np.zeros(0, np.int64), {"arrival": np.zeros(0, np.int64), "score": np.zeros(0, np.float32),
                                        "threshold": np.zeros(0), "label": np.zeros(0, bool), "reason": []}, None)
    dec = {k: (sum((d[k] for d in decs), []) if k == "reason" else np.concatenate([d[k] for d in decs]))
           for k in decs[0]}
    lab = None if labels[0] is None else np.concatenate(labels)  # type: ignore[arg-type]
    return np.concatenate(ids), dec, lab


def _json_float(x: float) -> float | None:
    return None if x is None or not math.isfinite(float(x)) else float(x)


def _count_rows(directory: Path) -> int:
    if not directory.is_dir():
        return 0
    return sum(pq.ParquetFile(p).metadata.num_rows for p in directory.glob("*.parquet"))
