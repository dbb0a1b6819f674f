"""What a run is and how far it got: its stored config, its resolved pools, and progress read from disk.

Every step publishes its output atomically, so the set of outputs that exist *is* the state: a round with
`manifest.json` is done; in the first round without one, each step whose output exists is skipped and the
first missing one runs next.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from dal_dist.driver import layout
from dal_dist.driver.config import RunConfig, parse_config
from dal_dist.driver.ledger import LabelLedger
from dal_dist.driver.strategies import STRATEGIES
from dal_dist.errors import DalDistError
from dal_dist.locks import DirectoryLock

if TYPE_CHECKING:
    from dal_dist.pool import PoolInfo

INITIAL_STEPS = ("select", "label", "manifest")
ROUND_STEPS = ("train", "evaluate", "score", "select", "label")  # then the strategy's extra steps, then manifest
FINAL_STEPS = ("train", "evaluate", "manifest")


@dataclass
class RunState:
    """What every step needs to know about a run: its config and its resolved, validated pools."""

    run_dir: Path
    config: RunConfig
    config_hash: str
    pool: Path | str  # a local path or a URI (s3://, file://, ...; see dal_dist.fs)
    test_pool: Path | str | None
    num_classes: int
    class_names: list[str]
    image_shape: tuple[int, int, int] | None
    _pool_ids: np.ndarray | None = field(default=None, repr=False)

    def pool_ids(self) -> np.ndarray:
        """Every id of the pool (sorted): the candidates minus the ledger are the unlabeled rows."""
        if self._pool_ids is None:
            from dal_dist.pool import iter_batches

            parts = [rb.column("id").to_numpy() for rb in iter_batches(self.pool, columns=["id"])]
            self._pool_ids = np.sort(np.concatenate(parts).astype(np.int64)) if parts else np.zeros(0, np.int64)
        return self._pool_ids


def class_names_of(meta: dict, num_classes: int) -> list[str]:
    """Class names of a pool: its meta `classes` (image-folder pools) or the indices as strings."""
    names = meta.get("classes")
    if isinstance(names, list) and len(names) == num_classes:
        return [str(n) for n in names]
    return [str(i) for i in range(num_classes)]


def resolve_state(run_dir: Path, cfg: RunConfig, config_hash: str) -> RunState:
    """Materialise builtin pools and validate the pools against the config (before any work is done)."""
    from dal_dist.pool import validate_pool
    from dal_dist.pool import builtin

    data_dir = run_dir / "data"
    pool = builtin.materialize(cfg.pool, data_dir)
    test_ref = cfg.test_pool or builtin.default_test_pool(cfg.pool)
    test_pool = builtin.materialize(test_ref, data_dir) if test_ref else None
    info = validate_pool(pool)
    num_classes = cfg.model.num_classes or info.num_classes
    if not num_classes:
        raise DalDistError(f"pool {pool}: number of classes unknown (no `num_classes` in its meta, no labels); "
                           "set model.num_classes in the config")
    if test_pool is not None:
        _check_test_pool(validate_pool(test_pool), info.image_shape, int(num_classes))
    _check_budget_fits(cfg, info.rows, pool)
    return RunState(run_dir, cfg, config_hash, pool, test_pool, int(num_classes),
                    class_names_of(info.meta, int(num_classes)), info.image_shape)


def _check_test_pool(test: "PoolInfo", shape: tuple[int, int, int] | None, num_classes: int) -> None:
    """The test pool must be labeled, hold the pool's image shape and no class the model cannot predict."""
    if not test.has_label:
        raise DalDistError(f"test_pool {test.path}: has no `label` column; evaluation needs labels")
    if shape is not None and test.image_shape is not None and test.image_shape != shape:
        raise DalDistError(f"test_pool {test.path}: images are {test.image_shape} (height, width, channels), the "
                           f"pool's are {shape}; evaluate on images of the pool's shape")
    beyond = sorted(c for c in test.label_counts if not 0 <= c < num_classes)
    if beyond:
        raise DalDistError(f"test_pool {test.path}: labels {beyond[:5]} are outside the model's {num_classes} "
                           f"classes 0..{num_classes - 1}")


def _check_budget_fits(cfg: RunConfig, rows: int, pool: Path | str) -> None:
    """Every label the run will ask for must exist: found now, not after rounds of training."""
    if cfg.initial.size > rows:
        raise DalDistError(f"initial.size = {cfg.initial.size} exceeds the pool's {rows} images ({pool})")
    total = cfg.initial.size + sum(cfg.round_budget(r) for r in range(1, cfg.num_rounds() + 1))
    if total > rows:
        raise DalDistError(f"budget: the run asks for {total} labels (initial.size {cfg.initial.size} + "
                           f"{cfg.num_rounds()} rounds of budget {cfg.budget}), more than the pool's {rows} images "
                           f"({pool}); lower budget, rounds or total_budget")


def local_run_dir(run_dir: str | os.PathLike) -> Path:
    """A run directory as an absolute local path: a plain path or file:// URI; object stores are refused
    (the driver needs an exclusive fcntl lock and atomic renames, see dal_dist.fs.require_local)."""
    from dal_dist.fs import require_local

    path = require_local(run_dir, "a run directory").resolve()
    if path.exists() and not path.is_dir():
        raise DalDistError(f"{path}: is a file; a run directory is a directory")
    return path


def run_lock(run_dir: Path) -> DirectoryLock:
    """The one lock of a run: a driver and a label import never work on the same run at once."""
    return DirectoryLock(run_dir, "run directory", "another `dal-dist run` or `labels import` is working on it; "
                         "wait for it to finish")


def read_stored_config(run_dir: Path) -> tuple[RunConfig, str]:
    """The config and hash a run started with (its `config.json`)."""
    path = run_dir / layout.CONFIG_JSON
    if not path.is_file():
        raise DalDistError(f"{run_dir}: not a dal-dist run directory (no config.json); "
                           "start one with `dal-dist run --config FILE --run-dir DIR`")
    try:
        data = json.loads(path.read_bytes().decode("utf-8"))
        cfg = parse_config(data["config"], str(path))
        return cfg, str(data["config_hash"])
    except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as e:
        raise DalDistError(f"{path}: not a dal-dist run config ({type(e).__name__}: {e}); is {run_dir} a dal-dist "
                           "run directory?") from None


def load_run_state(run_dir: str | os.PathLike) -> RunState:
    """The state of an existing run directory, from its `config.json`."""
    run_dir = local_run_dir(run_dir)
    return resolve_state(run_dir, *read_stored_config(run_dir))


# ------------------------------------------------------------------------------ progress on disk
def steps_of(cfg: RunConfig, r: int) -> tuple[str, ...]:
    """The steps of round r, in order: initial set, acquisition round (with the strategy's extras) or final."""
    if r == 0:
        return INITIAL_STEPS
    if r > cfg.num_rounds():
        return FINAL_STEPS
    return (*ROUND_STEPS, *STRATEGIES[cfg.strategy.name].extra_steps, "manifest")


def last_round(cfg: RunConfig) -> int:
    """Index of the run's last round (the final training round when `final_train`)."""
    return cfg.num_rounds() + (1 if cfg.final_train else 0)


# The file (or folder) whose existence means a step is done; `label` is the ledger's, `score` may be absent.
_STEP_OUTPUT = {"train": layout.TRAIN_JSON, "evaluate": layout.METRICS_JSON, "score": layout.SCORES_DIR,
                "select": layout.SELECTION_FILE, "manifest": layout.MANIFEST_JSON,
                "generate": layout.GENERATE_JSON}  # generate.json is written after the model and generated file


def step_done(run_dir: Path, cfg: RunConfig, r: int, step: str) -> bool:
    """Whether a step's output exists (the only notion of progress there is)."""
    if step == "label":
        return LabelLedger(run_dir).has_round(r)
    if step == "score" and not STRATEGIES[cfg.strategy.name].score:
        return True  # a strategy that scores nothing (random) has nothing to wait for
    if step not in _STEP_OUTPUT:
        raise ValueError(step)
    return (layout.round_dir(run_dir, r) / _STEP_OUTPUT[step]).exists()


def reached_target(run_dir: Path, cfg: RunConfig, r: int) -> bool:
    """Whether round r's model met `stop_at_accuracy` (its evaluation is on disk): the run ends there."""
    if cfg.stop_at_accuracy is None or r == 0:
        return False
    m = layout.read_json(layout.round_dir(run_dir, r) / layout.METRICS_JSON)
    return bool(m) and m.get("test_accuracy") is not None and m["test_accuracy"] >= cfg.stop_at_accuracy


def remaining_steps(run_dir: Path, cfg: RunConfig, r: int) -> tuple[str, ...]:
    """Steps of round r still to run in order; a round that reached the target only writes its manifest."""
    steps = steps_of(cfg, r)
    if reached_target(run_dir, cfg, r):
        steps = tuple(s for s in steps if s in FINAL_STEPS)
    return tuple(s for s in steps if not step_done(run_dir, cfg, r, s))


def next_step(run_dir: Path, cfg: RunConfig) -> tuple[int, str] | None:
    """(round, step) that runs next, or None when the run is complete."""
    for r in range(last_round(cfg) + 1):
        if step_done(run_dir, cfg, r, "manifest"):
            if reached_target(run_dir, cfg, r):
                return None
            continue
        steps = remaining_steps(run_dir, cfg, r)
        if steps:
            return r, steps[0]
    return None


def pending_label_round(run_dir: str | os.PathLike) -> int | None:
    """The round waiting for human labels (its selection exists, the ledger lacks it), if any."""
    run_dir = local_run_dir(run_dir)
    cfg, _ = read_stored_config(run_dir)
    if cfg.oracle != "human":
        raise DalDistError(f"{run_dir}: this run uses the simulated oracle; it takes no label files")
    nxt = next_step(run_dir, cfg)
    return nxt[0] if nxt is not None and nxt[1] == "label" else None
