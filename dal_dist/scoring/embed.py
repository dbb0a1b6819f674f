"""Embed once: `id, embedding` of every pool row from a backbone, with the scoring job's exactly-once contract.

The backbone is a model by name (a torchvision architecture with local `weights`, a plug-in) or a
trained checkpoint; its `features(x)` (deterministic, dropout off) of every row are written as
float16 (default) or float32. The job is `score_pool`'s: checks before Ray starts, Ray Data actors (or
this process), a staging directory verified (one row per pool id, rejects apart) and renamed into place.
Rounds that train only a dropout head then score many times over these rows without decoding an image.
"""

from __future__ import annotations

import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import torch

from dal_dist.errors import DalDistError
from dal_dist.interrupts import sigterm_raises
from dal_dist.scoring.pipeline import (ScoreSummary, ScoringPlan, check_arguments, check_fits_before_start,
                                       check_output, run_local, run_ray, start_ray)
from dal_dist.scoring.placement import check_fits_local_cluster
from dal_dist.scoring.scorer import (BatchScorer, check_batch_memory, check_channels, feature_dim, vector_array,
                                     vector_type)

EMBEDDINGS_KIND = "embeddings"  # `kind` in the output's marker: what `model.embeddings` of a run config reads


class BatchEmbedder(BatchScorer):
    """`BatchScorer`'s decode → preprocess → backbone, and only that: `id, embedding` per row."""

    @torch.inference_mode()
    def score_inputs(self, ids: np.ndarray, x: torch.Tensor, is_labeled: np.ndarray | None = None) -> pa.Table:
        if len(ids) == 0:
            return self.empty_table()
        with self.autocast():
            f = self.model.features(x).float()
        emb = f.to(torch.float16 if self.embedding_dtype == np.float16 else torch.float32).cpu().numpy()
        return pa.table({"id": pa.array(ids, type=pa.int64()),
                         "embedding": vector_array(emb)})

    def empty_table(self) -> pa.Table:
        return embeddings_schema(feature_dim(self.model), self.embedding_dtype).empty_table()


def embeddings_schema(dim: int, dtype: Any = np.float16) -> pa.Schema:
    """`id` and a fixed-size `embedding` list (float16 or float32)."""
    etype = pa.float16() if np.dtype(dtype) == np.float16 else pa.float32()
    return pa.schema([pa.field("id", pa.int64(), nullable=False), pa.field("embedding", vector_type(etype, dim))])


@dataclass
class EmbeddingPlan(ScoringPlan):
    """A scoring plan with nothing to score: every row, backbone features, and what made them."""

    model_name: str = ""

    def marker(self) -> dict[str, Any]:
        return {"kind": EMBEDDINGS_KIND, "model": self.model_name, "embedding_dtype": self.embedding_dtype}


def embed_pool(pool: str | os.PathLike, out: str | os.PathLike, *, model: str | None = None,
               checkpoint: str | os.PathLike | None = None, weights: str | os.PathLike | None = None,
               image_size: int | None = None, normalize: Any = None, embedding_dtype: str = "float16",
               workers: int = 1, gpus_per_worker: float | None = None, cpus_per_worker: float | None = None,
               threads_per_worker: int | None = None, batch_size: int = 256, overwrite: bool = False,
               progress: bool = True, executor: str = "ray", address: str | None = None) -> ScoreSummary:
    """Write `id, embedding` for every row of a pool: the backbone of `model` (+ `weights`) or of `checkpoint`.

    Everything is checked before Ray starts; an interrupt or error publishes nothing (see `score_pool`).
    """
    t_call = time.time()
    check_arguments("bald", mc_samples=2, workers=workers, batch_size=batch_size,
                    threads_per_worker=threads_per_worker, cpus_per_worker=cpus_per_worker,
                    gpus_per_worker=gpus_per_worker, embedding_source="backbone", embedding_dtype=embedding_dtype,
                    executor=executor)
    if executor == "local" and (workers != 1 or gpus_per_worker or cpus_per_worker is not None):
        raise DalDistError("embed: --workers, --gpus-per-worker and --cpus-per-worker size Ray actors; "
                           "--executor local embeds in this process")
    if (model is None) == (checkpoint is None):
        raise DalDistError("embed: give exactly one of --model (a model name) and --checkpoint (a trained model)")
    if checkpoint is not None and (weights is not None or image_size is not None or normalize is not None):
        raise DalDistError("embed: --weights, --image-size and --normalize describe a model by name; a checkpoint "
                           "carries its own")
    out = check_output(out, {"pool": pool, "checkpoint": checkpoint, "weights": weights}, overwrite)
    with tempfile.TemporaryDirectory(prefix="dal-dist-embed-") as tmp:
        plan = plan_embedding(pool, out, model, checkpoint, weights, image_size, normalize, embedding_dtype,
                              batch_size, overwrite, Path(tmp))
        if executor == "local":
            with sigterm_raises():
                return run_local(plan, threads_per_worker, t_call, scorer_cls=BatchEmbedder)
        check_fits_before_start(address, workers, gpus_per_worker, cpus_per_worker, threads_per_worker)
        ray, started_here = start_ray(address)
        if started_here:
            check_fits_local_cluster(ray.cluster_resources(), workers, gpus_per_worker)
        with sigterm_raises():
            return run_ray(ray, plan, workers=workers, gpus_per_worker=gpus_per_worker,
                           cpus_per_worker=cpus_per_worker, threads_per_worker=threads_per_worker,
                           progress=progress, t_call=t_call, scorer_cls=BatchEmbedder)


def plan_embedding(pool: str | os.PathLike, out: Path | str, model: str | None, checkpoint: str | os.PathLike | None,
                   weights: str | os.PathLike | None, image_size: int | None, normalize: Any, embedding_dtype: str,
                   batch_size: int, overwrite: bool, tmp: Path) -> EmbeddingPlan:
    """The pool checked, the backbone built once here (weights read here, not on every worker), and the plan."""
    from dal_dist.models import build_model, default_config, load_checkpoint, runtime_env_for, save_checkpoint
    from dal_dist.pool import pool_files, validate_pool

    info = validate_pool(pool)
    if checkpoint is not None:
        net = load_checkpoint(checkpoint)
        path = Path(checkpoint)
    else:
        config = default_config(model, max(2, info.num_classes or 2), image_size=image_size, normalize=normalize,
                                weights=weights)
        net = build_model(config)
        path = tmp / "backbone.pt"
        save_checkpoint(net, path)  # what the actors load: the weights travel once, through the object store
    check_channels(net, info.image_shape, str(pool))
    check_batch_memory(net, 2, batch_size, info.image_shape)
    return EmbeddingPlan(pool=pool, checkpoint=path, out=out, acquisitions=[], mc_samples=2, files=pool_files(pool),
                         pool_rows=info.rows, pool_bytes=info.bytes, labeled_ids=None, labeled_in_pool=0,
                         embed_labeled=False, embedding_source="backbone", embedding_dtype=embedding_dtype,
                         batch_size=batch_size, seed=0, overwrite=overwrite, runtime_env=runtime_env_for(net.config),
                         model_name=net.config.name)


# ------------------------------------------------------------------------------------------- read
@dataclass(frozen=True)
class EmbeddingsInfo:
    """What a `dal-dist embed` output holds: its files, rows, width and the model that made it."""

    path: str
    files: list[str]
    rows: int
    dim: int
    dtype: str
    model: str
    bytes: int


def embeddings_info(path: str | os.PathLike) -> EmbeddingsInfo:
    """Check that `path` is a published `dal-dist embed` output and say what it holds, or a one-line error."""
    import json

    import pyarrow.parquet as pq

    from dal_dist import fs as fsx
    from dal_dist.scoring.publish import SCORES_MARKER

    where = str(path)
    if not fsx.is_dir(where):
        raise DalDistError(f"{where}: embeddings directory not found (make it with `dal-dist embed`)")
    marker_at = fsx.join(where, SCORES_MARKER)
    try:
        with fsx.open_input(marker_at) as f:
            marker = json.loads(f.read())
    except DalDistError:
        raise DalDistError(f"{where}: not a `dal-dist embed` output (no {SCORES_MARKER}; still being written, "
                           "or not made by dal-dist)") from None
    except ValueError as e:
        raise DalDistError(f"{where}/{SCORES_MARKER}: not valid JSON ({e})") from None
    if marker.get("kind") != EMBEDDINGS_KIND:
        raise DalDistError(f"{where}: a scores output, not embeddings (its {SCORES_MARKER} has no kind "
                           f"{EMBEDDINGS_KIND!r}); make embeddings with `dal-dist embed`")
    files = fsx.list_files(where, ".parquet")
    if not files:
        raise DalDistError(f"{where}: no embedding Parquet files")
    with fsx.open_input(files[0]) as f:
        field = pq.read_schema(f).field("embedding")
    return EmbeddingsInfo(path=where, files=files, rows=int(marker.get("rows", 0)), dim=int(field.type.list_size),
                          dtype=str(marker.get("embedding_dtype", "float16")), model=str(marker.get("model", "")),
                          bytes=sum(fsx.size(f) for f in files))


def embedding_matrix(column: pa.ChunkedArray | pa.Array, dim: int) -> np.ndarray:
    """An Arrow fixed-size-list `embedding` column as a float32 N×D matrix (one copy, no Python objects)."""
    arr = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    values = arr.values.to_numpy(zero_copy_only=False)
    if values.dtype == np.float16:  # torch converts half to float with the CPU's F16C, numpy element by element
        half = values if values.flags.writeable else values.copy()  # torch wants writable memory
        return torch.from_numpy(half).float().numpy().reshape(-1, dim)
    m = values.astype(np.float32, copy=False).reshape(-1, dim)
    return m if m.flags.writeable else m.copy()  # torch wants writable memory


def read_embedding_rows(info: EmbeddingsInfo, ids: np.ndarray) -> np.ndarray:
    """float32 embeddings of `ids`, in that order; ids with no embedding (not in the pool, or rejected) refused."""
    import pyarrow.parquet as pq

    from dal_dist import fs as fsx

    ids = np.asarray(ids, dtype=np.int64)
    want = np.unique(ids)
    found_ids, found = [], []
    for f in info.files:
        with fsx.open_input(f) as fh:
            t = pq.read_table(fh, columns=["id", "embedding"])
        fid = t.column("id").to_numpy()
        keep = np.isin(fid, want)
        if keep.any():
            found_ids.append(fid[keep])
            found.append(embedding_matrix(t.column("embedding").filter(pa.array(keep)), info.dim))
    got_ids = np.concatenate(found_ids) if found_ids else np.empty(0, np.int64)
    missing = np.setdiff1d(want, got_ids)
    if len(missing):
        raise DalDistError(f"{info.path}: no embedding for {len(missing)} of the ids asked for, e.g. "
                           f"{missing[:5].tolist()} (rejected when embedded, or not in the pool that was embedded)")
    order = np.argsort(got_ids)
    rows = np.concatenate(found)[order]
    return rows[np.searchsorted(got_ids[order], ids)]
