"""dal-dist: distributed deep active learning on Ray — score big Parquet image pools, pick what to label next.

The public API, from pool to labels::

    import dal_dist

    info = dal_dist.validate_pool("pool/")                        # streamed checks, nothing loaded whole
    summary = dal_dist.score_pool("pool/", "model.pt", "scores/", acquisitions="bald,entropy", mc_samples=20)
    picks = dal_dist.select("kcenter", 1000, scores="scores/")    # a pyarrow Table: `id` in pick order
    outcome = dal_dist.run(dal_dist.load_config("run.yaml"), "runs/r1")

Names are imported on first use, so `import dal_dist` alone loads neither torch nor ray.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from dal_dist.errors import DalDistError

__version__ = "0.1.0"

# public name -> the module that defines it (imported lazily by __getattr__)
_EXPORTS = {
    # pool: Parquet image pools
    "validate_pool": "dal_dist.pool", "iter_batches": "dal_dist.pool", "decode_images": "dal_dist.pool",
    "write_pool": "dal_dist.pool", "ingest_image_folder": "dal_dist.pool", "ingest_mnist_idx": "dal_dist.pool",
    "ingest_npz": "dal_dist.pool", "synth_pool": "dal_dist.pool",
    # models
    "ModelConfig": "dal_dist.models", "build_model": "dal_dist.models", "default_config": "dal_dist.models",
    "load_checkpoint": "dal_dist.models", "save_checkpoint": "dal_dist.models", "register_model": "dal_dist.models",
    # scoring
    "score_pool": "dal_dist.scoring", "ScoreSummary": "dal_dist.scoring", "BatchScorer": "dal_dist.scoring",
    "read_scores_table": "dal_dist.scoring", "embed_pool": "dal_dist.scoring",
    # training
    "train": "dal_dist.training", "evaluate": "dal_dist.training", "TrainConfig": "dal_dist.training",
    # selection
    "select": "dal_dist.selection", "write_selection": "dal_dist.selection",
    "kcenter_greedy": "dal_dist.selection",
    # stream-based selective sampling
    "StreamSelector": "dal_dist.stream", "BudgetCalibrator": "dal_dist.stream",
    # driver: resumable rounds
    "run": "dal_dist.driver", "RunConfig": "dal_dist.driver", "load_config": "dal_dist.driver",
    "parse_config": "dal_dist.driver", "run_status": "dal_dist.driver", "import_labels": "dal_dist.driver",
    "LabelLedger": "dal_dist.driver", "RunOutcome": "dal_dist.driver", "make_report": "dal_dist.driver",
    "write_html_report": "dal_dist.driver",
}

__all__ = sorted([*_EXPORTS, "DalDistError", "__version__"])


def __getattr__(name: str) -> Any:
    """Import a public name's module on first access (PEP 562), keeping `import dal_dist` light."""
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'dal_dist' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__


if TYPE_CHECKING:  # for type checkers and IDEs only: the real imports happen in __getattr__
    from dal_dist.driver import (LabelLedger, RunConfig, RunOutcome, import_labels, load_config, make_report,
                                 parse_config, run, run_status, write_html_report)
    from dal_dist.models import (ModelConfig, build_model, default_config, load_checkpoint, register_model,
                                 save_checkpoint)
    from dal_dist.pool import (decode_images, ingest_image_folder, ingest_mnist_idx, ingest_npz, iter_batches,
                               synth_pool, validate_pool, write_pool)
    from dal_dist.scoring import BatchScorer, ScoreSummary, embed_pool, read_scores_table, score_pool
    from dal_dist.selection import kcenter_greedy, select, write_selection
    from dal_dist.stream import BudgetCalibrator, StreamSelector
    from dal_dist.training import TrainConfig, evaluate, train
