"""The run directory: where each output of a run lives, and which leftovers are dal-dist's own scratch.

    RUN_DIR/
      .lock                  fcntl lock held by the one driver (or label import) working on the run; holds its pid
      config.yaml            copy of the config as run (paths resolved)
      config.json            {"config_hash": sha256 of the canonical config JSON, "config": {...}}
      data/<builtin>/        builtin pools, materialised on first use (see dal_dist.pool.builtin)
      labels/                the ledger: round-NNNN.parquet (id, label, round, source), see driver.ledger
      rounds/000/            the initial labeled set: selection.parquet, [to_label/], timings.json, manifest.json
      rounds/NNN/            acquisition round N = 1..R:
        model.pt               checkpoint trained on the labels of rounds < N
        train.json             training metrics + per-epoch history
        metrics.json           test accuracy (null without a test pool), labels used, training metrics
        selector.pt            sraal only: the state-relabeling selector (encoder + VAE + discriminator)
        scores/                scoring output (absent for strategy random, which needs no model scores)
        selection.parquet      ids picked this round, in pick order
        to_label/              human oracle only: to_label.csv, <id>.png, tasks.json, label_config.xml
        vae_acgan.pt           bgadl only: the VAE-ACGAN fitted on the labels up to this round
        generated.parquet      bgadl only: x' = g(e(x*)) for this round's x*, with the oracle's labels
        generate.json          bgadl only, written last: the generate step is done
        timings.json           seconds per step (informational)
        manifest.json          written last: the round is complete
      rounds/R+1/            final round (final_train): model.pt, train.json, metrics.json, manifest.json
      .tmp/train-NNN/        scratch (Ray Train storage of round NNN), removed at every start of a run
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq

CONFIG_JSON = "config.json"
CONFIG_YAML = "config.yaml"
SCRATCH_DIR = ".tmp"
TRAIN_JSON = "train.json"
METRICS_JSON = "metrics.json"
SCORES_DIR = "scores"
SELECTION_FILE = "selection.parquet"
TIMINGS_JSON = "timings.json"
MANIFEST_JSON = "manifest.json"
VAE_ACGAN_FILE = "vae_acgan.pt"
GENERATED_FILE = "generated.parquet"  # BGADL's x' of a round (negative ids), beside vae_acgan.pt
GENERATE_JSON = "generate.json"

# A leftover of an interrupted write of NAME: `.NAME.<random>.tmp` (atomic file writes), `.NAME.staging-<hex>`
# (directories published by rename) or `.NAME.old-<hex>` (a directory being replaced).
_LEFTOVER = re.compile(r"^\.(?P<name>.+)\.(?:[A-Za-z0-9_]+\.tmp|staging-[0-9a-f]+|old-[0-9a-f]+)$")
# What dal-dist itself writes at the top of a run directory (anything else there may be the user's).
_TOP_LEVEL_NAMES = frozenset({CONFIG_JSON, CONFIG_YAML})


def round_dir(run_dir: str | os.PathLike, r: int) -> Path:
    """The folder of round r (000 = the initial set)."""
    return Path(run_dir) / "rounds" / f"{r:03d}"


def read_selection(run_dir: str | os.PathLike, r: int) -> np.ndarray:
    """Ids picked in round r, in pick order."""
    path = round_dir(run_dir, r) / SELECTION_FILE
    return pq.read_table(path, columns=["id"]).column("id").to_numpy().astype(np.int64, copy=False)


def read_json(path: Path) -> Any:
    """A JSON output of a step, or None while the step has not written it."""
    return json.loads(path.read_text()) if path.is_file() else None


def is_run_dir(run_dir: str | os.PathLike) -> bool:
    """Whether a directory already holds a dal-dist run (its config.json is the mark)."""
    return (Path(run_dir) / CONFIG_JSON).is_file()


def train_scratch(run_dir: Path, r: int) -> Path:
    """Ray Train's storage for round r's training (removed when the step ends, and by `clear_scratch`)."""
    return run_dir / SCRATCH_DIR / f"train-{r:03d}"


def clear_scratch(run_dir: Path) -> list[Path]:
    """Remove what a killed driver can leave in a run directory: training scratch and interrupted writes of
    dal-dist's own outputs. Nothing is touched unless the directory already is a run, and at its top level only
    leftovers of dal-dist's own files count, so a user's `.tmp/` or `.draft.tmp` beside a new run survives."""
    if not is_run_dir(run_dir):
        return []
    removed = []
    scratch = run_dir / SCRATCH_DIR
    for p in sorted(scratch.glob("train-[0-9][0-9][0-9]")) if scratch.is_dir() else []:
        shutil.rmtree(p, ignore_errors=True)
        removed.append(p)
    if scratch.is_dir() and not any(scratch.iterdir()):
        scratch.rmdir()
    owned = [run_dir / "labels", run_dir / "data", *sorted((run_dir / "rounds").glob("[0-9][0-9][0-9]"))]
    for d in [run_dir, *owned]:
        if not d.is_dir():
            continue
        for p in d.iterdir():
            m = _LEFTOVER.match(p.name)
            if m is None or (d == run_dir and m.group("name") not in _TOP_LEVEL_NAMES):
                continue
            shutil.rmtree(p, ignore_errors=True) if p.is_dir() and not p.is_symlink() else p.unlink(missing_ok=True)
            removed.append(p)
    return removed
