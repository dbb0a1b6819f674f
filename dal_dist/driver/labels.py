"""Human labels coming back: a CSV or a Label Studio export (JSON, JSON-MIN, CSV), validated against the
pending round, then appended to the ledger all or nothing (`dal-dist labels import FILE --run-dir DIR`).

Several annotations of one task: the latest (by `updated_at`, else `created_at`, else file order) that is
not cancelled wins; annotators who chose differently are reported as conflicts. A skipped task (every
annotation cancelled) or one without an annotation stays unlabeled: the import is refused, listing those
ids, unless `allow_partial` (`--allow-partial`) records the labeled ones as the round's ledger file (the
ledger stays one file per round, written once); the unlabeled ones return to the unlabeled pool and may
be picked again. Ids not selected in the pending round are refused by id. Nothing is written unless every
row is valid.
"""

from __future__ import annotations

import json
import os
import urllib.parse
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from dal_dist.driver import layout
from dal_dist.driver.label_studio import ID_KEY, TO_NAME, Annotation, parse_csv_export, parse_json_export
from dal_dist.driver.ledger import LabelLedger
from dal_dist.driver.oracle import TASKS_FILE, TO_LABEL
from dal_dist.driver.state import load_run_state, local_run_dir, pending_label_round, read_stored_config, run_lock
from dal_dist.errors import DalDistError

_MAX_ERRORS = 10
_EARLIEST = datetime.min.replace(tzinfo=timezone.utc)


def parse_label_file(path: str | os.PathLike) -> tuple[str, list[Annotation]]:
    """(format, annotations) of a CSV (`id,label[,image]`) or a Label Studio export (JSON, JSON-MIN, CSV)."""
    path = Path(path)
    if not path.is_file():
        raise DalDistError(f"{path}: label file not found")
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as e:
        raise DalDistError(f"{path}: cannot read label file: {e}") from e
    if path.suffix.lower() == ".json" or text.lstrip().startswith(("[", "{")):
        return parse_json_export(text, str(path))
    return parse_csv_export(text, str(path))


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
    if isinstance(raw, float) and raw.is_integer():
        return int(raw)
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
        return f"image reference {raw[:80]!r} is a URL, expected the one tasks.json gave or a path inside the run " \
               "directory"
    p = Path(ref)
    target = (p if p.is_absolute() else base / p).resolve()
    if not target.is_relative_to(run_dir.resolve()):
        return f"image path {raw!r} resolves outside the run directory ({target})"
    return None


def exported_images(to_label_dir: Path) -> dict[int, str]:
    """id → the `data.image` the round's tasks.json gave (an export answering with it is this round's)."""
    try:
        tasks = json.loads((to_label_dir / TASKS_FILE).read_text())
        return {int(t["data"][ID_KEY]): t["data"][TO_NAME] for t in tasks}
    except (OSError, ValueError, KeyError, TypeError):
        return {}


@dataclass
class Labels:
    """What a validated label file gives the pending round."""

    ids: np.ndarray  # labeled ids, in selection order
    labels: np.ndarray
    unlabeled: list[int] = field(default_factory=list)  # selected ids left without a label (partial import)
    conflicts: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class LabelCheck:
    """The context one label file is checked against."""

    source: str
    selected: np.ndarray
    pool_ids: np.ndarray
    class_names: list[str]
    to_label_dir: Path
    run_dir: Path
    images: dict[int, str] = field(default_factory=dict)
    labeled_in: dict[int, int] = field(default_factory=dict)  # id → ledger round, for earlier rounds' ids
    errors: list[str] = field(default_factory=list)
    selected_set: set[int] = field(init=False)

    def __post_init__(self) -> None:
        self.selected_set = {int(i) for i in self.selected}


def _check_row(c: LabelCheck, a: Annotation, seen: set[int]) -> int | None:
    """The pool id of one annotation when it belongs to the pending round; errors go to `c.errors`."""
    if a.error and not (a.cancelled or a.empty):
        c.errors.append(f"{a.where}{_id_note(a.id)}: {a.error}")
        return None
    i = _id_value(a.id)
    if i is None:
        c.errors.append(f"{a.where}: id {a.id!r} is not an integer")
        return None
    if a.image not in (None, "") and c.images.get(i) != a.image:
        why = _image_inside(a.image, c.to_label_dir, c.run_dir)
        if why:
            c.errors.append(f"{a.where} (id {i}): {why}")
    if i not in c.selected_set and i not in seen:
        seen.add(i)
        c.errors.append(f"{a.where}: id {i} {_why_not_selected(c, i)}")
    return i if i in c.selected_set else None


def _id_note(raw: Any) -> str:
    return f" (id {raw})" if raw not in (None, "") else ""


def _why_not_selected(c: LabelCheck, i: int) -> str:
    if i in c.labeled_in:
        return f"is not from the pending round (labeled in round {c.labeled_in[i]})"
    k = np.searchsorted(c.pool_ids, i)
    if k < len(c.pool_ids) and c.pool_ids[k] == i:
        return "was not selected in the pending round"
    return "is not in the pool (unknown id)"


def _resolve(c: LabelCheck, i: int, anns: list[Annotation]) -> tuple[int | None, dict[str, Any] | None]:
    """(class index of the latest non-cancelled answer or None, conflict record or None) of one id."""
    answered = [a for a in anns if not a.cancelled and not a.empty]
    classes = []
    for a in answered:
        lab = _label_value(a.label, c.class_names)
        if lab is None:
            shown = c.class_names if len(c.class_names) <= 20 else f"0..{len(c.class_names) - 1}"
            c.errors.append(f"{a.where} (id {i}): label {a.label!r} is outside the class set {shown}")
        classes.append(lab)
    if not answered or None in classes:
        return None, None
    latest = max(range(len(answered)), key=lambda k: (answered[k].time or _EARLIEST, answered[k].order))
    if len(set(classes)) == 1:
        return classes[latest], None
    return classes[latest], {
        "id": i, "label": c.class_names[classes[latest]], "chosen_from": answered[latest].annotator,
        "answers": [{"annotator": a.annotator, "label": c.class_names[k],
                     "time": a.time.isoformat() if a.time else None} for a, k in zip(answered, classes)]}


def validate_labels(annotations: list[Annotation], fmt: str, c: LabelCheck, allow_partial: bool = False) -> Labels:
    """Check every row before anything is written; return the labels in selection order, or raise listing the
    bad rows (and, unless `allow_partial`, the selected ids left without a label)."""
    by_id: dict[int, list[Annotation]] = {}
    first_at: dict[int, str] = {}
    seen_foreign: set[int] = set()
    for a in annotations:
        i = _check_row(c, a, seen_foreign)
        if i is None:
            continue
        if fmt == "csv" and i in by_id:  # a plain CSV gives one label per id; exports give one row per answer
            c.errors.append(f"{a.where}: duplicate id {i} (also at {first_at[i]})")
            continue
        by_id.setdefault(i, []).append(a)
        first_at.setdefault(i, a.where)
    labels: dict[int, int] = {}
    conflicts, unanswered = [], []
    for i, anns in by_id.items():
        lab, conflict = _resolve(c, i, anns)
        if lab is not None:
            labels[i] = lab
        elif all(a.cancelled or a.empty for a in anns):
            unanswered.append((i, anns))
        if conflict:
            conflicts.append(conflict)
    missing = sorted(c.selected_set - set(by_id))
    if not allow_partial:
        for i, anns in unanswered:
            what = "skipped (every annotation cancelled)" if any(a.cancelled for a in anns) else "no annotation"
            c.errors.append(f"{first_at[i]} (id {i}): {what}; label it, or import with --allow-partial")
        if missing:
            c.errors.append(f"{len(missing)} selected id(s) have no row, e.g. {missing[:5]} (label every selected "
                            "image, or import with --allow-partial)")
    elif not labels and not c.errors:
        c.errors.append("no selected image has a label (every task skipped, cancelled or missing)")
    if c.errors:
        more = f" (and {len(c.errors) - _MAX_ERRORS} more)" if len(c.errors) > _MAX_ERRORS else ""
        raise DalDistError(f"{c.source}: label file rejected, nothing written: "
                           + "; ".join(c.errors[:_MAX_ERRORS]) + more)
    ids = np.array([i for i in c.selected if int(i) in labels], dtype=np.int64)
    return Labels(ids, np.array([labels[int(i)] for i in ids], dtype=np.int64),
                  [int(i) for i in c.selected if int(i) not in labels], conflicts)


def import_labels(run_dir: str | os.PathLike, file: str | os.PathLike, allow_partial: bool = False) -> dict[str, Any]:
    """Validate a human label file against the pending round and append it to the ledger (all or nothing).

    Returns {round, labels, ledger, format, unlabeled, conflicts}: `unlabeled` lists the selected ids left
    without a label (only with `allow_partial`), `conflicts` the ids whose annotators disagreed."""
    run_dir = local_run_dir(run_dir)
    read_stored_config(run_dir)  # a clear error for a wrong path, before the lock creates anything there
    with run_lock(run_dir):
        state = load_run_state(run_dir)
        r = pending_label_round(run_dir)
        if r is None:
            raise DalDistError(f"{run_dir}: no round is waiting for labels (see `dal-dist status {run_dir}`)")
        fmt, annotations = parse_label_file(file)
        ledger = LabelLedger(run_dir)
        earlier = ledger.table(before_round=r)
        to_label = layout.round_dir(run_dir, r) / TO_LABEL
        check = LabelCheck(str(file), layout.read_selection(run_dir, r), state.pool_ids(), state.class_names,
                       to_label, run_dir, exported_images(to_label),
                       dict(zip(earlier.column("id").to_pylist(), earlier.column("round").to_pylist())))
        got = validate_labels(annotations, fmt, check, allow_partial)
        ledger.append(r, got.ids, got.labels, "human")
    return {"round": r, "labels": int(len(got.ids)), "ledger": str(ledger.dir), "format": fmt,
            "unlabeled": got.unlabeled, "conflicts": got.conflicts}
