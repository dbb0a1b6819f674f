"""The run config (`dal-dist run --config run.yaml`): validated once at load, unknown keys are errors.

Example (see `examples/quickstart.yaml`)::

    pool: builtin:mnist5k          # a pool directory, or a builtin (see dal_dist.pool.builtin)
    test_pool: null                # defaults to the builtin's test split; needed for accuracy curves
    model: {name: mnist-cnn, dropout: 0.5}
    strategy: {name: bald, mc_samples: 20}
    initial: {kind: balanced, size: 20}
    budget: 10                     # labels acquired per round
    rounds: 3                      # or total_budget: labels in the ledger at the end (initial included)
    train: {epochs: 50, batch_size: 64, lr: 0.001}
    workers: 1                     # scoring actors
    scoring: null                  # {gpus_per_worker, cpus_per_worker, threads_per_worker, batch_size, precision,
                                   #  decode, overlap, start_timeout}: how each round's scoring job runs
    executor: ray                  # or local: train + score in the driver process (small pools)
    stop_at_accuracy: null         # e.g. 0.95: stop at the first round whose model reaches it
    seed: 0
    oracle: simulated              # or human
    label_studio: null             # human oracle: {document_root, image_root} or {image_url_prefix} (README)
    run_dir: null                  # `--run-dir` overrides
    ray: {address: null}           # null: local Ray (or RAY_ADDRESS)

Relative paths (`pool`, `test_pool`, `run_dir`, `label_studio.document_root`/`image_root`) are resolved
against the config file's directory.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from pathlib import Path
from typing import Literal

from pydantic import (BaseModel, ConfigDict, Field, SerializerFunctionWrapHandler, ValidationError, field_validator,
                      model_serializer, model_validator)

from dal_dist.driver.strategies import STRATEGIES, STRATEGY_NAMES, SUBSET_STRATEGIES, UNCERTAINTY
from dal_dist.errors import DalDistError
from dal_dist.methods.bgadl import BGADLConfig
from dal_dist.methods.sraal import SRAALConfig
from dal_dist.training import TrainConfig


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class NormalizeSection(_Strict):
    """Per-channel mean and std the model's input is normalized with (one value: every channel)."""

    mean: list[float] = Field(min_length=1)
    std: list[float] = Field(min_length=1)

    @model_validator(mode="after")
    def _positive_std(self) -> "NormalizeSection":
        if not all(s > 0 for s in self.std):
            raise ValueError(f"every std must be > 0, got {self.std}")
        return self


class ModelSection(_Strict):
    """The network trained each round (see dal_dist.models)."""

    name: str = Field("mnist-cnn", description="mnist-cnn, resnet18-small, resnet18, resnet34, resnet50, "
                      "efficientnet_b0, convnext_tiny, vit_b_16, or a plug-in 'package.module:factory'")
    dropout: float = Field(0.5, ge=0, lt=1)
    image_size: int | None = Field(None, ge=1)
    in_channels: int | None = Field(None, ge=1)
    num_classes: int | None = Field(None, ge=2, description="default: the pool's num_classes")
    weights: str | None = Field(None, min_length=1, description="local torchvision state_dict the backbone "
                                "starts from each round (never downloaded); relative to the config file")
    normalize: Literal["imagenet", "half", "none"] | NormalizeSection | None = Field(
        None, description="input normalization; null: the model's default (imagenet for torchvision and plug-ins)")
    backbone: Literal["trainable", "frozen"] | None = Field(
        None, description="frozen: the backbone ran once (`dal-dist embed`); each round trains only a dropout head "
                          "on `embeddings` and scores it there, no image decoded; null: trainable")
    embeddings: str | None = Field(None, min_length=1, description="frozen backbone: the pool's `dal-dist embed` "
                                   "output (relative to the config file)")
    test_embeddings: str | None = Field(None, min_length=1, description="frozen backbone: the test pool's "
                                        "`dal-dist embed` output, made by the same model (labels: test_pool)")
    hidden: int | None = Field(None, ge=1, description="frozen backbone: width of the head's hidden layer "
                               "(before the dropout, so it runs once per row); null: dropout → linear only")

    @property
    def frozen(self) -> bool:
        """Whether rounds train and score a head over cached embeddings instead of the whole network."""
        return self.backbone == "frozen"

    @field_validator("name")
    @classmethod
    def _known_model(cls, name: str) -> str:
        from dal_dist.models import check_model_name

        try:
            check_model_name(name)
        except DalDistError as e:
            raise ValueError(str(e)) from None
        return name

    @field_validator("normalize", mode="before")
    @classmethod
    def _one_normalize_error(cls, value: object) -> object:
        """One message for a bad `normalize` (not one per member of the union)."""
        if value is None or isinstance(value, NormalizeSection):
            return value
        if isinstance(value, str):
            if value not in NORMALIZE_NAMES:
                raise ValueError(f"expected one of {list(NORMALIZE_NAMES)} or {{mean: [...], std: [...]}}")
            return value
        if not isinstance(value, dict):
            raise ValueError(f"expected one of {list(NORMALIZE_NAMES)} or {{mean: [...], std: [...]}}, "
                             f"got {type(value).__name__}")
        try:
            return NormalizeSection.model_validate(value)
        except ValidationError as e:
            raise ValueError("; ".join((f"{_key_path(err['loc'])}: " if err["loc"] else "")
                                       + ("unknown key" if err["type"] == "extra_forbidden"
                                          else err["msg"].removeprefix("Value error, "))
                                       for err in e.errors())) from None

    @model_serializer(mode="wrap")
    def _omit_unset(self, handler: SerializerFunctionWrapHandler) -> dict:
        """Fields added after runs existed are left out while unset: those runs' config hashes stay valid."""
        body = handler(self)
        for key in MODEL_FIELDS_SINCE_HASH:
            if body.get(key) is None:
                body.pop(key, None)
        return body

    def normalize_spec(self) -> str | dict | None:
        """`normalize` as `dal_dist.models.default_config` takes it."""
        return self.normalize.model_dump() if isinstance(self.normalize, NormalizeSection) else self.normalize


MODEL_FIELDS_SINCE_HASH = ("weights", "normalize", "backbone", "embeddings", "test_embeddings", "hidden")
OPTIONAL_STRATEGY_FIELDS = ("beta", "clusters")  # strategy options added after runs existed: left out of the hash while unset
NORMALIZE_NAMES = ("imagenet", "half", "none")


class StrategySection(_Strict):
    """Which acquisition picks each round's batch, and its options."""

    name: Literal[STRATEGY_NAMES]  # type: ignore[valid-type]
    by: Literal[UNCERTAINTY] | None = Field(  # type: ignore[valid-type]
        None, description="hybrid: the score that pre-filters candidates; powerbald/softmax/softrank: the "
                          "score sampled by (default bald)")
    beta: float | None = Field(None, ge=0, allow_inf_nan=False,
                               description="powerbald/softmax/softrank: the sampling exponent β (Kirsch et al. "
                               "2023; default 1; larger: closer to top-k, which is strategy bald itself); density: "
                               "the exponent of the mean similarity (Settles & Craven 2008; default 1)")
    clusters: int | None = Field(None, ge=1, description="typiclust: the most k-means clusters (Hacohen et al. "
                                 "2022; default 500); cluster_margin: the clusters of the pool (Citovsky et al. "
                                 "2021; default √N, at most 1,000)")
    candidates: int | None = Field(None, ge=1, description="hybrid: top-M rows k-center sees; cluster_margin: "
                                   "top-M rows by margin; batchbald: top-M rows by bald (default 10×budget)")
    ll_subset: int = Field(10_000, ge=1, description="learning_loss: random unlabeled subset scored "
                                                     "each round (Yoo & Kweon 2019)")
    subset: int | None = Field(None, ge=1, description="score only a random unlabeled subset of this size each "
                               "round (Gal et al. 2017 used 2,000); k-center & co pick among it, labeled rows still "
                               "their centers; null: all")
    mc_samples: int = Field(20, ge=2, description="MC-dropout samples T")
    distributed: bool = Field(False, description="kcenter, badge, typiclust, cluster_margin: the selection on "
                              "Ray shard actors (the same picks as one node)")
    sraal: SRAALConfig | None = Field(None, description="sraal: the state-relabeling selector's training "
                                      "(Zhang et al. 2020); null: defaults")
    bgadl: BGADLConfig | None = Field(None, description="bgadl: the VAE-ACGAN that generates x' = g(e(x*)) "
                                      "(Tran et al. 2019); null: defaults")

    @model_validator(mode="after")
    def _options_fit(self) -> "StrategySection":
        if self.by is not None and not STRATEGIES[self.name].takes_by:
            by_users = [n for n, s in STRATEGIES.items() if s.takes_by]
            raise ValueError(f"`by` is only used by the strategies {by_users} (strategy {self.name} scores by "
                             "its own name)")
        for key in (*OPTIONAL_STRATEGY_FIELDS, "candidates"):
            if getattr(self, key) is not None and key not in STRATEGIES[self.name].options:
                users = [n for n, s in STRATEGIES.items() if key in s.options]
                raise ValueError(f"`{key}` is only used by the strategies {users}, not {self.name}")
        if self.subset is not None and self.name not in SUBSET_STRATEGIES:
            raise ValueError(f"`subset` applies to the strategies {list(SUBSET_STRATEGIES)}, not {self.name} "
                             f"(learning_loss has ll_subset; cluster_margin clusters every row of the pool once)")
        for key in ("sraal", "bgadl"):
            if getattr(self, key) is not None and self.name != key:
                raise ValueError(f"`{key}` options are only used by strategy {key}, not {self.name}")
        return self


class InitialSection(_Strict):
    """The first labeled set (round 0), chosen before any model exists."""

    kind: Literal["balanced", "random", "kcenter"] = "balanced"
    size: int = Field(20, ge=1)


class LabelStudioSection(_Strict):
    """Human oracle: where Label Studio finds the images of `to_label/tasks.json` (null: inline PNGs)."""

    document_root: str | None = Field(
        None, description="the folder Label Studio serves as LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT, as a path on "
                          "this machine: images become /data/local-files/?d=<path relative to it>")
    image_root: str | None = Field(
        None, description="image-folder pools: the folder they were ingested from (`pool ingest --root`), where "
                          "the originals named by the pool's `path` column live; needs document_root")
    image_url_prefix: str | None = Field(
        None, min_length=1, description="image-folder pools: a URL prefix under which Label Studio reaches the "
                                        "originals (s3://bucket/photos/, https://host/photos/); data.image = prefix + path")

    @model_validator(mode="after")
    def _one_source(self) -> "LabelStudioSection":
        if self.image_url_prefix is not None and (self.document_root is not None or self.image_root is not None):
            raise ValueError("give image_url_prefix, or document_root (with image_root for image-folder pools), "
                             "not both")
        if self.image_root is not None and self.document_root is None:
            raise ValueError("image_root needs document_root (the originals are served by Label Studio's local "
                             "files storage)")
        return self


class ScoringSection(_Strict):
    """How each round's scoring job runs: what every actor requests, its batches, precision and decode."""

    gpus_per_worker: float | None = Field(
        None, ge=0, description="GPUs each scoring actor requests (0.5: two per card; above 1 whole numbers); "
                                "requested, not counted, so on an autoscaling cluster the actors wait for GPU nodes; "
                                "null: share the GPUs up now, none on a CPU cluster")
    cpus_per_worker: float | None = Field(None, ge=0, description="CPUs each actor reserves (decode threads); null: "
                                          "a GPU actor's share of its node, a CPU actor's share of the cluster")
    threads_per_worker: int | None = Field(None, ge=1, description="torch and decode threads per actor")
    batch_size: int = Field(256, ge=1, description="images per scoring batch (the dropout masks are seeded per batch)")
    precision: Literal["bf16", "fp16", "fp32"] | None = Field(
        None, description="forward-pass autocast; null: bf16 on a GPU, fp32 on CPU (scores always float32)")
    decode: Literal["auto", "cpu", "device"] = Field("auto", description="JPEG rows decoded by PIL (cpu) or "
                                                     "torchvision on the actor's device; auto: device on a GPU")
    overlap: bool | None = Field(None, description="two batches per actor: one decoded and copied while the model "
                                 "runs the other; null: on GPU actors")
    start_timeout: float | None = Field(None, gt=0, description="seconds to wait for the first scored batch (an "
                                        "autoscaler adding GPU nodes) before the round fails; null: wait")

    @field_validator("gpus_per_worker")
    @classmethod
    def _ray_gpu_rule(cls, g: float | None) -> float | None:
        from dal_dist.scoring.placement import check_gpus_per_worker

        if g is not None:
            try:
                check_gpus_per_worker(g)
            except DalDistError as e:
                raise ValueError(str(e).replace("--gpus-per-worker ", "").removesuffix(f", got {g}")) from None
        return g

    def score_options(self) -> dict[str, object]:
        """`score_pool`'s keyword arguments for these settings."""
        return self.model_dump()


class RaySection(_Strict):
    address: str | None = Field(None, description="null: start a local Ray (or use RAY_ADDRESS)")


class RunConfig(_Strict):
    """One active-learning run: what to label, how to choose, how to train, who answers."""

    pool: str
    test_pool: str | None = None
    model: ModelSection = Field(default_factory=ModelSection)
    strategy: StrategySection
    budget: int = Field(ge=1, description="labels acquired per round")
    rounds: int | None = Field(None, ge=1)
    total_budget: int | None = Field(None, ge=1, description="labels in the ledger at the end, initial included")
    initial: InitialSection = Field(default_factory=InitialSection)
    train: TrainConfig = Field(default_factory=TrainConfig)
    final_train: bool = Field(True, description="after the last round, train + evaluate once more on all labels")
    workers: int = Field(1, ge=1, description="scoring actors")
    scoring: ScoringSection | None = Field(None, description="the scoring actors' resources, batch size, precision, "
                                           "decode; null: the defaults (executor local: threads and batches only)")
    executor: Literal["ray", "local"] = Field(
        "ray", description="ray: Ray Train + Ray Data actors; local: train and score in the driver process "
                           "(small pools and experiments, where starting Ray workers costs more than the work)")
    stop_at_accuracy: float | None = Field(
        None, gt=0, le=1, description="end the run at the first round whose model reaches this test accuracy")
    seed: int = Field(0, ge=0)
    oracle: Literal["simulated", "human"] = "simulated"
    label_studio: LabelStudioSection | None = Field(
        None, description="human oracle: how Label Studio reaches the images of tasks.json; null: inline PNGs")
    run_dir: str | None = None
    ray: RaySection = Field(default_factory=RaySection)

    @model_validator(mode="after")
    def _rounds_or_total(self) -> "RunConfig":
        if (self.rounds is None) == (self.total_budget is None):
            raise ValueError("give exactly one of `rounds` and `total_budget`")
        if self.total_budget is not None and self.total_budget <= self.initial.size:
            raise ValueError(f"total_budget ({self.total_budget}) must exceed initial.size ({self.initial.size})")
        if self.label_studio is not None and self.oracle != "human":
            raise ValueError("label_studio options are only used with oracle: human")
        if self.oracle == "human" and self.initial.kind == "balanced":
            raise ValueError("initial.kind balanced peeks at the pool's labels (simulated oracle only); "
                             "use random or kcenter with oracle: human")
        if STRATEGIES[self.strategy.name].learning_loss and not self.train.learning_loss:
            self.train = self.train.model_copy(update={"learning_loss": True})
        if self.executor == "local" and self.strategy.distributed:
            raise ValueError("strategy.distributed (selection on Ray shard actors) needs executor: ray")
        if self.executor == "local" and self.train.workers != 1:
            raise ValueError(f"train.workers={self.train.workers} needs executor: ray (local trains in one process)")
        if not STRATEGIES[self.strategy.name].learning_loss and self.train.learning_loss:
            raise ValueError("train.learning_loss is only meaningful with strategy learning_loss")
        self._check_frozen_backbone()
        self._check_scoring()
        return self

    def _check_scoring(self) -> None:
        """Scoring settings only where something uses them."""
        if self.scoring is None:
            return
        given = self.scoring.model_fields_set
        actors = [k for k in ("gpus_per_worker", "cpus_per_worker", "start_timeout") if k in given]
        if self.executor == "local" and actors:
            raise ValueError(f"scoring.{actors[0]} sizes Ray actors; executor: local scores in the driver process")
        images = [k for k in ("batch_size", "precision", "decode", "overlap", *actors) if k in given]
        if self.model.frozen and images:
            raise ValueError(f"scoring.{images[0]} applies to scoring images; a frozen-backbone run scores a head "
                             "on cached embeddings in the driver (scoring.threads_per_worker only)")

    def _check_frozen_backbone(self) -> None:
        """A frozen-backbone run names its embeddings and uses no part of the image pipeline."""
        m, st = self.model, STRATEGIES[self.strategy.name]
        if not m.frozen:
            given = [k for k in ("embeddings", "test_embeddings", "hidden") if getattr(m, k) is not None]
            if given:
                raise ValueError(f"model.{given[0]} is only used with model.backbone: frozen")
            return
        if m.embeddings is None:
            raise ValueError("model.backbone: frozen needs model.embeddings (the pool's `dal-dist embed` output)")
        if (self.test_pool is None) != (m.test_embeddings is None):
            raise ValueError("model.backbone: frozen evaluates on cached embeddings too: give both test_pool (its "
                             "labels) and model.test_embeddings (its `dal-dist embed` output), or neither")
        image_only = [k for k in ("weights", "normalize", "image_size", "in_channels") if getattr(m, k) is not None]
        if image_only:
            raise ValueError(f"model.{image_only[0]} describes the backbone, which ran in `dal-dist embed`; a frozen-"
                             "backbone run trains only the head")
        if st.learning_loss or st.trains_selector or st.reads_generated or st.reruns_model:
            raise ValueError(f"strategy {self.strategy.name} needs the images and the whole network each round; "
                             "it does not run with model.backbone: frozen")
        if self.train.augment != "none":
            raise ValueError(f"train.augment {self.train.augment!r} transforms images; a frozen backbone's head "
                             "trains on cached embeddings (use augment: none)")

    def num_rounds(self) -> int:
        """Acquisition rounds: `rounds`, or enough to reach `total_budget` (the last one may be smaller)."""
        if self.rounds is not None:
            return self.rounds
        return math.ceil((self.total_budget - self.initial.size) / self.budget)  # type: ignore[operator]

    def round_budget(self, r: int) -> int:
        """Labels acquired in round r (1-based); only the last round of a `total_budget` run is short."""
        if self.total_budget is None:
            return self.budget
        return min(self.budget, self.total_budget - self.initial.size - (r - 1) * self.budget)

    def canonical_json(self) -> str:
        """Sorted-key JSON of every field (defaults included): the thing the config hash is taken of."""
        body = self.model_dump(mode="json", exclude={"run_dir"})
        for key in ("sraal", "bgadl", *OPTIONAL_STRATEGY_FIELDS):  # absent unless set: older runs' hashes stay valid
            if body["strategy"].get(key) is None:
                body["strategy"].pop(key, None)
        for key in ("label_studio", "scoring"):  # the same for sections added later (human oracle, scoring)
            if body.get(key) is None:
                body.pop(key, None)
        return json.dumps(body, sort_keys=True, separators=(",", ":"))

    def config_hash(self) -> str:
        """sha256 of the canonical JSON (run_dir excluded: moving a run does not change what it computes)."""
        return hashlib.sha256(self.canonical_json().encode()).hexdigest()


def _key_path(loc: tuple) -> str:
    return ".".join(str(p) for p in loc) or "(top level)"


def parse_config(data: object, source: str = "config") -> RunConfig:
    """Validate a parsed mapping; pydantic errors become one DalDistError naming each key path."""
    if not isinstance(data, dict):
        raise DalDistError(f"{source}: expected a mapping of keys at the top level, got {type(data).__name__}")
    try:
        return RunConfig.model_validate(data)
    except ValidationError as e:
        lines = []
        for err in e.errors():
            key = _key_path(err["loc"])
            msg = "unknown key" if err["type"] == "extra_forbidden" else err["msg"].removeprefix("Value error, ")
            lines.append(f"{key}: {msg}" + (f" (got {err['input']!r})" if err["type"] != "extra_forbidden"
                                             and not isinstance(err.get("input"), dict) else ""))
        raise DalDistError(f"{source}: " + "; ".join(lines)) from None


def load_config(path: str | os.PathLike) -> RunConfig:
    """Read and validate a YAML run config; relative paths are made absolute against its directory."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise DalDistError(f"{path}: config file not found" if not path.is_dir() else
                           f"{path}: is a directory; expected a YAML config file")
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as e:
        raise DalDistError(f"{path}: not UTF-8 text (byte {e.start}); expected a YAML config file") from None
    try:
        data = yaml.load(text, Loader=_unique_key_loader())  # noqa: S506 (a SafeLoader subclass)
    except yaml.YAMLError as e:
        raise DalDistError(f"{path}: not valid YAML: {' '.join(str(e).split())}") from None
    cfg = parse_config(data, str(path))
    return resolve_paths(cfg, path.parent)


def _unique_key_loader() -> type:
    """A yaml.SafeLoader that refuses a key given twice in one mapping (YAML would keep the last silently)."""
    import yaml

    class UniqueKeyLoader(yaml.SafeLoader):
        def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
            seen: set = set()
            for key_node, _ in node.value:
                key = self.construct_object(key_node, deep=deep)
                if key in seen:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"duplicate key {key!r}", key_node.start_mark)
                seen.add(key)
            return super().construct_mapping(node, deep=deep)

    return UniqueKeyLoader



def resolve_paths(cfg: RunConfig, base: Path) -> RunConfig:
    """Make pool/test_pool/run_dir absolute relative to `base` (builtins and URIs such as s3://... stay as they are)."""
    def fix(p: str | None) -> str | None:
        if p is None or p.startswith("builtin:") or "://" in p:
            return p
        return str((base / Path(p).expanduser()).resolve())

    update = {"pool": fix(cfg.pool), "test_pool": fix(cfg.test_pool), "run_dir": fix(cfg.run_dir)}
    paths = {k: fix(getattr(cfg.model, k)) for k in ("weights", "embeddings", "test_embeddings")
             if getattr(cfg.model, k) is not None}
    if paths:
        update["model"] = cfg.model.model_copy(update=paths)
    if cfg.label_studio is not None:
        ls = cfg.label_studio
        update["label_studio"] = ls.model_copy(update={"document_root": fix(ls.document_root),
                                                       "image_root": fix(ls.image_root)})
    return cfg.model_copy(update=update)
