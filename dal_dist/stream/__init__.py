"""Stream-based selective sampling: score each arriving item once, label it or skip it for good.

The survey's second active-learning scenario (Settles 2009, §2.2), in two layers: `BudgetCalibrator`
(calibrator: pure, the online label/skip rule under a budget) and `StreamSelector` (selector: scoring,
growing-directory reading, atomic per-batch output, restartable state).
"""

from dal_dist.stream.calibrator import BudgetCalibrator, Decision
from dal_dist.stream.selector import (DECISIONS_DIR, LABELS_DIR, SELECTED_DIR, STATE_FILE, StreamSelector,
                                      StreamSummary, parquet_footer_complete)

__all__ = ["BudgetCalibrator", "DECISIONS_DIR", "Decision", "LABELS_DIR", "SELECTED_DIR", "STATE_FILE",
           "StreamSelector", "StreamSummary", "parquet_footer_complete"]
