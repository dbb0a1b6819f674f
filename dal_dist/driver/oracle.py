"""Who answers label requests: the simulated oracle (the pool's hidden labels) or a human (files out).

Human round trip: after selection the driver exports `RUN_DIR/rounds/NNN/to_label/` and pauses:
`to_label.csv` (`id,image`), one `<id>.png` per image (re-encoded at the pool's shape), `label_config.xml`
(the image and a required single choice among the class names) and `tasks.json`, which Label Studio
imports as it is: per image `data.image` (the original file through Label Studio's local-files storage or
a URL prefix when the pool has originals, else the PNG: through local files, or inline as a data URI),
`data.dal_id`, a prediction of round N's model (`model_version`, `score` = the acquisition score the pick
was made on, `result` = the predicted class as a pre-annotation) and `meta` (dal_id, round, strategy,
rank). The labels come back through `dal_dist.driver.labels` (`dal-dist labels import`), and
`dal-dist run --resume` continues.
"""

from __future__ import annotations

import base64
import csv
import io
import json
import os
import shutil
import urllib.parse
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from dal_dist.driver import label_studio as ls
from dal_dist.errors import DalDistError

if TYPE_CHECKING:
    from dal_dist.driver.config import LabelStudioSection
    from dal_dist.driver.state import RunState

TO_LABEL = "to_label"
TASKS_FILE = "tasks.json"
LABEL_CONFIG_FILE = "label_config.xml"
LOCAL_FILES_URL = "/data/local-files/?d="  # Label Studio's local-files storage (labelstud.io/guide/storage)
_SCORE_COLUMNS = ("score", "radius")  # what selection.parquet records a pick by: top-k score, k-center radius


class SimulatedOracle:
    """Answers from the pool's `label` column, for the requested ids only (strategies never see it)."""

    def __init__(self, pool: str | os.PathLike):
        from dal_dist.pool import validate_pool

        self.pool = os.fspath(pool)  # a local path or a URI (dal_dist.fs)
        info = validate_pool(pool)
        if not info.has_label:
            raise DalDistError(f"{pool}: the simulated oracle needs a `label` column; this pool has none "
                               "(use oracle: human)")

    def labels(self, ids: np.ndarray) -> np.ndarray:
        """Labels of `ids` in the same order; every id must exist and carry a label."""
        ids = np.asarray(ids, dtype=np.int64)
        found = dict(zip(*self._read(ids)))
        missing = [int(i) for i in ids if int(i) not in found]
        if missing:
            raise DalDistError(f"{self.pool}: ids {missing[:5]} are not in the pool or have no label")
        return np.array([found[int(i)] for i in ids], dtype=np.int64)

    def all_labels(self) -> tuple[np.ndarray, np.ndarray]:
        """(ids, labels) of every labeled row: only for the balanced initial set, which peeks on purpose."""
        return self._read(None)

    def _read(self, wanted: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        from dal_dist.pool import iter_batches

        out_ids, out_labels = [], []
        want = pa.array(np.unique(wanted)) if wanted is not None else None
        for rb in iter_batches(self.pool, columns=["id", "label"]):
            t = pa.Table.from_batches([rb])
            mask = pc.is_valid(t.column("label"))
            if want is not None:
                mask = pc.and_(mask, pc.is_in(t.column("id"), value_set=want))
            t = t.filter(mask)
            out_ids.append(t.column("id").to_numpy())
            out_labels.append(t.column("label").to_numpy())
        if not out_ids:
            return np.zeros(0, np.int64), np.zeros(0, np.int64)
        return (np.concatenate(out_ids).astype(np.int64, copy=False),
                np.concatenate(out_labels).astype(np.int64, copy=False))


# ------------------------------------------------------------------------------------------- export
@dataclass
class TaskInfo:
    """What tasks.json says about each picked image besides its pixels (see `round_task_info`)."""

    round: int
    strategy: str
    model_version: str | None = None  # the round's checkpoint; None: no model yet (round 0), no predictions
    score_name: str | None = None  # the selection column the picks were made on (score, radius)
    scores: dict[int, float] = field(default_factory=dict)
    preds: dict[int, tuple[int, float]] = field(default_factory=dict)  # id → (predicted class, confidence)
    urls: dict[int, str] = field(default_factory=dict)  # id → URL of the original image
    png_url_prefix: str | None = None  # local-files URL of to_label/ (raw pools with document_root)


def export_to_label(round_dir: str | os.PathLike, ids: np.ndarray, images: np.ndarray,
                    class_names: list[str], info: TaskInfo | None = None) -> Path:
    """Write `round_dir/to_label/` (CSV, PNGs, Label Studio tasks + config) at once: a staging dir renamed."""
    round_dir = Path(round_dir)
    out = round_dir / TO_LABEL
    if out.is_dir():
        return out
    info = info or TaskInfo(round=-1, strategy="")
    staging = round_dir / f".{TO_LABEL}.staging-{uuid.uuid4().hex[:8]}"
    staging.mkdir(parents=True)
    try:
        rows, tasks = [], []
        for rank, (i, img) in enumerate(zip(np.asarray(ids, dtype=np.int64).tolist(), images), start=1):
            name = f"{i}.png"
            png = png_bytes(img)
            (staging / name).write_bytes(png)
            rows.append((i, name))
            tasks.append(_task(i, rank, name, png, class_names, info))
        with open(staging / "to_label.csv", "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["id", "image"])
            w.writerows(rows)
        (staging / TASKS_FILE).write_text(json.dumps(tasks, indent=1) + "\n")
        (staging / LABEL_CONFIG_FILE).write_text(ls.label_config(class_names))
        staging.rename(out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out


def png_bytes(img: np.ndarray) -> bytes:
    """One H×W×C uint8 image as PNG bytes (grey for one channel)."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(img[..., 0] if img.shape[-1] == 1 else img).save(buf, format="PNG")
    return buf.getvalue()


def _task(i: int, rank: int, name: str, png: bytes, class_names: list[str], info: TaskInfo) -> dict[str, Any]:
    """The Label Studio task of one picked image."""
    if i in info.urls:
        image = info.urls[i]
    elif info.png_url_prefix is not None:
        image = info.png_url_prefix + urllib.parse.quote(name)
    else:
        image = "data:image/png;base64," + base64.b64encode(png).decode("ascii")
    meta: dict[str, Any] = {"dal_id": i, "round": info.round, "strategy": info.strategy, "rank": rank}
    score = info.scores.get(i)
    if score is not None:
        meta.update(score=score, score_kind=pick_value_name(info.strategy, info.score_name))
    prediction = None
    if info.model_version is not None and i in info.preds:
        k, confidence = info.preds[i]
        meta.update(predicted=class_names[k], confidence=confidence)
        prediction = {"model_version": info.model_version, "result": [ls.choice_result(i, class_names[k])]}
        if score is not None:
            prediction["score"] = score
    return ls.task(i, image, meta, prediction)


# ------------------------------------------------------------------------------- what the tasks say
def round_task_info(state: "RunState", r: int, round_dir: Path, ids: np.ndarray, images: np.ndarray) -> TaskInfo:
    """Everything tasks.json says about round r's picks, checked before anything is written: the pick scores,
    the round's model predictions (rounds >= 1) and where Label Studio finds each image."""
    from dal_dist.driver import layout
    from dal_dist.models.checkpoint import CHECKPOINT_FILE

    ids = np.asarray(ids, dtype=np.int64)
    info = TaskInfo(round=r, strategy=state.config.strategy.name)
    info.score_name, info.scores = _pick_scores(round_dir / layout.SELECTION_FILE)
    model = round_dir / CHECKPOINT_FILE
    if r > 0 and model.is_file():
        info.model_version = f"round {r:03d} {CHECKPOINT_FILE} (run {state.config_hash[:12]})"
        info.preds = (_scored_predictions(state, round_dir / layout.SCORES_DIR, ids)
                      or _model_predictions(model, ids, images))
    opts = state.config.label_studio
    if opts is not None:
        info.urls, info.png_url_prefix = image_urls(opts, state.pool, ids, round_dir / TO_LABEL)
    return info


def pick_value_name(strategy: str, column: str | None) -> str | None:
    """What a selection column means for a strategy: top-k's `score` is its acquisition (bald, entropy, ...),
    `radius` is the k-center distance to the nearest center at pick time."""
    from dal_dist.driver.strategies import STRATEGIES

    if column == "score":
        return STRATEGIES[strategy].rank_by if strategy in STRATEGIES else "score"
    return "k-center radius" if column == "radius" else column


def _pick_scores(selection: Path) -> tuple[str | None, dict[int, float]]:
    """(column, id → value) of what the selection ranked its picks by (none for random picks)."""
    import pyarrow.parquet as pq

    t = pq.read_table(selection)
    name = next((c for c in _SCORE_COLUMNS if c in t.column_names), None)
    if name is None:
        return None, {}
    return name, {int(i): float(v) for i, v in zip(t.column("id").to_pylist(), t.column(name).to_pylist())
                  if v is not None}


def _scored_predictions(state: "RunState", scores: Path, ids: np.ndarray) -> dict[int, tuple[int, float]]:
    """id → (pred, confidence) from the round's scores, when they come from the task model (else {})."""
    from dal_dist import fs as fsx
    from dal_dist.driver.strategies import STRATEGIES
    from dal_dist.models.checkpoint import CHECKPOINT_FILE
    import pyarrow.parquet as pq

    if STRATEGIES[state.config.strategy.name].checkpoint != CHECKPOINT_FILE or not scores.is_dir():
        return {}
    want = pa.array(np.unique(ids))
    out: dict[int, tuple[int, float]] = {}
    for f in fsx.list_files(scores, ".parquet"):
        t = pq.read_table(f, columns=["id", "pred", "confidence"])
        t = t.filter(pc.is_in(t.column("id"), value_set=want))
        for i, k, c in zip(*(t.column(n).to_pylist() for n in ("id", "pred", "confidence"))):
            if k is not None:
                out[int(i)] = (int(k), float(c))
    return out if len(out) == len(set(ids.tolist())) else {}


def _model_predictions(checkpoint: Path, ids: np.ndarray, images: np.ndarray,
                       batch: int = 256) -> dict[int, tuple[int, float]]:
    """id → (predicted class, softmax confidence) of the task model with dropout off: for rounds whose scores are
    not the task model's (random picks score nothing, SRAAL scores with its selector)."""
    import torch

    from dal_dist.models import load_checkpoint, preprocess

    model = load_checkpoint(checkpoint)
    model.eval()
    out: dict[int, tuple[int, float]] = {}
    with torch.no_grad():
        for start in range(0, len(ids), batch):
            x = preprocess(torch.from_numpy(np.array(images[start:start + batch])), model.config)
            conf, pred = torch.softmax(model(x), dim=1).max(dim=1)
            out.update((int(i), (int(k), float(c))) for i, k, c in
                       zip(ids[start:start + batch], pred.tolist(), conf.tolist()))
    return out


def image_urls(opts: "LabelStudioSection", pool: str | os.PathLike, ids: np.ndarray,
               to_label: Path) -> tuple[dict[int, str], str | None]:
    """(id → URL of the original, local-files URL prefix of to_label/) that Label Studio opens, every file
    checked first: originals must exist under the document root; a raw-pixel pool has no originals."""
    paths = _pool_paths(pool, ids)
    if opts.image_url_prefix is not None:
        if paths is None:
            raise DalDistError(f"label_studio.image_url_prefix: pool {pool} has no `path` column (original files); "
                               "only image-folder pools have originals. Remove it (the PNGs are then inline) or "
                               "serve to_label/ with label_studio.document_root")
        quote = opts.image_url_prefix.startswith(("http://", "https://", "/"))
        return {i: opts.image_url_prefix + (urllib.parse.quote(p, safe="/") if quote else p)
                for i, p in paths.items()}, None
    if opts.document_root is None:
        return {}, None
    root = Path(opts.document_root).resolve()
    if not root.is_dir():
        raise DalDistError(f"label_studio.document_root {opts.document_root}: not a directory; expected the folder "
                           "Label Studio serves as LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT")
    if paths is None:
        return {}, LOCAL_FILES_URL + urllib.parse.quote(_under_root(to_label, root, "to_label/ (the exported PNGs)"),
                                                        safe="/") + "/"
    if opts.image_root is None:
        raise DalDistError(f"label_studio.image_root: pool {pool} names its originals by a `path` relative to the "
                           "folder it was ingested from; set image_root to that folder (`pool ingest --root`)")
    originals = {i: Path(opts.image_root) / p for i, p in paths.items()}
    missing = [f"{f} (id {i})" for i, f in originals.items() if not f.is_file()]
    if missing:
        raise DalDistError(f"label_studio.image_root {opts.image_root}: {len(missing)} original file(s) not found, "
                           f"e.g. {missing[:3]}")
    return {i: LOCAL_FILES_URL + urllib.parse.quote(_under_root(f, root, f"original of id {i}"), safe="/")
            for i, f in originals.items()}, None


def _under_root(path: Path, root: Path, what: str) -> str:
    """`path` relative to the document root (Label Studio serves nothing outside it), or an error."""
    target = path.resolve()
    if target == root or not target.is_relative_to(root):
        raise DalDistError(f"label_studio.document_root {root}: {what} {target} is not inside it; Label Studio "
                           "serves local files only below LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT")
    return target.relative_to(root).as_posix()


def _pool_paths(pool: str | os.PathLike, ids: np.ndarray) -> dict[int, str] | None:
    """id → `path` (relative to the ingest root) of an image-folder pool; None when the pool has no such column."""
    import pyarrow.parquet as pq

    from dal_dist import fs as fsx
    from dal_dist.pool import iter_batches, pool_files

    files = pool_files(pool)
    if not files or "path" not in pq.read_schema(fsx.open_input(files[0])).names:
        return None
    want = pa.array(np.unique(ids))
    out: dict[int, str] = {}
    for rb in iter_batches(pool, columns=["id", "path"]):
        rb = rb.filter(pc.is_in(rb.column("id"), value_set=want))
        out.update((int(i), p) for i, p in zip(rb.column("id").to_pylist(), rb.column("path").to_pylist())
                   if p is not None)
    return out
