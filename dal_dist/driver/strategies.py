"""The strategies a run can use, as one table: what each one scores, how it picks, what else it needs.

A new strategy is one row here (plus its selection function in `dal_dist.selection`); the driver's
control flow never branches on a strategy's name.
"""

from __future__ import annotations

from dataclasses import dataclass

from dal_dist.models.checkpoint import CHECKPOINT_FILE
from dal_dist.scoring.acquisition import ACQUISITIONS

UNCERTAINTY = tuple(ACQUISITIONS)  # the MC-dropout acquisitions of Gal et al. 2017, each a top-k strategy

SELECTOR_FILE = "selector.pt"  # SRAAL's trained selector of a round (model.pt stays the task model)
CLUSTERS_FILE = "clusters.parquet"  # Cluster-Margin's (id, cluster) of the pool, made in round 1, reused after


@dataclass(frozen=True)
class Strategy:
    """How one strategy runs a round: `score` columns from `checkpoint`, then `pick` over them."""

    name: str
    pick: str  # the dal_dist.selection strategy: topk, kcenter, hybrid, random, powerbald, ..., badge
    score: tuple[str, ...] = ()  # acquisition columns to compute; () = no scoring step at all
    rank_by: str | None = None  # the column topk ranks by
    checkpoint: str = CHECKPOINT_FILE  # what scoring loads: the task model or a selector
    embed_labeled: bool = False  # k-center needs the labeled rows' embeddings as initial centers
    subset_option: str | None = None  # config field sizing a random scored subset: subset or ll_subset
    extra_steps: tuple[str, ...] = ()  # round steps after `label` (BGADL's generate)
    trains_selector: bool = False  # SRAAL: a state-relabeling selector is trained beside the task model
    learning_loss: bool = False  # the task model carries a loss-prediction head (Yoo & Kweon 2019)
    reads_generated: bool = False  # BGADL: training also reads earlier rounds' generated x'
    takes_by: bool = False  # the config's `by` names the score column it ranks/samples by (default rank_by/bald)
    options: tuple[str, ...] = ()  # further strategy-section fields the pick uses (beta)
    keep_probs: bool = False  # scoring writes `probs` (mean softmax, dropout off): BADGE
    cluster_file: str | None = None  # a run-directory file the pick makes once and reuses (Cluster-Margin)
    reruns_model: bool = False  # the pick re-runs `checkpoint` on its candidates (pool, mc_samples): BatchBALD

    @property
    def reads_embeddings(self) -> bool:
        """Whether the pick reads the scores' `embedding` column (top-k and the samplers do not)."""
        return self.pick in ("kcenter", "hybrid", "badge", "typiclust", "density", "cluster_margin")

    def acquisitions(self, by: str | None) -> list[str]:
        """Columns scoring writes; a `takes_by` strategy scores whatever its `by` names (default rank_by/bald)."""
        return [self.by_column(by)] if self.takes_by else list(self.score)

    def by_column(self, by: str | None) -> str:
        """The score column a `takes_by` strategy ranks or samples by."""
        return by or self.rank_by or "bald"


def _uncertainty(name: str) -> Strategy:
    return Strategy(name, "topk", score=(name,), rank_by=name, subset_option="subset")


STRATEGIES: dict[str, Strategy] = {s.name: s for s in [
    *(_uncertainty(n) for n in UNCERTAINTY),
    Strategy("random", "random"),
    # Sener & Savarese 2018: k-center on embeddings; entropy comes along for free in the same pass.
    Strategy("kcenter", "kcenter", score=("entropy",), embed_labeled=True, subset_option="subset"),
    Strategy("hybrid", "hybrid", score=("bald",), embed_labeled=True, takes_by=True, options=("candidates",),
             subset_option="subset"),
    # Kirsch et al. 2023: the batch sampled with p ∝ bald^β, exp(β·bald) or rank^-β (β → ∞: top-k).
    *(Strategy(n, n, score=("bald",), rank_by="bald", subset_option="subset", takes_by=True, options=("beta",))
      for n in ("powerbald", "softmax", "softrank")),
    # Ash et al. 2020: k-means++ on gradient embeddings (probs, embedding); entropy comes along in the pass.
    Strategy("badge", "badge", score=("entropy",), keep_probs=True, subset_option="subset"),
    # Hacohen et al. 2022: the most typical row of the least-covered k-means clusters (labeled rows counted).
    Strategy("typiclust", "typiclust", score=("entropy",), embed_labeled=True, options=("clusters",),
             subset_option="subset"),
    # Settles & Craven 2008: bald × (mean cosine similarity to the unlabeled pool)^β, top-k.
    Strategy("density", "density", score=("bald",), rank_by="bald", takes_by=True, options=("beta",),
             subset_option="subset"),
    # Citovsky et al. 2021: top-M by margin, round-robin over the pool's clusters (clustered once per run).
    Strategy("cluster_margin", "cluster_margin", score=("margin",), rank_by="margin",
             options=("candidates", "clusters"), cluster_file=CLUSTERS_FILE),
    # Kirsch et al. 2019: greedy joint mutual information on the top-M BALD rows, shared dropout masks.
    Strategy("batchbald", "batchbald", score=("bald",), rank_by="bald", options=("candidates",), reruns_model=True),
    Strategy("learning_loss", "topk", score=("pred_loss",), rank_by="pred_loss", subset_option="ll_subset",
             learning_loss=True),
    # Zhang et al. 2020: rank by the selector's predicted "unlabeled" state.
    Strategy("sraal", "topk", score=("sraal",), rank_by="sraal", checkpoint=SELECTOR_FILE, subset_option="subset",
             trains_selector=True),
    # Tran et al. 2019: BALD picks x*, then a VAE-ACGAN adds x' = g(e(x*)) with x*'s label.
    Strategy("bgadl", "topk", score=("bald",), rank_by="bald", subset_option="subset", extra_steps=("generate",),
             reads_generated=True),
]}
STRATEGY_NAMES = tuple(STRATEGIES)
SUBSET_STRATEGIES = tuple(n for n, s in STRATEGIES.items() if s.subset_option == "subset")
