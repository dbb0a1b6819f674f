"""The steps of a round, each a short function `step(ctx, r, rd)` that reads its inputs from the run directory
and publishes its output there atomically; `STEPS` maps a step's name to its function.

Every random choice is seeded from (seed, round, step), and training and scoring are deterministic for a
seed, so a step redone after a crash reproduces what the killed one would have written. Labels enter only
through `LabelLedger.append`, which is idempotent per round, so none is lost or applied twice.

Label hygiene: training reads labels from the ledger only; strategies see model scores only; the pool's
`label` column is read by the simulated oracle for the selected ids and by the balanced initial set (which
peeks at every label on purpose, as in Gal et al. 2017's protocol of a class-balanced start); evaluation
reads the test pool.
"""

from __future__ import annotations

import logging
import shutil
import zlib
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pyarrow as pa

from dal_dist.atomic import write_json_atomic
from dal_dist.driver import layout
from dal_dist.driver.config import ScoringSection
from dal_dist.driver.ledger import LabelLedger
from dal_dist.driver.state import RunState, reached_target
from dal_dist.driver.strategies import SELECTOR_FILE, STRATEGIES, Strategy
from dal_dist.errors import DalDistError
from dal_dist.models.checkpoint import CHECKPOINT_FILE
from dal_dist.pool import read_images, read_labeled_images, read_pool_labels
from dal_dist.scoring.embed import read_embedding_rows


class Paused(Exception):
    """Raised by the label step of a human-oracle run: the driver stops until labels are imported."""

    def __init__(self, r: int, message: str):
        super().__init__(message)
        self.round, self.message = r, message


def round_seed(seed: int, r: int, tag: str) -> int:
    """Seed of one random choice, derived from (seed, round, step) so a redone step repeats it exactly."""
    return int(np.random.SeedSequence([seed, r, zlib.crc32(tag.encode())]).generate_state(1)[0])


class RoundContext:
    """What the steps of one driver invocation share: the run's state, its ledger and a few lazy caches."""

    def __init__(self, state: RunState, log: Callable[[str], None]):
        self.s = state
        self.cfg = state.config
        self.run_dir = state.run_dir
        self.strategy: Strategy = STRATEGIES[state.config.strategy.name]
        self.ledger = LabelLedger(state.run_dir)
        self.log = log
        self._oracle: Any = None
        self._test: tuple[np.ndarray, np.ndarray] | None = None
        self._image_read: tuple[tuple[int, int, int] | None, bool] | None = None
        self._embeddings: dict[str, Any] = {}

    def oracle(self) -> Any:
        """The simulated oracle (built on first use: a human-oracle run never reads the pool's labels)."""
        if self._oracle is None:
            from dal_dist.driver.oracle import SimulatedOracle

            self._oracle = SimulatedOracle(self.s.pool)
        return self._oracle

    def test_set(self) -> tuple[np.ndarray, np.ndarray]:
        """The test pool's inputs (decoded images, or cached embedding rows for a frozen backbone) and labels,
        read once per driver invocation."""
        if self._test is None:
            if self.cfg.model.frozen:
                ids, labels = read_pool_labels(self.s.test_pool)
                self._test = (read_embedding_rows(self.embeddings("test_embeddings"), ids), labels)
            else:
                shape, photo = self.image_read()
                self._test = read_labeled_images(self.s.test_pool, shape, photo=photo)
        return self._test

    def embeddings(self, key: str = "embeddings") -> Any:
        """The frozen backbone's cached embeddings of the pool (`embeddings`) or of the test pool, checked once."""
        if key not in self._embeddings:
            from dal_dist.scoring import embeddings_info

            info = embeddings_info(getattr(self.cfg.model, key))
            if info.model and info.model != self.cfg.model.name:
                raise DalDistError(f"model.{key} {info.path}: made by model {info.model!r}, but model.name is "
                                   f"{self.cfg.model.name!r} (name the backbone that made the embeddings)")
            self._embeddings[key] = info
        return self._embeddings[key]

    def image_read(self) -> tuple[tuple[int, int, int] | None, bool]:
        """(shape, photo) images are read with for the task model: the pool's shape when it is uniform and the
        model's square size, else the model's (size, size, channels) by the photo transform (mixed-size photos)."""
        if self._image_read is None:
            shape = self.s.image_shape
            cfg = _task_model_config(self, 1)
            if shape is not None and shape[0] == shape[1] == cfg.image_size:
                self._image_read = (shape, False)
            else:
                self._image_read = ((cfg.image_size, cfg.image_size, cfg.in_channels), True)
        return self._image_read

    def local_device(self) -> str:
        """Where in-process work (evaluation, BGADL's generator) runs: the GPU when training asks for one."""
        from dal_dist.device import torch_device

        return torch_device(bool(self.cfg.train.use_gpu)).type

    def unlabeled_ids(self, r: int) -> np.ndarray:
        """Pool ids not labeled before round r (sorted)."""
        return np.setdiff1d(self.s.pool_ids(), self.ledger.ids(before_round=r))

    def ensure_ray(self) -> None:
        """Join the configured cluster (or start a loopback-only local Ray) the first time a step needs Ray."""
        from dal_dist.ray_connect import connect

        ray, _ = connect(self.cfg.ray.address, log_to_driver=False)
        try:
            ray.data.DataContext.get_current().enable_progress_bars = False
        except AttributeError:
            pass
        logging.getLogger("ray.data").setLevel(logging.WARNING)  # per-dataset INFO lines drown the step log

    def ensure_ray_for_executor(self) -> None:
        if self.cfg.executor == "ray":
            self.ensure_ray()


# ------------------------------------------------------------------------------------------ train
def train_step(ctx: RoundContext, r: int, rd: Path) -> None:
    """Fit the task model on every label of rounds < r (warm-started from round r-1 when configured)."""
    from dal_dist.training import train

    labeled = ctx.ledger.table(before_round=r).sort_by("id")
    ids = labeled.column("id").to_numpy()
    labels = labeled.column("label").to_numpy()
    train_cfg = ctx.cfg.train.model_copy(
        update={"seed": round_seed(ctx.cfg.seed * 7919 + ctx.cfg.train.seed, r, "train")})
    prev = layout.round_dir(ctx.run_dir, r - 1) / CHECKPOINT_FILE
    if ctx.cfg.model.frozen:
        return _train_head(ctx, r, rd, ids, labels, train_cfg, prev)
    images = read_images(ctx.s.pool, ids, *ctx.image_read())
    images, labels, generated = _with_generated(ctx, r, images, labels)
    ctx.ensure_ray_for_executor()
    storage = layout.train_scratch(ctx.run_dir, r)
    try:
        result = train(_task_model_config(ctx, r), images, labels, train_cfg, rd / CHECKPOINT_FILE,
                       init_checkpoint=prev if prev.is_file() else None, storage_dir=storage,
                       executor=ctx.cfg.executor)
        info: dict[str, Any] = {}
        if ctx.strategy.trains_selector and r <= ctx.cfg.num_rounds():
            info["selector"] = _train_selector(ctx, r, rd, ids, labeled.column("label").to_numpy(), storage)
    finally:
        shutil.rmtree(storage, ignore_errors=True)
    if generated:
        info["generated_images"] = generated
    write_json_atomic(rd / layout.TRAIN_JSON, {"labels": int(len(ids)), "seed": train_cfg.seed,
                                               "use_gpu": train_cfg.use_gpu, "executor": ctx.cfg.executor,
                                               "metrics": result.metrics, "history": result.history, **info})


def _train_head(ctx: RoundContext, r: int, rd: Path, ids: np.ndarray, labels: np.ndarray, train_cfg: Any,
                prev: Path) -> None:
    """Frozen backbone: fit only the dropout head, in this process, on the labeled ids' cached embeddings."""
    from dal_dist.models import default_config
    from dal_dist.training import train_head

    info = ctx.embeddings()
    rows = read_embedding_rows(info, ids)
    config = default_config("embedding-head", ctx.s.num_classes, in_channels=info.dim, image_size=1,
                            seed=round_seed(ctx.cfg.seed, r, "model"), dropout=ctx.cfg.model.dropout,
                            hidden=ctx.cfg.model.hidden or 0)
    result = train_head(config, rows, labels, train_cfg, rd / CHECKPOINT_FILE,
                        init_checkpoint=prev if prev.is_file() else None)
    write_json_atomic(rd / layout.TRAIN_JSON, {"labels": int(len(ids)), "seed": train_cfg.seed,
                                               "use_gpu": train_cfg.use_gpu, "executor": "local",
                                               "backbone": "frozen", "embeddings": info.path,
                                               "metrics": result.metrics, "history": result.history})


def _with_generated(ctx: RoundContext, r: int, images: np.ndarray, labels: np.ndarray
                    ) -> tuple[np.ndarray, np.ndarray, int]:
    """BGADL: the labeled set plus every earlier round's generated x' (other strategies: unchanged)."""
    if not ctx.strategy.reads_generated:
        return images, labels, 0
    from dal_dist.methods.bgadl import read_generated

    files = [layout.round_dir(ctx.run_dir, k) / layout.GENERATED_FILE for k in range(1, r)]
    gx, gy = read_generated([f for f in files if f.is_file()], images.shape[1:])
    if len(gy):
        images, labels = np.concatenate([images, gx]), np.concatenate([labels, gy])
    return images, labels, len(gy)


def _square_side(shape: tuple[int, int, int] | None) -> int | None:
    return shape[0] if shape and shape[0] == shape[1] else None


def _task_model_config(ctx: RoundContext, r: int) -> Any:
    """The task model of round r: the configured architecture sized to the pool's images and classes.

    Pretrained weights fix the input channels (RGB: grey images are converted, the first conv is not
    swapped). A run keeps the architecture it started with: one begun when `resnet18` meant today's
    `resnet18-small` (3x3 stem) goes on training that one."""
    from dal_dist.models import default_config

    m = ctx.cfg.model
    extra: dict[str, Any] = {"dropout": m.dropout}
    if ctx.strategy.learning_loss:
        extra["learning_loss"] = True
    shape = ctx.s.image_shape
    channels = m.in_channels or (None if m.weights else shape[2] if shape else None)
    return default_config(_pinned_architecture(ctx), ctx.s.num_classes, in_channels=channels,
                          image_size=m.image_size or _square_side(shape), seed=round_seed(ctx.cfg.seed, r, "model"),
                          weights=m.weights, normalize=m.normalize_spec(), **extra)


def _pinned_architecture(ctx: RoundContext) -> str:
    """The model name the run's existing checkpoints were built with, when the config's name changed meaning."""
    name = ctx.cfg.model.name
    if name != "resnet18":
        return name
    for r in range(1, ctx.cfg.num_rounds() + 2):
        path = layout.round_dir(ctx.run_dir, r) / CHECKPOINT_FILE
        if path.is_file():
            from dal_dist.models import load_checkpoint

            return load_checkpoint(path).config.name
    return name


def _train_selector(ctx: RoundContext, r: int, rd: Path, ids: np.ndarray, labels: np.ndarray,
                    storage: Path) -> dict:
    """SRAAL (Zhang et al. 2020): fit the state-relabeling selector that scoring ranks by; the task
    model (model.pt) is trained as for any strategy, so learning curves compare like with like.
    Mixed-size photos: the selector takes the task model's channels (colour kept), and its images are
    read by the photo transform at its own size (`train_sraal_round`), as scoring decodes them."""
    from dal_dist.methods.sraal import SRAALConfig, train_sraal_round
    from dal_dist.models import default_config

    shape = ctx.s.image_shape
    channels = shape[2] if shape else ctx.image_read()[0][2]
    cfg = (ctx.cfg.strategy.sraal or SRAALConfig()).model_copy(update={"seed": round_seed(ctx.cfg.seed, r, "sraal")})
    model_config = default_config("sraal", ctx.s.num_classes, in_channels=channels,
                                  image_size=ctx.cfg.model.image_size or _square_side(shape),
                                  seed=round_seed(ctx.cfg.seed, r, "sraal_model"))
    unl = np.setdiff1d(ctx.s.pool_ids(), ids)
    result = train_sraal_round(ctx.s.pool, ids, labels, unl, model_config, cfg, rd / SELECTOR_FILE,
                               image_shape=shape, storage_dir=storage / "sraal", executor=ctx.cfg.executor)
    return {"metrics": result.metrics}


# --------------------------------------------------------------------------------------- evaluate
def evaluate_step(ctx: RoundContext, r: int, rd: Path) -> None:
    """Test accuracy of round r's model (null without a test pool)."""
    from dal_dist.training import evaluate, evaluate_rows

    acc = None
    if ctx.s.test_pool is not None and ctx.cfg.model.frozen:
        from dal_dist.models import load_checkpoint

        acc = evaluate_rows(load_checkpoint(rd / CHECKPOINT_FILE), *ctx.test_set())
    elif ctx.s.test_pool is not None:
        acc = evaluate(rd / CHECKPOINT_FILE, *ctx.test_set(), device=ctx.local_device())
    trained = layout.read_json(rd / layout.TRAIN_JSON) or {}
    write_json_atomic(rd / layout.METRICS_JSON, {
        "round": r, "labels": trained.get("labels"), "test_accuracy": acc,
        "test_images": None if ctx.s.test_pool is None else int(len(ctx.test_set()[1])),
        "train": trained.get("metrics", {})})


# ------------------------------------------------------------------------------------------ score
def score_step(ctx: RoundContext, r: int, rd: Path) -> None:
    """Score the unlabeled pool (or a seeded random subset of it) with what the strategy ranks by."""
    from dal_dist.scoring import score_pool

    st = ctx.cfg.strategy
    scoring = ctx.cfg.scoring or ScoringSection()
    labeled = ctx.ledger.ids(before_round=r)
    size = getattr(st, ctx.strategy.subset_option) if ctx.strategy.subset_option else None
    exclude = None
    if size is not None:
        # Score only a random subset of the unlabeled pool (Yoo & Kweon 2019; Gal et al. 2017's code); the
        # rest is excluded: neither scored nor embedded (labeled rows still are, where the strategy wants them).
        unl = np.setdiff1d(ctx.s.pool_ids(), labeled)
        rng = np.random.default_rng(round_seed(ctx.cfg.seed, r, "ll_subset"))
        subset = rng.choice(unl, size=min(size, len(unl)), replace=False)
        exclude = np.setdiff1d(unl, subset)
    if ctx.cfg.model.frozen:  # T head samples over the cached embeddings: no image decoded, no backbone
        from dal_dist.scoring import score_embeddings

        score_embeddings(ctx.embeddings().path, rd / ctx.strategy.checkpoint, rd / layout.SCORES_DIR,
                         acquisitions=ctx.strategy.acquisitions(st.by), mc_samples=st.mc_samples, labeled=labeled,
                         embed_labeled=ctx.strategy.embed_labeled, seed=round_seed(ctx.cfg.seed, r, "score"),
                         overwrite=True, keep_probs=ctx.strategy.keep_probs, exclude=exclude,
                         write_embedding=ctx.strategy.reads_embeddings,
                         threads=scoring.threads_per_worker)
        return
    ctx.ensure_ray_for_executor()
    score_pool(ctx.s.pool, rd / ctx.strategy.checkpoint, rd / layout.SCORES_DIR,
               acquisitions=ctx.strategy.acquisitions(st.by), mc_samples=st.mc_samples, workers=ctx.cfg.workers,
               labeled=labeled, embed_labeled=ctx.strategy.embed_labeled,
               seed=round_seed(ctx.cfg.seed, r, "score"), overwrite=True, progress=False,
               executor=ctx.cfg.executor, keep_probs=ctx.strategy.keep_probs, exclude=exclude,
               **scoring.score_options())


# ----------------------------------------------------------------------------------------- select
def select_step(ctx: RoundContext, r: int, rd: Path) -> None:
    """Pick round r's batch (round 0: the initial set) and check it labels nothing twice."""
    from dal_dist.selection import write_selection

    table = _initial_selection(ctx) if r == 0 else _acquisition_selection(ctx, r, rd)
    ids = table.column("id").to_numpy()
    again = np.intersect1d(ids, ctx.ledger.ids(before_round=r))
    if len(again):
        raise DalDistError(f"round {r}: selection picked already labeled ids {again[:5].tolist()}")
    write_selection(table, rd / layout.SELECTION_FILE, overwrite=True)


def _acquisition_selection(ctx: RoundContext, r: int, rd: Path) -> pa.Table:
    from dal_dist.selection import random_ids, select
    from dal_dist.selection.dispatch import DISTRIBUTED

    st, pick = ctx.cfg.strategy, ctx.strategy.pick
    k = ctx.cfg.round_budget(r)
    seed = round_seed(ctx.cfg.seed, r, "select")
    scores = rd / layout.SCORES_DIR
    if pick == "random":
        unl = ctx.unlabeled_ids(r)
        if k > len(unl):
            raise DalDistError(f"round {r}: budget {k} exceeds the {len(unl)} unlabeled images left")
        return pa.table({"id": pa.array(random_ids(unl, k, seed), pa.int64())})
    if pick == "topk":
        return select("topk", k, scores=scores, by=ctx.strategy.rank_by, seed=seed)
    if pick == "kcenter":
        if st.distributed:
            ctx.ensure_ray()
        return select("kcenter", k, scores=scores, seed=seed, distributed=st.distributed, workers=ctx.cfg.workers)
    if pick == "hybrid":
        unl = len(ctx.s.pool_ids()) - len(ctx.ledger.ids(before_round=r))
        return select("hybrid", k, scores=scores, by=st.by or "bald", seed=seed,
                      candidates=st.candidates or min(unl, max(10 * k, k)))
    # Every other pick: its `by` column (when it takes one) and the strategy-section options it declares.
    options: dict[str, Any] = {key: getattr(st, key) for key in ctx.strategy.options if getattr(st, key) is not None}
    if ctx.strategy.cluster_file:
        options["cluster_file"] = ctx.run_dir / ctx.strategy.cluster_file
    if ctx.strategy.reruns_model:
        options.update(pool=ctx.s.pool, checkpoint=rd / ctx.strategy.checkpoint, mc_samples=st.mc_samples)
    if st.distributed and pick in DISTRIBUTED:
        ctx.ensure_ray()
        options.update(distributed=True, workers=ctx.cfg.workers)
    by = ctx.strategy.by_column(st.by) if ctx.strategy.takes_by else None
    return select(pick, k, scores=scores, by=by, seed=seed, **options)


def _initial_selection(ctx: RoundContext) -> pa.Table:
    init = ctx.cfg.initial
    seed = round_seed(ctx.cfg.seed, 0, "initial")
    pool_ids = ctx.s.pool_ids()
    if init.size > len(pool_ids):
        raise DalDistError(f"initial.size = {init.size} exceeds the pool's {len(pool_ids)} images")
    from dal_dist.selection import random_ids, select

    if init.kind == "kcenter":
        return select("kcenter-init", init.size, pool=ctx.s.pool, seed=seed).select(["id"])
    if init.kind == "random":
        return pa.table({"id": pa.array(random_ids(pool_ids, init.size, seed), pa.int64())})
    ids, labels = ctx.oracle().all_labels()  # balanced: peeks at every label (Gal et al. 2017's protocol)
    return pa.table({"id": pa.array(balanced_sample(ids, labels, init.size, np.random.default_rng(seed)),
                                    pa.int64())})


def balanced_sample(ids: np.ndarray, labels: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """`size` ids spread evenly over the classes (remainder to random classes), drawn uniformly within each."""
    order = np.argsort(ids, kind="stable")
    ids, labels = ids[order], labels[order]
    classes = np.unique(labels)
    per = np.full(len(classes), size // len(classes))
    per[rng.choice(len(classes), size=size % len(classes), replace=False)] += 1
    picks = []
    for c, n in zip(classes, per):
        members = ids[labels == c]
        if n > len(members):
            raise DalDistError(f"initial.size = {size}: class {int(c)} has only {len(members)} images for "
                               f"{int(n)} balanced picks")
        picks.append(rng.choice(members, size=int(n), replace=False))
    return np.concatenate(picks)


# ------------------------------------------------------------------------------------------ label
def label_step(ctx: RoundContext, r: int, rd: Path) -> None:
    """Simulated oracle: append its labels to the ledger. Human oracle: export the images and pause."""
    ids = layout.read_selection(ctx.run_dir, r)
    if ctx.cfg.oracle == "simulated":
        ctx.ledger.append(r, ids, ctx.oracle().labels(ids), "simulated")
        return
    from dal_dist.driver.oracle import TO_LABEL, export_to_label, round_task_info

    if not (rd / TO_LABEL).is_dir():  # people see the pool's own images; mixed sizes: the model's view
        shape = ctx.s.image_shape
        images = read_images(ctx.s.pool, ids, shape) if shape is not None else read_images(ctx.s.pool, ids,
                                                                                          *ctx.image_read())
        export_to_label(rd, ids, images, ctx.s.class_names, round_task_info(ctx.s, r, rd, ids, images))
    out = rd / TO_LABEL
    raise Paused(r, f"round {r}: {len(ids)} images to label in {out} (to_label.csv, or import tasks.json "
                    f"into Label Studio); then run `dal-dist labels import FILE --run-dir {ctx.run_dir}` "
                    f"and `dal-dist run --resume {ctx.run_dir}`")


# --------------------------------------------------------------------------------------- generate
def generate_step(ctx: RoundContext, r: int, rd: Path) -> None:
    """BGADL (Tran et al. 2019): fit the VAE-ACGAN on every label so far, then add x' = g(e(x*)) for
    this round's x* with the oracle's label; later rounds' training reads them (see `_with_generated`)."""
    from dal_dist.methods.bgadl import BGADLConfig, generate_bgadl_round

    labeled = ctx.ledger.table(before_round=r + 1).sort_by("id")
    ids = labeled.column("id").to_numpy()
    labels = labeled.column("label").to_numpy()
    images = read_images(ctx.s.pool, ids, *ctx.image_read())
    new = np.isin(ids, layout.read_selection(ctx.run_dir, r))
    cfg = (ctx.cfg.strategy.bgadl or BGADLConfig()).model_copy(update={"seed": ctx.cfg.seed})
    prev = layout.round_dir(ctx.run_dir, r - 1) / layout.VAE_ACGAN_FILE
    result = generate_bgadl_round(images, labels, images[new], labels[new], ids[new], cfg,
                                  num_classes=ctx.s.num_classes, round_index=r,
                                  model_out=rd / layout.VAE_ACGAN_FILE, generated_out=rd / layout.GENERATED_FILE,
                                  init_model=prev if prev.is_file() else None, device=ctx.local_device())
    write_json_atomic(rd / layout.GENERATE_JSON, {"generated": int(len(result.ids)), "metrics": result.metrics})


# --------------------------------------------------------------------------------------- manifest
def manifest_step(ctx: RoundContext, r: int, rd: Path) -> None:
    """Written last: the round is complete (what it picked, the labels before and after, its metrics)."""
    kind = "initial" if r == 0 else "acquisition" if r <= ctx.cfg.num_rounds() else "final"
    if reached_target(ctx.run_dir, ctx.cfg, r):
        kind = "target_reached"
    selected = layout.read_selection(ctx.run_dir, r).tolist() if (rd / layout.SELECTION_FILE).is_file() else []
    before = len(ctx.ledger.ids(before_round=r))
    model = rd / CHECKPOINT_FILE
    write_json_atomic(rd / layout.MANIFEST_JSON, {
        "round": r, "kind": kind, "config_hash": ctx.s.config_hash,
        "checkpoint": str(model.relative_to(ctx.run_dir)) if model.is_file() else None,
        "metrics": layout.read_json(rd / layout.METRICS_JSON),
        "selected_ids": selected,
        "labels_before": before,
        "labels_count": len(ctx.ledger.ids(before_round=r + 1)),  # a partial human import labels fewer
        "timings": layout.read_json(rd / layout.TIMINGS_JSON) or {},
        "completed_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    })


STEPS: dict[str, Callable[[RoundContext, int, Path], None]] = {
    "train": train_step, "evaluate": evaluate_step, "score": score_step, "select": select_step,
    "label": label_step, "generate": generate_step, "manifest": manifest_step,
}
RAY_STEPS = frozenset({"train", "score"})  # steps a lost worker or node may fail; redone from scratch
