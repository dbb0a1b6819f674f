"""Score many: MC-dropout scores of a head over cached embeddings, with no image decode and no backbone.

A frozen-backbone run (`model.backbone: frozen`) embeds its pool once (`dal-dist embed`), then each round
trains only a dropout head (`embedding-head`) and scores it here: `embedding` rows stream from the
embeddings dataset through the head's deterministic part once and its last layer T times, into a scores
dataset of the same schema, under the same staging → verify → publish contract as `score_pool`. It runs in
this process: a head pass over a million rows takes seconds, less than starting an actor pool.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

from dal_dist.errors import DalDistError
from dal_dist.interrupts import sigterm_raises
from dal_dist.scoring.embed import EmbeddingsInfo, embedding_matrix, embeddings_info
from dal_dist.scoring.pipeline import (ScoreSummary, ScoringPlan, check_arguments, check_model_fits, check_output,
                                       count_in_pool, exclude_rows, run_local)
from dal_dist.scoring.scorer import BatchScorer, PreparedBatch

EMBEDDING_BATCH_ROWS = 65_536  # rows read per batch: a head costs little per row, Arrow overhead a lot per batch


class BatchHeadScorer(BatchScorer):
    """`BatchScorer` whose inputs are the `embedding` rows of an embeddings dataset instead of images."""

    def prepare(self, batch: pa.Table) -> PreparedBatch:
        batch, is_labeled = self.without_labeled(batch)
        with self.copy_stream():
            x = self.to_device(embedding_matrix(batch.column("embedding"), self.config.in_channels)) \
                if batch.num_rows else None
            return self.prepared(batch.column("id").to_numpy(), x, is_labeled)


def score_embeddings(embeddings: str | os.PathLike, checkpoint: str | os.PathLike, out: str | os.PathLike, *,
                     acquisitions: str | list[str] = "bald", mc_samples: int = 20,
                     labeled: str | os.PathLike | np.ndarray | None = None, embed_labeled: bool = False,
                     embedding_dtype: str = "float16", batch_size: int = EMBEDDING_BATCH_ROWS, seed: int = 0,
                     threads: int | None = None, overwrite: bool = False, keep_probs: bool = False,
                     exclude: np.ndarray | None = None, write_embedding: bool = True) -> ScoreSummary:
    """Score every unlabeled row of an embeddings dataset with a head checkpoint; one output row per id.

    The checkpoint must take the embeddings' width (an `embedding-head` trained on them). Everything is
    checked before any work; an interrupt or error publishes nothing (see `score_pool`). `write_embedding`
    False leaves the `embedding` column out: a top-k pick never reads it, and copying a million cached
    rows back out would cost more than scoring them.
    """
    t_call = time.time()
    names = check_arguments(acquisitions, mc_samples=mc_samples, workers=1, batch_size=batch_size,
                            threads_per_worker=threads, cpus_per_worker=None, gpus_per_worker=None,
                            embedding_source="head", embedding_dtype=embedding_dtype, executor="local")
    out = check_output(out, {"embeddings": embeddings, "checkpoint": checkpoint, "--labeled file": labeled},
                       overwrite)
    plan = plan_head_scoring(embeddings_info(embeddings), checkpoint, out, names, mc_samples=mc_samples,
                             labeled=labeled, embed_labeled=embed_labeled, embedding_dtype=embedding_dtype,
                             batch_size=batch_size, seed=seed, overwrite=overwrite)
    plan.keep_probs, plan.write_embedding = bool(keep_probs), bool(write_embedding)
    exclude_rows(plan, exclude)
    with sigterm_raises():
        return run_local(plan, threads, t_call, scorer_cls=BatchHeadScorer)


def plan_head_scoring(info: EmbeddingsInfo, checkpoint: str | os.PathLike, out: Path | str, names: list[str], *,
                      mc_samples: int, labeled: str | os.PathLike | np.ndarray | None, embed_labeled: bool,
                      embedding_dtype: str, batch_size: int, seed: int, overwrite: bool) -> ScoringPlan:
    """The head fits the embeddings (width, scores it can emit), the labeled ids counted, and the plan."""
    from dal_dist.models import load_checkpoint
    from dal_dist.pool import read_ids

    model = load_checkpoint(checkpoint)
    c = model.config
    if c.image_size != 1 or c.in_channels != info.dim:
        raise DalDistError(f"checkpoint {checkpoint}: model {c.name!r} takes {c.in_channels}x{c.image_size}x"
                           f"{c.image_size} inputs; the embeddings {info.path} are {info.dim}-wide rows: score them "
                           f"with a head trained on them (model 'embedding-head', in_channels={info.dim})")
    check_model_fits(model, names, checkpoint, info.path, None, (1, 1, info.dim))
    labeled_ids = None
    if labeled is not None:
        labeled_ids = np.unique(read_ids(labeled) if not isinstance(labeled, np.ndarray) else labeled)
    return ScoringPlan(pool=info.path, checkpoint=Path(checkpoint), out=out, acquisitions=names,
                       mc_samples=mc_samples, files=info.files, pool_rows=info.rows, pool_bytes=info.bytes,
                       labeled_ids=labeled_ids, labeled_in_pool=count_in_pool(info.files, labeled_ids),
                       embed_labeled=embed_labeled, embedding_source="head", embedding_dtype=embedding_dtype,
                       batch_size=batch_size, seed=seed, overwrite=overwrite, columns=["id", "embedding"])
