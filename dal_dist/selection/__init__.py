"""Selection: which unlabeled ids to label next (top-k, k-center, hybrid, random, k-center init, the
stochastic PowerBALD/softmax/softrank batches of Kirsch et al. 2023, BADGE, TypiClust, information density,
Cluster-Margin, BatchBALD).

One pattern: `select(strategy, k, ...)` is the one dispatcher; each strategy has a dataset-level
`select_<strategy>` (a scores dataset, or the pool for kcenter-init, in; ids out) built on an array-level
function named for its algorithm (`kcenter_greedy`, `merge_topk`, `random_ids`). `write_selection`
publishes the table; `check_selection_out` refuses a bad output path before the selection runs.
The Ray-sharded greedy is `dal_dist.selection.kcenter_sharded.kcenter_greedy_sharded` (imports Ray).
"""

from dal_dist.selection.badge import badge_kmeanspp, select_badge
from dal_dist.selection.batchbald import batchbald, select_batchbald
from dal_dist.selection.cluster_margin import hac_clusters, round_robin, select_cluster_margin
from dal_dist.selection.coreset import select_kcenter
from dal_dist.selection.density import information_density, select_density
from dal_dist.selection.dispatch import STRATEGIES, check_select_arguments, select
from dal_dist.selection.hybrid import select_hybrid
from dal_dist.selection.init import select_kcenter_init
from dal_dist.selection.kcenter import kcenter_greedy
from dal_dist.selection.output import check_selection_out, write_selection
from dal_dist.selection.random import random_ids, select_random
from dal_dist.selection.stochastic import select_powerbald, select_softmax, select_softrank, stochastic_batch
from dal_dist.selection.topk import merge_topk, select_topk
from dal_dist.selection.typiclust import select_typiclust, typiclust

__all__ = ["STRATEGIES", "badge_kmeanspp", "batchbald", "check_select_arguments", "check_selection_out",
           "hac_clusters", "information_density", "kcenter_greedy", "merge_topk", "random_ids", "round_robin",
           "select", "select_badge", "select_batchbald", "select_cluster_margin", "select_density", "select_hybrid",
           "select_kcenter", "select_kcenter_init", "select_powerbald", "select_random", "select_softmax",
           "select_softrank", "select_topk", "select_typiclust", "stochastic_batch", "typiclust", "write_selection"]
