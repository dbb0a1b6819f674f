"""Distributed MC-dropout scoring: Ray Data streams the pool through an actor pool of `BatchScorer`s.

The per-batch work (`BatchScorer.__call__`) is plain Python, testable without Ray. The Ray layer is
`read_parquet → map_batches(BatchScorer, concurrency=workers) → write_parquet` into a staging
directory that is verified (exactly one row per unlabeled id) and then renamed into place.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import torch

from dal_dist import fs as fsx
from dal_dist.acquisition import parse_acquisitions, score_all
from dal_dist.errors import DalDistError, StorageError

log = logging.getLogger(__name__)

REJECTS_DIR = "rejects"


@dataclass
class ScoreSummary:
    """What a scoring job did: counts and throughput (printed as the job's last JSON line)."""

    rows: int
    labeled_rows: int
    rejects: int
    seconds: float
    images_per_s: float
    startup_s: float | None
    steady_images_per_s: float | None
    out: str
    workers: int
    extra: dict[str, Any] = field(default_factory=dict)


class BatchScorer:
    """Decode → preprocess → backbone once → T head samples → acquisition scores, one Arrow batch at a time.

    Built once per actor: the checkpoint bytes arrive once (object store), not with every batch.
    """

    def __init__(self, checkpoint: bytes | Any, acquisitions: list[str], mc_samples: int = 20,
                 labeled_ids: np.ndarray | Any | None = None, embed_labeled: bool = False,
                 embedding_source: str = "head", embedding_dtype: str = "float16", seed: int = 0,
                 threads: int | None = None, rejects_dir: fsx.Location | None = None,
                 progress: Any | None = None, device: str | None = None):
        from dal_dist.models import load_checkpoint

        if isinstance(checkpoint, list):  # [ObjectRef] — nested so Ray hands us the ref, we fetch once
            import ray

            checkpoint = ray.get(checkpoint[0])
        if isinstance(labeled_ids, list):
            import ray

            labeled_ids = ray.get(labeled_ids[0])
        if threads:
            torch.set_num_threads(threads)
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.model = _load_checkpoint_bytes(checkpoint, load_checkpoint).to(self.device).eval()
        self.config = self.model.config
        self.acquisitions = list(acquisitions)
        if "sraal" in self.acquisitions and not hasattr(self.model, "state_score"):
            raise DalDistError(f"`sraal` needs an SRAAL checkpoint (model 'sraal' with a state discriminator); "
                               f"this one holds model {self.config.name!r}")
        self.mc_samples = mc_samples
        self.labeled_ids = np.sort(np.asarray(labeled_ids, dtype=np.int64)) if labeled_ids is not None else None
        self.embed_labeled = embed_labeled
        self.embedding_source = embedding_source
        self.embedding_dtype = np.float16 if embedding_dtype == "float16" else np.float32
        self.seed = seed
        self.rejects_dir = rejects_dir
        self.progress = progress

    def __call__(self, batch: pa.Table) -> pa.Table:
        from dal_dist.pool import decode_images

        if isinstance(batch, dict):
            batch = pa.table(batch)
        ids = batch.column("id").to_numpy()
        if self.labeled_ids is not None and len(self.labeled_ids):
            is_labeled = np.isin(ids, self.labeled_ids, assume_unique=True)
            if is_labeled.any() and not self.embed_labeled:
                batch = batch.filter(pa.array(~is_labeled))
                is_labeled = np.zeros(batch.num_rows, dtype=bool)
        else:
            is_labeled = np.zeros(batch.num_rows, dtype=bool)
        decoded = decode_images(batch, size=None, channels=self.config.in_channels)
        if len(decoded.reject_ids):
            self._write_rejects(decoded.reject_ids, decoded.reject_reasons)
            keep = ~np.isin(batch.column("id").to_numpy(), decoded.reject_ids)
            is_labeled = is_labeled[keep]
        out = self.score_images(decoded.ids, decoded.images, is_labeled)
        if self.progress is not None and out.num_rows:
            self.progress.report.remote(out.num_rows, time.time())
        return out

    @torch.inference_mode()
    def score_images(self, ids: np.ndarray, images: np.ndarray, is_labeled: np.ndarray | None = None) -> pa.Table:
        """Score uint8 N×H×W×C images; rows flagged labeled get an embedding only (scores null)."""
        from dal_dist.models import mc_head_probs, preprocess

        n = len(ids)
        if is_labeled is None:
            is_labeled = np.zeros(n, dtype=bool)
        if n == 0:
            return self.empty_table()
        x = preprocess(torch.from_numpy(np.array(images, copy=not images.flags.writeable)).to(self.device), self.config)
        f, levels = self.model.feature_levels(x)
        emb = (self.model.embed(f) if self.embedding_source == "head" else f).float()
        # Seed the dropout masks from (seed, batch content) so re-running a batch reproduces its scores.
        torch.manual_seed(_batch_seed(self.seed, ids))
        probs = mc_head_probs(self.model, f, self.mc_samples)
        scores = score_all(probs, self.acquisitions)
        if "pred_loss" in self.acquisitions:  # Learning Loss (Yoo & Kweon 2019): predicted target loss
            scores["pred_loss"] = self.model.loss_module(levels).float()
        if "sraal" in self.acquisitions:  # SRAAL (Zhang et al. 2020): discriminator's P(unlabeled state)
            scores["sraal"] = self.model.state_score(f).float()
        mean = probs.mean(dim=0)
        conf, pred = mean.max(dim=-1)
        mask = pa.array(is_labeled) if is_labeled.any() else None
        cols: dict[str, pa.Array] = {"id": pa.array(ids, type=pa.int64())}
        for name in self.acquisitions:
            cols[name] = _masked(scores[name].cpu().numpy().astype(np.float32), mask)
        emb_np = emb.cpu().numpy().astype(self.embedding_dtype)
        cols["embedding"] = pa.FixedSizeListArray.from_arrays(pa.array(emb_np.reshape(-1)), emb_np.shape[1])
        cols["pred"] = _masked(pred.cpu().numpy().astype(np.int64), mask)
        cols["confidence"] = _masked(conf.cpu().numpy().astype(np.float32), mask)
        cols["labeled"] = pa.array(is_labeled)
        return pa.table(cols)

    def empty_table(self) -> pa.Table:
        return output_schema(self.acquisitions, _embed_dim(self.model, self.embedding_source),
                             self.embedding_dtype).empty_table()

    def _write_rejects(self, ids: np.ndarray, reasons: list[str]) -> None:
        if not self.rejects_dir:
            return
        # Named by content so a retried batch overwrites its own file: rejects stay exactly-once.
        ids = np.asarray(ids, dtype=np.int64)
        name = f"part-{int(ids.min())}-{hashlib.sha1(ids.tobytes()).hexdigest()[:12]}.parquet"
        fsx.write_table_atomic(fsx.join(self.rejects_dir, name),
                               pa.table({"id": pa.array(ids, pa.int64()), "reason": pa.array(reasons, pa.string())}))


def output_schema(acquisitions: list[str], embed_dim: int, embedding_dtype: Any = np.float16) -> pa.Schema:
    """Schema of the scores dataset (see docs/architecture.md)."""
    etype = pa.float16() if np.dtype(embedding_dtype) == np.float16 else pa.float32()
    fields = [pa.field("id", pa.int64(), nullable=False)]
    fields += [pa.field(a, pa.float32()) for a in acquisitions]
    fields += [pa.field("embedding", pa.list_(etype, embed_dim)), pa.field("pred", pa.int64()),
               pa.field("confidence", pa.float32()), pa.field("labeled", pa.bool_())]
    return pa.schema(fields)


def _masked(values: np.ndarray, mask: pa.Array | None) -> pa.Array:
    return pa.array(values, mask=mask.to_numpy(zero_copy_only=False) if mask is not None else None)


def _embed_dim(model: Any, source: str) -> int:
    if source == "head":
        return int(model.embed_dim)
    with torch.no_grad():
        c = model.config
        return int(model.features(torch.zeros(1, c.in_channels, c.image_size, c.image_size)).shape[1])


def _batch_seed(seed: int, ids: np.ndarray) -> int:
    h = hashlib.blake2b(np.asarray(ids, dtype=np.int64).tobytes(), digest_size=8, key=str(seed).encode())
    return int.from_bytes(h.digest(), "little") & ((1 << 63) - 1)


def _load_checkpoint_bytes(data: bytes, loader: Any) -> Any:
    import tempfile

    with tempfile.NamedTemporaryFile(suffix=".pt") as tmp:
        tmp.write(data)
        tmp.flush()
        return loader(tmp.name)


def score_pool(pool: str | os.PathLike, checkpoint: str | os.PathLike, out: str | os.PathLike, *,
               acquisitions: str | list[str] = "bald", mc_samples: int = 20, workers: int = 1,
               gpus_per_worker: float | None = None, cpus_per_worker: float | None = None,
               threads_per_worker: int | None = None,
               labeled: str | os.PathLike | np.ndarray | None = None, embed_labeled: bool = False,
               embedding_source: str = "head", embedding_dtype: str = "float16", batch_size: int = 256,
               seed: int = 0, overwrite: bool = False, progress: bool = True,
               executor: str = "ray") -> ScoreSummary:
    """Score every unlabeled image of a Parquet pool on the current Ray cluster; write one row per id.

    `executor="local"` streams the pool through the same `BatchScorer` in this process (no Ray): for
    pools of a few ten thousand images, starting an actor pool costs more than the scoring itself.
    """
    from dal_dist.idfile import read_ids
    from dal_dist.models import load_checkpoint
    from dal_dist.pool import pool_files, pool_listing, validate_pool

    t_call = time.time()
    names = parse_acquisitions(acquisitions, extra=("pred_loss", "sraal"))
    if mc_samples < 2:
        raise DalDistError(f"--mc-samples must be >= 2 (MC dropout needs several samples), got {mc_samples}")
    if workers < 1:
        raise DalDistError(f"--workers must be >= 1, got {workers}")
    if embedding_source not in ("head", "backbone"):
        raise DalDistError(f"--embedding must be 'head' or 'backbone', got {embedding_source!r}")
    if embedding_dtype not in ("float16", "float32"):
        raise DalDistError(f"--embedding-dtype must be float16 or float32, got {embedding_dtype!r}")
    out_local = fsx.is_local(out)  # a URI other than file:// is published by copy + marker (see _promote)
    out = out_local if out_local is not None else str(out)
    if fsx.list_dir(out) and not overwrite:
        raise DalDistError(f"{out}: output directory exists and is not empty (pass --overwrite to replace it)")
    # Structural checks before any work: schema, duplicate ids, checkpoint architecture.
    info = validate_pool(pool)
    files = pool_files(pool)
    model = load_checkpoint(checkpoint)
    if "sraal" in names and not hasattr(model, "state_score"):
        raise DalDistError(f"checkpoint {checkpoint}: `sraal` needs an SRAAL model (name 'sraal', with a state "
                           f"discriminator); this one holds model {model.config.name!r}")
    if "pred_loss" in names and not model.has_loss_module:
        raise DalDistError(f"checkpoint {checkpoint}: `pred_loss` needs a model trained with Learning Loss "
                           f"(config extra.learning_loss); this one has no loss-prediction module")
    if info.num_classes and info.num_classes > model.config.num_classes:
        raise DalDistError(f"checkpoint {checkpoint}: model has {model.config.num_classes} classes but pool "
                           f"{pool} has labels up to {info.num_classes - 1}")
    labeled_ids = None
    if labeled is not None:
        labeled_ids = np.unique(read_ids(labeled) if not isinstance(labeled, np.ndarray) else labeled)
    labeled_in_pool = _count_in_pool(files, labeled_ids)
    if labeled_ids is not None and labeled_in_pool < len(labeled_ids):
        log.warning("%d labeled ids are not in the pool %s (ignored)", len(labeled_ids) - labeled_in_pool, pool)
    expected = info.rows - (0 if embed_labeled else labeled_in_pool)
    if executor == "local":
        return _score_local(files, checkpoint, out, names, mc_samples, labeled_ids, embed_labeled,
                            embedding_source, embedding_dtype, batch_size, seed, overwrite, expected,
                            labeled_in_pool, threads_per_worker, t_call)
    if executor != "ray":
        raise DalDistError(f"executor must be 'ray' or 'local', got {executor!r}")
    import ray  # the local executor needs no Ray at all

    if not ray.is_initialized():
        ray.init()
    ckpt_ref = ray.put(Path(checkpoint).read_bytes())
    labeled_ref = ray.put(labeled_ids) if labeled_ids is not None else None
    staging = _make_staging(out)
    from dal_dist.progress import ProgressCounter

    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    # On the driver's node: losing another node must not lose the counter (soft: any node if need be).
    tracker = ray.remote(num_cpus=0)(ProgressCounter).options(scheduling_strategy=NodeAffinitySchedulingStrategy(
        ray.get_runtime_context().get_node_id(), soft=True)).remote()
    from dal_dist.placement import node_cpus, plan_actor_resources, plan_cpus

    cpus, threads = plan_cpus(node_cpus(ray.nodes()), workers, cpus_per_worker, threads_per_worker)
    res = plan_actor_resources(ray.cluster_resources(), workers, gpus_per_worker, cpus)
    io_args = {"num_cpus": IO_TASK_CPUS}
    try:
        ctx = ray.data.DataContext.get_current()
        saved = ctx.target_min_block_size, ctx.target_max_block_size
        # Blocks are the unit an actor takes: size them so every actor gets several (the dataset keeps a
        # copy of the context, so the global one is restored right away).
        ctx.target_max_block_size = _block_bytes(info.bytes, info.rows, workers, batch_size)
        ctx.target_min_block_size = min(saved[0] or 1 << 20, ctx.target_max_block_size // 2)
        try:
            # One read task per actor keeps up with scoring (decode is vectorised) and, on a small
            # machine, avoids booting a crowd of reader processes that compete with the actors' start.
            pool_fs, pool_infos = pool_listing(pool)
            local_pool = isinstance(pool_fs, pafs.LocalFileSystem)
            with _footer_readers(len(files)):
                ds = ray.data.read_parquet([str(f) for f in files] if local_pool else [i.path for i in pool_infos],
                                           filesystem=None if local_pool else pool_fs, concurrency=workers,
                                           **io_args).select_columns(_read_columns(files))
        finally:
            ctx.target_min_block_size, ctx.target_max_block_size = saved
        ds = ds.map_batches(
            BatchScorer,
            fn_constructor_kwargs=dict(
                checkpoint=[ckpt_ref], acquisitions=names, mc_samples=mc_samples,
                labeled_ids=[labeled_ref] if labeled_ref is not None else None, embed_labeled=embed_labeled,
                embedding_source=embedding_source, embedding_dtype=embedding_dtype, seed=seed,
                threads=threads, rejects_dir=fsx.join(staging, REJECTS_DIR), progress=tracker,
                device=res.device),
            batch_size=batch_size, batch_format="pyarrow", compute=ray.data.ActorPoolStrategy(size=workers),
            **res.map_batches_kwargs(),
        )
        data_fs, data_path = fsx.resolve(fsx.join(staging, "data"))
        data_fs = None if isinstance(data_fs, pafs.LocalFileSystem) else data_fs
        _run_with_progress(lambda: ds.write_parquet(data_path, filesystem=data_fs, min_rows_per_file=batch_size * 64,
                                                    ray_remote_args=io_args, concurrency=workers),
                           tracker, info.rows - labeled_in_pool if not embed_labeled else info.rows, progress)
        try:
            rows, first, first_rows, last = ray.get(tracker.get.remote())
        except ray.exceptions.RayActorError:  # progress is informational: the row count comes from the files
            rows, first, first_rows, last = 0, None, 0, None
        written, rejects = _publish(staging, out, expected, overwrite)
    except BaseException as e:
        _abandon(staging, out, e)
    finally:
        ray.kill(tracker)
    seconds = time.time() - t_call
    steady = (rows - first_rows) / (last - first) if first and last and last > first else None
    return ScoreSummary(rows=written, labeled_rows=labeled_in_pool if embed_labeled else 0, rejects=rejects,
                        seconds=seconds, images_per_s=written / seconds if seconds else 0.0,
                        startup_s=(first - t_call) if first else None, steady_images_per_s=steady,
                        out=str(out), workers=workers)


def _score_local(files: list[str], checkpoint: str | os.PathLike, out: Path | str, names: list[str], mc_samples: int,
                 labeled_ids: np.ndarray | None, embed_labeled: bool, embedding_source: str, embedding_dtype: str,
                 batch_size: int, seed: int, overwrite: bool, expected: int, labeled_in_pool: int,
                 threads: int | None, t_call: float) -> ScoreSummary:
    """In-process scoring: same scorer, same staging → verify → promote; one Parquet file per pool file."""
    scorer = BatchScorer(Path(checkpoint).read_bytes(), names, mc_samples, labeled_ids=labeled_ids,
                         embed_labeled=embed_labeled, embedding_source=embedding_source,
                         embedding_dtype=embedding_dtype, seed=seed, threads=threads,
                         rejects_dir=None, device=None)
    staging = _make_staging(out)
    fsx.make_dirs(fsx.join(staging, "data"))
    rows, first = 0, None
    try:
        cols = _read_columns(files)
        for i, f in enumerate(files):
            pf = pq.ParquetFile(fsx.open_input(f))
            parts: list[pa.Table] = []
            try:
                for batch in pf.iter_batches(batch_size=batch_size, columns=cols):
                    scorer.rejects_dir = fsx.join(staging, REJECTS_DIR)
                    out_part = scorer(pa.Table.from_batches([batch]))
                    if out_part.num_rows:  # a batch of labeled rows only comes back empty (other schema)
                        parts.append(out_part)
                    first = first or time.time()
            except (pa.ArrowException, OSError) as e:
                raise DalDistError(f"{f}: cannot read (truncated or corrupt?): {e}") from e
            table = pa.concat_tables(parts) if parts else scorer.empty_table()
            rows += table.num_rows
            fsx.write_table_atomic(fsx.join(staging, "data", f"part-{i:05d}.parquet"), table)
        written, rejects = _publish(staging, out, expected, overwrite)
    except BaseException as e:
        _abandon(staging, out, e)
    seconds = time.time() - t_call
    return ScoreSummary(rows=written, labeled_rows=labeled_in_pool if embed_labeled else 0, rejects=rejects,
                        seconds=seconds, images_per_s=written / seconds if seconds else 0.0,
                        startup_s=(first - t_call) if first else None, steady_images_per_s=None,
                        out=str(out), workers=1)


# Read/write tasks are light; they must still fit beside the scoring actors. Actors never reserve every
# CPU of a node: Ray Data's file-listing task asks for a whole one (see `placement.plan_cpus`).
IO_TASK_CPUS = 0.25
# Ray Data's Parquet listing reads footers in batches of RAY_DATA_PARQUET_FOOTER_BATCH_SIZE files (10) on a
# pool of footer-reader actors: 32 of them by default, whatever the number of files.
MAX_FOOTER_READERS = 32


def footer_readers_for(n_files: int) -> int:
    """Footer-reader actors worth starting: one per footer batch, at most Ray's default pool of 32."""
    per_batch = max(1, int(os.environ.get("RAY_DATA_PARQUET_FOOTER_BATCH_SIZE", "10")))
    return max(1, min(MAX_FOOTER_READERS, -(-n_files // per_batch)))


@contextmanager
def _footer_readers(n_files: int) -> Iterator[None]:
    """Size Ray Data's footer-reader pool to the pool's files while the read is planned.

    The listing starts its actors all at once and only the first ceil(files / 10) ever get a footer batch;
    on a small machine the other process boots compete with the scoring actor's start (a one-file pool
    reached its first scored batch ~3 s sooner on 2 cores). A value the user set in the environment wins.
    """
    key = "RAY_DATA_PARQUET_FOOTER_NUM_ACTORS"
    if key in os.environ:
        yield
        return
    os.environ[key] = str(footer_readers_for(n_files))
    try:
        yield
    finally:
        os.environ.pop(key, None)


def _block_bytes(pool_bytes: int, rows: int, workers: int, batch_size: int) -> int:
    """Target block size: ≥ 4 blocks per actor, ≥ one scoring batch per block, ≤ 128 MiB."""
    per_row = max(1.0, pool_bytes / max(rows, 1))
    want = pool_bytes / (4 * workers)
    return int(min(128 << 20, max(want, per_row * batch_size)))


def _make_staging(out: Path | str) -> fsx.Location:
    """A fresh staging directory beside `out` on its filesystem (a `(filesystem, path)` pair off local disk)."""
    staging = fsx.join(fsx.parent(out), f".{fsx.basename(out)}.staging-{uuid.uuid4().hex[:8]}")
    if isinstance(staging, str) and fsx.is_local(staging) is not None:
        staging = Path(staging)
        staging.mkdir(parents=True)
        return staging
    staging = fsx.resolve(staging)
    fsx.make_dirs(staging)
    return staging


def _num_rows(location: fsx.Location) -> int:
    with fsx.open_input(location) as f:
        return pq.ParquetFile(f).metadata.num_rows


def _read_columns(files: list[str]) -> list[str]:
    with fsx.open_input(files[0]) as f:
        names = pq.read_schema(f).names
    return [c for c in ("id", "image", "height", "width", "channels") if c in names]


def _count_in_pool(files: list[str], labeled_ids: np.ndarray | None) -> int:
    if labeled_ids is None or not len(labeled_ids):
        return 0
    return int(sum(np.isin(_read_ids(f), labeled_ids).sum() for f in files))


def _read_ids(location: str) -> np.ndarray:
    with fsx.open_input(location) as f:
        return pq.read_table(f, columns=["id"]).column("id").to_numpy()


def _run_with_progress(fn: Any, tracker: Any, total: int, show: bool) -> None:
    """Run the blocking Ray Data write while a tqdm bar polls the progress actor."""
    import ray
    from tqdm import tqdm

    err: list[BaseException] = []

    def target() -> None:
        try:
            fn()
        except BaseException as e:  # surfaced in the caller's thread
            err.append(e)

    th = threading.Thread(target=target, daemon=True)
    th.start()
    import sys

    bar = tqdm(total=total, unit="img", desc="scoring", disable=not show, dynamic_ncols=True,
               mininterval=0.5 if sys.stderr.isatty() else 10.0)
    while th.is_alive():
        th.join(timeout=0.5)
        try:
            rows = ray.get(tracker.get.remote(), timeout=5)[0]
            bar.update(rows - bar.n)
        except Exception:  # progress is best-effort
            pass
    bar.close()
    if err:
        raise err[0]


def _publish(staging: fsx.Location, out: Path | str, expected: int, overwrite: bool) -> tuple[int, int]:
    """Verify the staged output (rows, ids once) and promote it to `out`; returns (rows, rejects)."""
    written, rejects = _verify_staging(staging, expected)
    _promote(staging, out, overwrite)
    return written, rejects


def _abandon(staging: fsx.Location, out: Path | str, e: BaseException) -> NoReturn:
    """Remove the staging directory and re-raise `e`; a file error becomes one StorageError line."""
    fsx.delete_dir(staging)
    err = _storage_error(e, out)
    if err is e:
        raise e
    raise err from e


def _storage_error(e: BaseException, out: fsx.Location) -> BaseException:
    """A file error here or in a Ray task (`RayTaskError(OSError)`, its `cause` the original) as one line."""
    if isinstance(e, DalDistError) or not isinstance(e, OSError):
        return e
    cause = getattr(e, "cause", None)
    cause = cause if isinstance(cause, OSError) else e
    why = f"[Errno {cause.errno}] {cause.strerror}" if cause.strerror else str(cause)  # not Ray's retry note
    err = StorageError(f"{fsx.describe(out)}: scoring failed on a file operation ({why}); nothing was published "
                       "and the previous output, if any, is intact")
    err.errno = cause.errno
    return err


def _verify_staging(staging: fsx.Location, expected: int) -> tuple[int, int]:
    """Exactly `expected` rows (footer counts) and every id once, or refuse to publish.

    The id check catches what a count cannot: a retried task whose first attempt left a file behind
    (a duplicate) while another block went missing. It reads only the `id` column (8 bytes a row).
    """
    data = fsx.list_files(fsx.join(staging, "data"), ".parquet")
    reject_files = fsx.list_files(fsx.join(staging, REJECTS_DIR), ".parquet")
    written = sum(_num_rows(f) for f in data)
    rejects = sum(_num_rows(f) for f in reject_files)
    if written + rejects != expected:
        raise DalDistError(f"scoring wrote {written} rows + {rejects} rejects, expected {expected}: "
                           f"output not published (staging {fsx.describe(staging)} removed)")
    ids = [np.zeros(0, np.int64)]
    for f in data + reject_files:
        with fsx.open_input(f) as fh:
            ids.append(pq.read_table(fh, columns=["id"]).column("id").to_numpy().astype(np.int64, copy=False))
    uniq, counts = np.unique(np.concatenate(ids), return_counts=True)
    if len(uniq) != written + rejects:
        raise DalDistError(f"scoring wrote ids more than once, e.g. {uniq[counts > 1][:5].tolist()} (a retried task "
                           f"left a second copy?): output not published (staging {fsx.describe(staging)} removed)")
    return written, rejects


def _promote(staging: fsx.Location, out: Path | str, overwrite: bool) -> None:
    """Publish: staging/data → out (and rejects → out/rejects) with renames, never a half-written out.

    Off local disk there is no rename: `out` is replaced by copying, `_COMPLETE` written last
    (`fsx.move_dir`), and readers of scores require the marker there (`selection.io.score_files`).
    """
    if not isinstance(staging, Path):
        if fsx.list_dir(out):
            if not overwrite:
                raise DalDistError(f"{out}: appeared while scoring; not overwritten")
            fsx.delete_dir(out)
        if fsx.is_dir(fsx.join(staging, REJECTS_DIR)):
            fsx.copy_tree(fsx.join(staging, REJECTS_DIR), fsx.join(staging, "data", REJECTS_DIR))
        fsx.make_dirs(fsx.join(staging, "data"))
        fsx.move_dir(fsx.join(staging, "data"), fsx.resolve(out))
        fsx.delete_dir(staging)
        return
    final = staging / "final"
    (staging / "data").rename(final) if (staging / "data").exists() else final.mkdir()
    if (staging / REJECTS_DIR).exists():
        (staging / REJECTS_DIR).rename(final / REJECTS_DIR)
    old = None
    if out.exists():
        if not overwrite and any(out.iterdir()):
            raise DalDistError(f"{out}: appeared while scoring; not overwritten")
        old = out.parent / f".{out.name}.old-{uuid.uuid4().hex[:8]}"
        out.rename(old)
    final.rename(out)
    shutil.rmtree(staging, ignore_errors=True)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def read_scores_table(path: str | os.PathLike, columns: list[str] | None = None) -> pa.Table:
    """Small-data helper (tests, reports): the whole scores dataset as one table, rejects excluded."""
    files = fsx.list_files(path, ".parquet")
    if not files:
        raise DalDistError(f"{path}: no scores Parquet files")
    return pa.concat_tables([pq.read_table(fsx.open_input(f), columns=columns) for f in files])
