"""The driver: rounds of train → evaluate → score → select → label, with all state in the run directory.

Run directory::

    RUN_DIR/
      .lock                  fcntl lock held by the one driver (or label import) working on the run; holds its pid
      config.yaml            copy of the config as run (paths resolved)
      config.json            {"config_hash": sha256 of the canonical config JSON, "config": {...}}
      data/<builtin>/        builtin pools, materialised on first use (see dal_dist.datasets)
      labels/                the ledger: round-NNNN.parquet (id, label, round, source), see dal_dist.ledger
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
      .tmp/                  scratch (Ray Train storage), removed at every start

Resume: every step publishes its output atomically (temp + rename), so the set of existing outputs *is*
the state. A round with `manifest.json` is done; in the first round without one, each step whose output
exists is skipped and the first missing one runs again from scratch. Every random choice is seeded from
(seed, round, step), training and scoring are deterministic for a seed, so a redone step reproduces what a
killed one would have written: the same seed selects the same ids. Labels enter only through
`LabelLedger.append`, which is idempotent per round, so none is lost or applied twice.

Label hygiene: training reads labels from the ledger only; strategies see model scores only; the
`label` column of the pool is read by the simulated oracle for the selected ids and by the balanced
initial set (which peeks at every label on purpose, as in Gal et al. 2017's protocol of a class-balanced
start); evaluation reads the test pool.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import shutil
import threading
import time
import zlib
import dataclasses
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from dal_dist.atomic import write_json_atomic, write_bytes_atomic
from dal_dist.config import UNCERTAINTY, RunConfig, parse_config
from dal_dist.errors import DalDistError
from dal_dist.ledger import LabelLedger

GENERATED_FILE = "generated.parquet"  # BGADL's x' of a round (negative ids), beside vae_acgan.pt
SELECTOR_FILE = "selector.pt"  # SRAAL's trained selector of a round (model.pt stays the task model)
CRASH_ENV = "DAL_DIST_TEST_CRASH_AT"  # tests: "round2:score" dies at the step's start, "round2:score+1.5" 1.5 s into it
INITIAL_STEPS = ("select", "label", "manifest")
ROUND_STEPS = ("train", "evaluate", "score", "select", "label", "manifest")
# BGADL (Tran et al. 2019): after the oracle labels x*, a VAE-ACGAN adds x' = g(e(x*)) with the same label.
BGADL_ROUND_STEPS = ("train", "evaluate", "score", "select", "label", "generate", "manifest")
FINAL_STEPS = ("train", "evaluate", "manifest")
RAY_STEP_ATTEMPTS = 3  # train/score attempts before a cluster failure ends the driver (resume retries more)


# ------------------------------------------------------------------------------------------ layout
def round_dir(run_dir: str | os.PathLike, r: int) -> Path:
    return Path(run_dir) / "rounds" / f"{r:03d}"


def read_selection(run_dir: str | os.PathLike, r: int) -> np.ndarray:
    """Ids picked in round r, in pick order."""
    path = round_dir(run_dir, r) / "selection.parquet"
    return pq.read_table(path, columns=["id"]).column("id").to_numpy().astype(np.int64, copy=False)


def round_seed(seed: int, r: int, tag: str) -> int:
    """Seed of one random choice, derived from (seed, round, step) so a redone step repeats it exactly."""
    return int(np.random.SeedSequence([seed, r, zlib.crc32(tag.encode())]).generate_state(1)[0])


def steps_of(cfg: RunConfig, r: int) -> tuple[str, ...]:
    if r == 0:
        return INITIAL_STEPS
    if r > cfg.num_rounds():
        return FINAL_STEPS
    return BGADL_ROUND_STEPS if cfg.strategy.name == "bgadl" else ROUND_STEPS


def last_round(cfg: RunConfig) -> int:
    return cfg.num_rounds() + (1 if cfg.final_train else 0)


def step_done(run_dir: Path, cfg: RunConfig, r: int, step: str) -> bool:
    """Whether a step's output exists (the only notion of progress there is)."""
    rd = round_dir(run_dir, r)
    if step == "train":
        return (rd / "train.json").is_file()
    if step == "evaluate":
        return (rd / "metrics.json").is_file()
    if step == "score":
        return cfg.strategy.name == "random" or (rd / "scores").is_dir()
    if step == "select":
        return (rd / "selection.parquet").is_file()
    if step == "label":
        return LabelLedger(run_dir).has_round(r)
    if step == "manifest":
        return (rd / "manifest.json").is_file()
    if step == "generate":  # generate.json is written after the model and the generated file
        return (rd / "generate.json").is_file()
    raise ValueError(step)


def reached_target(run_dir: Path, cfg: RunConfig, r: int) -> bool:
    """Whether round r's model met `stop_at_accuracy` (its evaluation is on disk): the run ends there."""
    if cfg.stop_at_accuracy is None or r == 0:
        return False
    m = _read_json(round_dir(run_dir, r) / "metrics.json")
    return bool(m) and m.get("test_accuracy") is not None and m["test_accuracy"] >= cfg.stop_at_accuracy


def remaining_steps(run_dir: Path, cfg: RunConfig, r: int) -> tuple[str, ...]:
    """Steps of round r still to run in order; a round that reached the target only writes its manifest."""
    steps = steps_of(cfg, r)
    if reached_target(run_dir, cfg, r):
        steps = tuple(s for s in steps if s in ("train", "evaluate", "manifest"))
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


# -------------------------------------------------------------------------------------------- lock
class RunLock:
    """Exclusive `flock` on RUN_DIR/.lock for the whole run; the OS releases it when the process dies."""

    def __init__(self, run_dir: str | os.PathLike):
        self.path = Path(run_dir) / ".lock"
        self.fd: int | None = None

    def __enter__(self) -> "RunLock":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)  # not inherited by children (PEP 446)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise DalDistError(f"run directory {self.path.parent} is locked by pid {holder} (another "
                               "`dal-dist run` or `labels import` is working on it); wait for it to finish") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self.fd = fd
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.fd is not None:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None


# --------------------------------------------------------------------------------------- run state
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


def _resolve_state(run_dir: Path, cfg: RunConfig, config_hash: str) -> RunState:
    from dal_dist import datasets
    from dal_dist.oracle import class_names_of
    from dal_dist.pool import validate_pool

    data_dir = run_dir / "data"
    pool = datasets.materialize(cfg.pool, data_dir)
    test_ref = cfg.test_pool or datasets.default_test_pool(cfg.pool)
    test_pool = datasets.materialize(test_ref, data_dir) if test_ref else None
    info = validate_pool(pool)
    num_classes = cfg.model.num_classes or info.num_classes
    if not num_classes:
        raise DalDistError(f"pool {pool}: number of classes unknown (no `num_classes` in its meta, no labels); "
                           "set model.num_classes in the config")
    if test_pool is not None and not validate_pool(test_pool).has_label:
        raise DalDistError(f"test_pool {test_pool}: has no `label` column; evaluation needs labels")
    return RunState(run_dir, cfg, config_hash, pool, test_pool, int(num_classes),
                    class_names_of(info.meta, int(num_classes)), info.image_shape)


def load_run_state(run_dir: str | os.PathLike) -> RunState:
    """The state of an existing run directory, from its `config.json`."""
    run_dir = local_run_dir(run_dir)
    stored = _read_stored_config(run_dir)
    return _resolve_state(run_dir, stored[0], stored[1])


def local_run_dir(run_dir: str | os.PathLike) -> Path:
    """A run directory as an absolute local path: a plain path or file:// URI; object stores are refused
    (the driver needs an exclusive fcntl lock and atomic renames, see dal_dist.fs.require_local)."""
    from dal_dist.fs import require_local

    return require_local(run_dir, "a run directory").resolve()


def _read_stored_config(run_dir: Path) -> tuple[RunConfig, str]:
    path = run_dir / "config.json"
    if not path.is_file():
        raise DalDistError(f"{run_dir}: not a dal-dist run directory (no config.json); "
                           "start one with `dal-dist run --config FILE --run-dir DIR`")
    try:
        data = json.loads(path.read_text())
        cfg = parse_config(data["config"], str(path))
        return cfg, str(data["config_hash"])
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise DalDistError(f"{path}: unreadable run config ({e})") from e


def pending_label_round(run_dir: str | os.PathLike) -> int | None:
    """The round waiting for human labels (its selection exists, the ledger lacks it), if any."""
    run_dir = local_run_dir(run_dir)
    cfg, _ = _read_stored_config(run_dir)
    if cfg.oracle != "human":
        raise DalDistError(f"{run_dir}: this run uses the simulated oracle; it takes no label files")
    nxt = next_step(run_dir, cfg)
    return nxt[0] if nxt is not None and nxt[1] == "label" else None


# ------------------------------------------------------------------------------------------ images
def pool_images(pool: Path | str, ids: np.ndarray, shape: tuple[int, int, int] | None) -> np.ndarray:
    """uint8 N×H×W×C images of `ids` in that order (one streaming pass; labels are not read)."""
    from dal_dist.pool import DECODE_COLUMNS, decode_images, iter_batches

    ids = np.asarray(ids, dtype=np.int64)
    want = pa.array(np.unique(ids))
    found: dict[int, np.ndarray] = {}
    for rb in iter_batches(pool, columns=DECODE_COLUMNS):
        import pyarrow.compute as pc

        rb = rb.filter(pc.is_in(rb.column("id"), value_set=want))
        if rb.num_rows == 0:
            continue
        dec = decode_images(rb) if shape is None else decode_images(rb, size=shape[:2], channels=shape[2])
        if len(dec.reject_ids):
            raise DalDistError(f"{pool}: id {int(dec.reject_ids[0])} cannot be decoded: {dec.reject_reasons[0]}")
        found.update(zip(dec.ids.tolist(), dec.images))
    missing = [int(i) for i in ids if int(i) not in found]
    if missing:
        raise DalDistError(f"{pool}: ids {missing[:5]} are not in the pool")
    return np.stack([found[int(i)] for i in ids])


def pool_images_and_labels(pool: Path | str, shape: tuple[int, int, int] | None) -> tuple[np.ndarray, np.ndarray]:
    """Every image and label of a (test) pool, decoded to `shape`."""
    from dal_dist.pool import DECODE_COLUMNS, decode_images, iter_batches

    images, labels = [], []
    for rb in iter_batches(pool, columns=(*DECODE_COLUMNS, "label")):
        dec = decode_images(rb) if shape is None else decode_images(rb, size=shape[:2], channels=shape[2])
        if len(dec.reject_ids):
            raise DalDistError(f"{pool}: id {int(dec.reject_ids[0])} cannot be decoded: {dec.reject_reasons[0]}")
        if dec.labels is None or (dec.labels < 0).any():
            raise DalDistError(f"{pool}: every test image needs a label (null label found)")
        images.append(dec.images)
        labels.append(dec.labels)
    return np.concatenate(images), np.concatenate(labels)


# ------------------------------------------------------------------------------------- the driver
@dataclass
class RunOutcome:
    """How a driver invocation ended: `done`, or `waiting_for_labels` (human oracle; exit 0)."""

    status: str
    message: str
    round: int | None = None


class _Paused(Exception):
    def __init__(self, r: int, message: str):
        super().__init__(message)
        self.round, self.message = r, message


def run(config: RunConfig | None, run_dir: str | os.PathLike, resume: bool = False,
        log: Callable[[str], None] | None = None, use_gpu: bool | None = None) -> RunOutcome:
    """Start (or with `resume`, continue) a run in `run_dir`; returns when done or waiting for human labels.

    `use_gpu` (resume only) moves the rest of the run to or off a GPU: where the work runs is not part of
    what the run computes, so the stored config and its hash stay; each round's train.json records it.
    """
    run_dir = local_run_dir(run_dir)
    if config is None and not resume:
        raise DalDistError("a new run needs a config (`dal-dist run --config FILE`)")
    if use_gpu is not None and not resume:
        raise DalDistError("use_gpu overrides the stored config of a resumed run; a new run sets train.use_gpu")
    if resume:
        _read_stored_config(run_dir)  # a clear error for a wrong path, before anything is created there
    run_dir.mkdir(parents=True, exist_ok=True)
    with RunLock(run_dir):
        state = _start(config, run_dir, resume)
        if use_gpu is not None:
            state = dataclasses.replace(state, config=with_device(state.config, use_gpu))
        return _Driver(state, log or (lambda s: None)).run_all()


def with_device(cfg: RunConfig, use_gpu: bool) -> RunConfig:
    """`cfg` with every GPU switch (task model training, SRAAL's networks) set to `use_gpu`."""
    update: dict[str, Any] = {"train": cfg.train.model_copy(update={"use_gpu": use_gpu})}
    if cfg.strategy.sraal is not None:
        update["strategy"] = cfg.strategy.model_copy(
            update={"sraal": cfg.strategy.sraal.model_copy(update={"use_gpu": use_gpu})})
    return cfg.model_copy(update=update)


def _start(config: RunConfig | None, run_dir: Path, resume: bool) -> RunState:
    """Check or record the config, clear scratch left by a killed driver, resolve the pools."""
    import yaml

    stored_path = run_dir / "config.json"
    if resume:
        stored, stored_hash = _read_stored_config(run_dir)
        if config is not None and config.config_hash() != stored_hash:
            raise DalDistError(f"{run_dir}: the given config (hash {config.config_hash()[:12]}) differs from the "
                               f"one this run started with (hash {stored_hash[:12]}, {stored_path}); "
                               "resume without --config or start a new run directory")
        cfg, h = stored, stored_hash
    else:
        if stored_path.exists():
            raise DalDistError(f"{run_dir}: already holds a run (config.json); continue it with "
                               f"`dal-dist run --resume {run_dir}` or choose a new --run-dir")
        assert config is not None
        cfg, h = config, config.config_hash()
    _clear_scratch(run_dir)
    state = _resolve_state(run_dir, cfg, h)  # a bad pool fails here, before the run directory claims a config
    if not resume:
        body = cfg.model_dump(mode="json")
        write_bytes_atomic(run_dir / "config.yaml", yaml.safe_dump(body, sort_keys=False).encode())
        write_json_atomic(stored_path, {"config_hash": h, "config": body})
    return state


def _clear_scratch(run_dir: Path) -> None:
    """Remove what a killed process can leave behind: staging dirs and temp files (never published state)."""
    shutil.rmtree(run_dir / ".tmp", ignore_errors=True)
    for d in [run_dir, run_dir / "labels", run_dir / "data", *sorted((run_dir / "rounds").glob("[0-9]*"))]:
        if not d.is_dir():
            continue
        for p in d.iterdir():
            if p.name.startswith(".") and (".staging-" in p.name or ".old-" in p.name or p.name.endswith(".tmp")):
                shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)


def _crash_hook(r: int, step: str) -> None:
    """Test-only fault injection: a real process death (`os._exit(137)`) at or inside a named step."""
    spec = os.environ.get(CRASH_ENV)
    if not spec:
        return
    for item in spec.split(","):
        point, _, delay = item.strip().partition("+")
        if point != f"round{r}:{step}":
            continue
        if not delay:
            os._exit(137)
        timer = threading.Timer(float(delay), os._exit, args=(137,))
        timer.daemon = True
        timer.start()


class _Driver:
    """Runs the missing steps of a run in order; each step reads inputs from and writes outputs to the run dir."""

    def __init__(self, state: RunState, log: Callable[[str], None]):
        self.s = state
        self.cfg = state.config
        self.run_dir = state.run_dir
        self.ledger = LabelLedger(state.run_dir)
        self.log = log
        self._oracle: Any = None
        self._test: tuple[np.ndarray, np.ndarray] | None = None

    # ------------------------------------------------------------------ orchestration
    def run_all(self) -> RunOutcome:
        try:
            for r in range(last_round(self.cfg) + 1):
                self._round(r)
                if reached_target(self.run_dir, self.cfg, r):
                    n = self.ledger.count()
                    return RunOutcome("done", f"run complete: round {r}'s model reached test accuracy "
                                              f"{self.cfg.stop_at_accuracy} ({n} labels in {self.ledger.dir})")
        except _Paused as p:
            return RunOutcome("waiting_for_labels", p.message, p.round)
        n = self.ledger.count()
        return RunOutcome("done", f"run complete: {self.cfg.num_rounds()} rounds, {n} labels in {self.ledger.dir}")

    def _round(self, r: int) -> None:
        rd = round_dir(self.run_dir, r)
        if step_done(self.run_dir, self.cfg, r, "manifest"):
            return
        rd.mkdir(parents=True, exist_ok=True)
        for step in steps_of(self.cfg, r):
            if step not in remaining_steps(self.run_dir, self.cfg, r):
                continue
            _crash_hook(r, step)
            t0 = time.monotonic()
            try:
                self._run_step(r, step, rd)
            except OSError as e:  # full disk, permissions: the step's output was never published
                raise DalDistError(f"round {r}: step {step} failed ({e}); the outputs of earlier steps are intact, "
                                   f"fix the cause and run `dal-dist run --resume {self.run_dir}`") from e
            seconds = time.monotonic() - t0
            self.log(f"round {r}: {step} done in {seconds:.1f} s")
            if step != "manifest":
                timings = _read_json(rd / "timings.json") or {}
                write_json_atomic(rd / "timings.json", {**timings, step: round(seconds, 3)})

    def _run_step(self, r: int, step: str, rd: Path) -> None:
        """Run one step; a Ray step that fails for a cluster reason (a worker or node lost) is redone from
        scratch, which is safe because it is deterministic and publishes nothing until it succeeds."""
        for attempt in range(1, RAY_STEP_ATTEMPTS + 1):
            try:
                return getattr(self, f"_{step}")(r, rd)
            except (DalDistError, OSError, KeyboardInterrupt):
                raise
            except Exception as e:
                if step not in ("train", "score") or attempt == RAY_STEP_ATTEMPTS:
                    raise
                self.log(f"round {r}: {step} failed ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}); "
                         f"retrying ({attempt + 1}/{RAY_STEP_ATTEMPTS})")

    def _ensure_ray(self) -> None:
        import ray

        if ray.is_initialized():
            return
        address = self.cfg.ray.address
        if address is None and not os.environ.get("RAY_ADDRESS"):
            ray.init(include_dashboard=False, log_to_driver=False)
        else:
            ray.init(address=address, log_to_driver=False)
        try:
            ray.data.DataContext.get_current().enable_progress_bars = False
        except AttributeError:
            pass
        logging.getLogger("ray.data").setLevel(logging.WARNING)  # per-dataset INFO lines drown the step log

    # ------------------------------------------------------------------ steps
    def _train(self, r: int, rd: Path) -> None:
        from dal_dist.models import default_config
        from dal_dist.training import train

        labeled = self.ledger.table(before_round=r).sort_by("id")
        ids = labeled.column("id").to_numpy()
        labels = labeled.column("label").to_numpy()
        images = pool_images(self.s.pool, ids, self.s.image_shape)
        generated = 0
        if self.cfg.strategy.name == "bgadl":  # the labeled set + every earlier round's generated x'
            from dal_dist.bgadl import read_generated

            files = [round_dir(self.run_dir, k) / GENERATED_FILE for k in range(1, r)]
            gx, gy = read_generated([f for f in files if f.is_file()], images.shape[1:])
            generated = len(gy)
            if generated:
                images, labels = np.concatenate([images, gx]), np.concatenate([labels, gy])
        extra: dict[str, Any] = {"dropout": self.cfg.model.dropout}
        if self.cfg.strategy.name == "learning_loss":
            extra["learning_loss"] = True
        shape = self.s.image_shape
        model_config = default_config(
            self.cfg.model.name, self.s.num_classes,
            in_channels=self.cfg.model.in_channels or (shape[2] if shape else None),
            image_size=self.cfg.model.image_size or (shape[0] if shape and shape[0] == shape[1] else None),
            seed=round_seed(self.cfg.seed, r, "model"), **extra)
        train_cfg = self.cfg.train.model_copy(update={"seed": round_seed(self.cfg.seed * 7919 + self.cfg.train.seed,
                                                                         r, "train")})
        prev = round_dir(self.run_dir, r - 1) / "model.pt"
        if self.cfg.executor == "ray":
            self._ensure_ray()
        storage = self.run_dir / ".tmp" / f"train-{r:03d}"
        try:
            result = train(model_config, images, labels, train_cfg, rd / "model.pt",
                           init_checkpoint=prev if prev.is_file() else None, storage_dir=storage,
                           executor=self.cfg.executor)
            info: dict[str, Any] = {}
            if self.cfg.strategy.name == "sraal" and r <= self.cfg.num_rounds():
                info["selector"] = self._train_selector(r, rd, ids, labeled.column("label").to_numpy(), storage)
        finally:
            shutil.rmtree(storage, ignore_errors=True)
        if generated:
            info["generated_images"] = generated
        write_json_atomic(rd / "train.json", {"labels": int(len(ids)), "seed": train_cfg.seed,
                                              "use_gpu": train_cfg.use_gpu, "executor": self.cfg.executor,
                                              "metrics": result.metrics, "history": result.history, **info})

    def _train_selector(self, r: int, rd: Path, ids: np.ndarray, labels: np.ndarray, storage: Path) -> dict:
        """SRAAL (Zhang et al. 2020): fit the state-relabeling selector that scoring ranks by; the task
        model (model.pt) is trained as for any strategy, so learning curves compare like with like."""
        from dal_dist.models import default_config
        from dal_dist.sraal import SRAALConfig, sraal_train_round

        shape = self.s.image_shape
        cfg = (self.cfg.strategy.sraal or SRAALConfig()).model_copy(
            update={"seed": round_seed(self.cfg.seed, r, "sraal")})
        side = self.cfg.model.image_size or (shape[0] if shape and shape[0] == shape[1] else None)
        model_config = default_config("sraal", self.s.num_classes, in_channels=shape[2] if shape else None,
                                      image_size=side, seed=round_seed(self.cfg.seed, r, "sraal_model"))
        unl = np.setdiff1d(self.s.pool_ids(), ids)
        result = sraal_train_round(self.s.pool, ids, labels, unl, model_config, cfg, rd / SELECTOR_FILE,
                                   image_shape=shape, storage_dir=storage / "sraal", executor=self.cfg.executor)
        return {"metrics": result.metrics}

    def _local_device(self) -> str:
        """Where in-process work (evaluation, BGADL's generator) runs: the GPU when training asks for one."""
        import torch

        return "cuda" if self.cfg.train.use_gpu and torch.cuda.is_available() else "cpu"

    def _evaluate(self, r: int, rd: Path) -> None:
        from dal_dist.training import evaluate

        acc = None
        if self.s.test_pool is not None:
            if self._test is None:
                self._test = pool_images_and_labels(self.s.test_pool, self.s.image_shape)
            acc = evaluate(rd / "model.pt", *self._test, device=self._local_device())
        trained = _read_json(rd / "train.json") or {}
        write_json_atomic(rd / "metrics.json", {
            "round": r, "labels": trained.get("labels"), "test_accuracy": acc,
            "test_images": None if self._test is None else int(len(self._test[1])),
            "train": trained.get("metrics", {})})

    def _score(self, r: int, rd: Path) -> None:
        from dal_dist.scoring import score_pool

        st = self.cfg.strategy
        labeled = self.ledger.ids(before_round=r)
        acquisitions = {"learning_loss": ["pred_loss"], "kcenter": ["entropy"], "bgadl": ["bald"],
                        "hybrid": [st.by or "bald"]}.get(st.name, [st.name])
        checkpoint = rd / (SELECTOR_FILE if st.name == "sraal" else "model.pt")
        size = st.ll_subset if st.name == "learning_loss" else st.subset
        if size is not None:
            # Score only a random subset of the unlabeled pool (Yoo & Kweon 2019; Gal et al. 2017's code);
            # the rest is passed as "labeled" so scoring skips it.
            unl = np.setdiff1d(self.s.pool_ids(), labeled)
            rng = np.random.default_rng(round_seed(self.cfg.seed, r, "ll_subset"))
            subset = rng.choice(unl, size=min(size, len(unl)), replace=False)
            labeled = np.setdiff1d(self.s.pool_ids(), subset)
        if self.cfg.executor == "ray":
            self._ensure_ray()
        score_pool(self.s.pool, checkpoint, rd / "scores", acquisitions=acquisitions,
                   mc_samples=st.mc_samples, workers=self.cfg.workers, labeled=labeled,
                   embed_labeled=st.name in ("kcenter", "hybrid"), seed=round_seed(self.cfg.seed, r, "score"),
                   overwrite=True, progress=False, executor=self.cfg.executor)

    def _select(self, r: int, rd: Path) -> None:
        from dal_dist.selection import select, write_selection

        if r == 0:
            table = self._initial_selection()
        else:
            st = self.cfg.strategy
            k = self.cfg.round_budget(r)
            seed = round_seed(self.cfg.seed, r, "select")
            scores = rd / "scores"
            if st.name == "random":
                unl = np.setdiff1d(self.s.pool_ids(), self.ledger.ids(before_round=r))
                if k > len(unl):
                    raise DalDistError(f"round {r}: budget {k} exceeds the {len(unl)} unlabeled images left")
                picks = np.random.default_rng(seed).choice(unl, size=k, replace=False)
                table = pa.table({"id": pa.array(picks, pa.int64())})
            elif st.name in UNCERTAINTY or st.name in ("learning_loss", "sraal", "bgadl"):
                by = {"learning_loss": "pred_loss", "bgadl": "bald"}.get(st.name, st.name)
                table = select("topk", k, scores=scores, by=by, seed=seed)
            elif st.name == "kcenter":
                if st.distributed:
                    self._ensure_ray()
                table = select("kcenter", k, scores=scores, seed=seed, distributed=st.distributed,
                               workers=self.cfg.workers)
            else:  # hybrid
                unl = len(self.s.pool_ids()) - len(self.ledger.ids(before_round=r))
                table = select("hybrid", k, scores=scores, by=st.by or "bald", seed=seed,
                               candidates=st.candidates or min(unl, max(10 * k, k)))
        ids = table.column("id").to_numpy()
        again = np.intersect1d(ids, self.ledger.ids(before_round=r))
        if len(again):
            raise DalDistError(f"round {r}: selection picked already labeled ids {again[:5].tolist()}")
        write_selection(table, rd / "selection.parquet")

    def _initial_selection(self) -> pa.Table:
        init = self.cfg.initial
        seed = round_seed(self.cfg.seed, 0, "initial")
        pool_ids = self.s.pool_ids()
        if init.size > len(pool_ids):
            raise DalDistError(f"initial.size = {init.size} exceeds the pool's {len(pool_ids)} images")
        if init.kind == "kcenter":
            from dal_dist.selection import select

            return select("kcenter-init", init.size, pool=self.s.pool, seed=seed).select(["id"])
        rng = np.random.default_rng(seed)
        if init.kind == "random":
            return pa.table({"id": pa.array(rng.choice(pool_ids, size=init.size, replace=False), pa.int64())})
        ids, labels = self.oracle().all_labels()  # balanced: peeks at every label (Gal et al. 2017's protocol)
        return pa.table({"id": pa.array(balanced_sample(ids, labels, init.size, rng), pa.int64())})

    def _label(self, r: int, rd: Path) -> None:
        ids = read_selection(self.run_dir, r)
        if self.cfg.oracle == "simulated":
            self.ledger.append(r, ids, self.oracle().labels(ids), "simulated")
            return
        from dal_dist.oracle import export_to_label

        out = export_to_label(rd, ids, pool_images(self.s.pool, ids, self.s.image_shape), self.s.class_names)
        raise _Paused(r, f"round {r}: {len(ids)} images to label in {out} (to_label.csv, or import tasks.json "
                         f"into Label Studio); then run `dal-dist labels import FILE --run-dir {self.run_dir}` "
                         f"and `dal-dist run --resume {self.run_dir}`")

    def _generate(self, r: int, rd: Path) -> None:
        """BGADL (Tran et al. 2019): fit the VAE-ACGAN on every label so far, then add x' = g(e(x*)) for
        this round's x* with the oracle's label; the next rounds' training reads them (see `_train`)."""
        from dal_dist.bgadl import BGADLConfig, bgadl_generate_round

        labeled = self.ledger.table(before_round=r + 1).sort_by("id")
        ids = labeled.column("id").to_numpy()
        labels = labeled.column("label").to_numpy()
        images = pool_images(self.s.pool, ids, self.s.image_shape)
        new = np.isin(ids, read_selection(self.run_dir, r))
        cfg = (self.cfg.strategy.bgadl or BGADLConfig()).model_copy(update={"seed": self.cfg.seed})
        prev = round_dir(self.run_dir, r - 1) / "vae_acgan.pt"
        result = bgadl_generate_round(images, labels, images[new], labels[new], ids[new], cfg,
                                      num_classes=self.s.num_classes, round_index=r,
                                      model_out=rd / "vae_acgan.pt", generated_out=rd / GENERATED_FILE,
                                      init_model=prev if prev.is_file() else None,
                                      device=self._local_device())
        write_json_atomic(rd / "generate.json", {"generated": int(len(result.ids)), "metrics": result.metrics})

    def _manifest(self, r: int, rd: Path) -> None:
        kind = "initial" if r == 0 else "acquisition" if r <= self.cfg.num_rounds() else "final"
        if reached_target(self.run_dir, self.cfg, r):
            kind = "target_reached"
        selected = read_selection(self.run_dir, r).tolist() if (rd / "selection.parquet").is_file() else []
        before = len(self.ledger.ids(before_round=r))
        write_json_atomic(rd / "manifest.json", {
            "round": r, "kind": kind, "config_hash": self.s.config_hash,
            "checkpoint": str((rd / "model.pt").relative_to(self.run_dir)) if (rd / "model.pt").is_file() else None,
            "metrics": _read_json(rd / "metrics.json"),
            "selected_ids": selected,
            "labels_before": before,
            "labels_count": before + (len(selected) if self.ledger.has_round(r) else 0),
            "timings": _read_json(rd / "timings.json") or {},
            "completed_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        })

    def oracle(self) -> Any:
        if self._oracle is None:
            from dal_dist.oracle import SimulatedOracle

            self._oracle = SimulatedOracle(self.s.pool)
        return self._oracle


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


def _read_json(path: Path) -> Any:
    return json.loads(path.read_text()) if path.is_file() else None


# ------------------------------------------------------------------------------------------ status
def run_status(run_dir: str | os.PathLike) -> dict[str, Any]:
    """Rounds done, labels used, latest metrics and what happens next (read-only; takes no lock)."""
    run_dir = local_run_dir(run_dir)
    cfg, h = _read_stored_config(run_dir)
    total = cfg.num_rounds()
    done = [r for r in range(1, total + 1) if step_done(run_dir, cfg, r, "manifest")]
    curve, latest = [], None
    for r in range(1, last_round(cfg) + 1):
        m = _read_json(round_dir(run_dir, r) / "metrics.json")
        if m:
            curve.append({"round": r, "labels": m.get("labels"), "test_accuracy": m.get("test_accuracy")})
            latest = m
    nxt = next_step(run_dir, cfg)
    if nxt is None:
        what = "nothing: the run is complete"
    elif nxt[1] == "label" and cfg.oracle == "human":
        what = (f"round {nxt[0]} waits for human labels: label {round_dir(run_dir, nxt[0]) / 'to_label'}, then "
                f"`dal-dist labels import FILE --run-dir {run_dir}` and `dal-dist run --resume {run_dir}`")
    else:
        what = f"round {nxt[0]}: {nxt[1]} (`dal-dist run --resume {run_dir}`)"
    lock = run_dir / ".lock"
    return {
        "run_dir": str(run_dir), "config_hash": h, "strategy": cfg.strategy.name, "oracle": cfg.oracle,
        "rounds_completed": len(done), "rounds_total": total,
        "initial_done": step_done(run_dir, cfg, 0, "manifest"),
        "final_done": cfg.final_train and step_done(run_dir, cfg, total + 1, "manifest"),
        "labels": LabelLedger(run_dir).count(),
        "latest_metrics": latest, "curve": curve,
        "next": None if nxt is None else {"round": nxt[0], "step": nxt[1]},
        "next_action": what, "complete": nxt is None, "locked": _is_locked(lock),
        "target_reached_round": next((r for r in range(1, last_round(cfg) + 1)
                                      if reached_target(run_dir, cfg, r)), None),
    }


def _is_locked(path: Path) -> bool:
    if not path.exists():
        return False
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
