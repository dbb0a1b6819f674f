"""Scoring: MC-dropout acquisition scores and embeddings for every unlabeled image of a pool.

`acquisition` is the pure math (T×B×C probabilities → one score per image), `scorer.BatchScorer` the
per-batch work without Ray, `pipeline.score_pool` the job (checks → plan → Ray Data or in-process run),
`embed.embed_pool` the embeddings once, `cached.score_embeddings` a head over them many times,
`publish` the staging → verify → promote of its output, `placement` where actors run, `progress` the
progress actor.
"""

from dal_dist.interrupts import Terminated
from dal_dist.scoring.acquisition import ACQUISITIONS, parse_acquisitions, score_all
from dal_dist.scoring.cached import score_embeddings
from dal_dist.scoring.embed import EmbeddingsInfo, embed_pool, embeddings_info, read_embedding_rows
from dal_dist.scoring.pipeline import ScoreSummary, score_pool
from dal_dist.scoring.publish import REJECTS_DIR, SCORES_MARKER, read_scores_table
from dal_dist.scoring.scorer import BatchScorer, output_schema

__all__ = ["ACQUISITIONS", "REJECTS_DIR", "SCORES_MARKER", "BatchScorer", "EmbeddingsInfo", "ScoreSummary",
           "Terminated",
           "embed_pool", "embeddings_info", "output_schema", "parse_acquisitions", "read_embedding_rows",
           "read_scores_table", "score_all", "score_embeddings", "score_pool"]
