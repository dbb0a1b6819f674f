"""Selection: which unlabeled ids to label next (top-k, k-center, hybrid, random, k-center init).

One pattern: `select(strategy, k, ...)` is the one dispatcher; each strategy has a dataset-level
`select_<strategy>` (a scores dataset, or the pool for kcenter-init, in; ids out) built on an array-level
function named for its algorithm (`kcenter_greedy`, `merge_topk`, `random_ids`). `write_selection`
publishes the table; `check_selection_out` refuses a bad output path before the selection runs.
The Ray-sharded greedy is `dal_dist.selection.kcenter_sharded.kcenter_greedy_sharded` (imports Ray).
"""

from dal_dist.selection.coreset import select_kcenter
from dal_dist.selection.dispatch import STRATEGIES, check_select_arguments, select
from dal_dist.selection.hybrid import select_hybrid
from dal_dist.selection.init import select_kcenter_init
from dal_dist.selection.kcenter import kcenter_greedy
from dal_dist.selection.output import check_selection_out, write_selection
from dal_dist.selection.random import random_ids, select_random
from dal_dist.selection.topk import merge_topk, select_topk

__all__ = ["STRATEGIES", "check_select_arguments", "check_selection_out", "kcenter_greedy", "merge_topk", "random_ids", "select",
           "select_hybrid", "select_kcenter", "select_kcenter_init", "select_random", "select_topk",
           "write_selection"]
