"""Human labels coming back: a CSV or a Label Studio export, validated against the pending round, then
appended to the ledger all or nothing (`dal-dist labels import FILE --run-dir DIR`)."""

from __future__ import annotations

import csv
import io
import json
import os
import urllib.parse
from pathlib import Path
from typing import Any

import numpy as np

from dal_dist.driver import layout
from dal_dist.driver.ledger import LabelLedger
from dal_dist.driver.oracle import TO_LABEL
from dal_dist.driver.state import load_run_state, local_run_dir, pending_label_round, read_stored_config, run_lock
from dal_dist.errors import DalDistError

_MAX_ERRORS = 10

def parse_label_file(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Rows `{where, id, label, image}` of a CSV (`id,label[,image]`) or a Label Studio export (JSON / JSON-MIN)."""
    path = Path(path)
    if not path.is_file():
        raise DalDistError(f"{path}: label file not found")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as e:
        raise DalDistError(f"{path}: cannot read label file: {e}") from e
    if path.suffix.lower() == ".json" or text.lstrip().startswith(("[", "{")):
        return _parse_label_studio(path, text)
    return _parse_csv(path, text)


def _parse_csv(path: Path, text: str) -> list[dict[str, Any]]:
    reader = csv.DictReader(io.StringIO(text))
    cols = [c.strip() for c in (reader.fieldnames or [])]
    if "id" not in cols or "label" not in cols:
        raise DalDistError(f"{path}: expected a CSV header with columns `id,label` (got {cols or 'no header'})")
    image_col = next((c for c in ("image", "path") if c in cols), None)
    rows = []
    for n, rec in enumerate(reader, start=2):  # line 1 is the header
        rec = {(k or "").strip(): (v or "").strip() if isinstance(v, str) else v for k, v in rec.items()}
        rows.append({"where": f"line {n}", "id": rec.get("id", ""), "label": rec.get("label", ""),
                     "image": rec.get(image_col) if image_col else None})
    return rows


def _parse_label_studio(path: Path, text: str) -> list[dict[str, Any]]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise DalDistError(f"{path}: not valid JSON: {e}") from e
    if not isinstance(data, list):
        raise DalDistError(f"{path}: expected a Label Studio export (a JSON list of tasks), got {type(data).__name__}")
    rows = []
    for n, task in enumerate(data):
        where = f"task {n}"
        if not isinstance(task, dict):
            rows.append({"where": where, "id": None, "label": None, "image": None, "error": "not a JSON object"})
            continue
        fields = task.get("data") if isinstance(task.get("data"), dict) else task  # JSON vs JSON-MIN
        label, error = _ls_choice(task)
        rows.append({"where": where, "id": fields.get("dal_id"), "label": label, "image": fields.get("image"),
                     "error": error})
    return rows


def _ls_choice(task: dict[str, Any]) -> tuple[Any, str | None]:
    """The single choice of a task's (last, not cancelled) annotation; JSON-MIN keeps it under `label`."""
    if "annotations" not in task:
        value = task.get("label")
        if isinstance(value, dict):
            value = value.get("choices")
        if isinstance(value, list):
            return (value[0], None) if len(value) == 1 else (None, f"expected one choice, got {value}")
        return value, None if value is not None else "no `label`"
    anns = [a for a in task.get("annotations") or [] if isinstance(a, dict) and not a.get("was_cancelled")]
    if not anns:
        return None, "no annotation"
    choices = [r.get("value", {}).get("choices") for r in anns[-1].get("result") or []
               if isinstance(r, dict) and r.get("type") == "choices"]
    if len(choices) != 1 or not isinstance(choices[0], list) or len(choices[0]) != 1:
        return None, f"expected exactly one choice in the annotation, got {choices}"
    return choices[0][0], None


def _label_value(raw: Any, class_names: list[str]) -> int | None:
    """A class name (from the pool meta) or an integer index → index; None when outside the class set."""
    if isinstance(raw, bool):
        return None
    if isinstance(raw, str):
        s = raw.strip()
        if s in class_names:
            return class_names.index(s)
        try:
            raw = int(s)
        except ValueError:
            try:
                raw = float(s)  # "7.0" from a spreadsheet export is class 7
            except ValueError:
                return None
    if isinstance(raw, float) and raw.is_integer():
        raw = int(raw)
    if isinstance(raw, int) and 0 <= raw < len(class_names):
        return raw
    return None


def _id_value(raw: Any) -> int | None:
    if isinstance(raw, bool):
        return None
    if isinstance(raw, int):
        return raw
    if isinstance(raw, str):
        try:
            return int(raw.strip())
        except ValueError:
            return None
    return None


def _image_inside(raw: Any, base: Path, run_dir: Path) -> str | None:
    """None when an image reference resolves inside the run directory, else why not (path traversal guard)."""
    if raw is None or raw == "":
        return None
    if not isinstance(raw, str):
        return f"image reference {raw!r} is not a path"
    ref = raw
    parsed = urllib.parse.urlparse(raw)
    if parsed.query and "d" in urllib.parse.parse_qs(parsed.query):  # Label Studio local files: ?d=<path>
        ref = urllib.parse.parse_qs(parsed.query)["d"][0]
    elif parsed.scheme and len(parsed.scheme) > 1:
        return f"image reference {raw!r} is a URL, expected a path inside the run directory"
    p = Path(ref)
    target = (p if p.is_absolute() else base / p).resolve()
    if not target.is_relative_to(run_dir.resolve()):
        return f"image path {raw!r} resolves outside the run directory ({target})"
    return None


def validate_labels(rows: list[dict[str, Any]], *, source: str, selected: np.ndarray, pool_ids: np.ndarray,
                    class_names: list[str], to_label_dir: Path, run_dir: Path) -> tuple[np.ndarray, np.ndarray]:
    """Check every row before anything is written; return (ids, labels) in selection order, or raise listing the bad rows."""
    errors: list[str] = []
    selected_set = {int(i) for i in selected}
    pool_sorted = np.sort(np.asarray(pool_ids, dtype=np.int64))
    seen: dict[int, str] = {}
    labels: dict[int, int] = {}
    for row in rows:
        where = row["where"]
        if row.get("error"):
            errors.append(f"{where}: {row['error']}")
            continue
        i = _id_value(row["id"])
        if i is None:
            errors.append(f"{where}: id {row['id']!r} is not an integer")
            continue
        why = _image_inside(row.get("image"), to_label_dir, run_dir)
        if why:
            errors.append(f"{where} (id {i}): {why}")
        if i in seen:
            errors.append(f"{where}: duplicate id {i} (also at {seen[i]})")
            continue
        seen[i] = where
        if i not in selected_set:
            k = np.searchsorted(pool_sorted, i)
            in_pool = k < len(pool_sorted) and pool_sorted[k] == i
            errors.append(f"{where}: id {i} " + ("was not selected in the pending round" if in_pool
                                                  else "is not in the pool (unknown id)"))
            continue
        lab = _label_value(row["label"], class_names)
        if lab is None:
            shown = class_names if len(class_names) <= 20 else f"0..{len(class_names) - 1}"
            errors.append(f"{where} (id {i}): label {row['label']!r} is outside the class set {shown}")
            continue
        labels[i] = lab
    missing = sorted(selected_set - set(seen))
    if missing:
        errors.append(f"{len(missing)} selected id(s) have no row, e.g. {missing[:5]} (label every selected image)")
    if errors:
        more = f" (and {len(errors) - _MAX_ERRORS} more)" if len(errors) > _MAX_ERRORS else ""
        raise DalDistError(f"{source}: label file rejected, nothing written: " + "; ".join(errors[:_MAX_ERRORS]) + more)
    ids = np.asarray(selected, dtype=np.int64)
    return ids, np.array([labels[int(i)] for i in ids], dtype=np.int64)


def import_labels(run_dir: str | os.PathLike, file: str | os.PathLike) -> dict[str, Any]:
    """Validate a human label file against the pending round and append it to the ledger (all or nothing)."""
    run_dir = local_run_dir(run_dir)
    read_stored_config(run_dir)  # a clear error for a wrong path, before the lock creates anything there
    with run_lock(run_dir):
        state = load_run_state(run_dir)
        r = pending_label_round(run_dir)
        if r is None:
            raise DalDistError(f"{run_dir}: no round is waiting for labels (see `dal-dist status {run_dir}`)")
        selected = layout.read_selection(run_dir, r)
        rows = parse_label_file(file)
        ids, labels = validate_labels(rows, source=str(file), selected=selected, pool_ids=state.pool_ids(),
                                      class_names=state.class_names, run_dir=run_dir,
                                      to_label_dir=layout.round_dir(run_dir, r) / TO_LABEL)
        LabelLedger(run_dir).append(r, ids, labels, "human")
    return {"round": r, "labels": int(len(ids)), "ledger": str(LabelLedger(run_dir).dir)}
