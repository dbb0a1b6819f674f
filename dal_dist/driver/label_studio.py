"""Label Studio's formats, as its documentation defines them: the tasks dal-dist exports and the three
project exports (JSON, JSON-MIN, CSV) read back as annotations.

Export (labelstud.io/guide/tasks, /guide/predictions): a JSON list of tasks `{"data": {"image": URL,
"dal_id": ID}, "predictions": [{"model_version", "score", "result": [choices]}], "meta": {...}}`; the
labeling config names one `<Image name="image" value="$image"/>` and one single-choice `<Choices
name="label" toName="image">` whose values are the pool's class names.

Import (labelstud.io/guide/export; label-studio-sdk's converter writes JSON-MIN and CSV):
  JSON      the raw tasks, each with its `annotations` (cancelled = skipped: `was_cancelled: true`);
  JSON-MIN  one flat record per non-cancelled annotation, newest first: the task's data fields
            (`dal_id`, `image`), `id` (the Label Studio task id), `label` (the choice; a task without an
            annotation has no `label`), `annotator`, `annotation_id`, `created_at`, `updated_at`;
  CSV       the same records as columns in sorted order (`annotation_id, annotator, created_at, dal_id,
            id, image, label, lead_time, updated_at`); a task without an annotation has an empty `label`.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

FROM_NAME = "label"  # the Choices control of the labeling config
TO_NAME = "image"  # the Image object tag; also the task data key it reads ($image)
ID_KEY = "dal_id"  # the task data key holding the pool id (Label Studio's own `id` is its task id)


# --------------------------------------------------------------------------------------------- export
def label_config(class_names: list[str]) -> str:
    """The labeling config: the image and one required single choice among the class names."""
    choices = "\n".join(f'    <Choice value="{xml_escape(c)}"/>' for c in class_names)
    return (f'<View>\n  <Image name="{TO_NAME}" value="${TO_NAME}"/>\n'
            f'  <Choices name="{FROM_NAME}" toName="{TO_NAME}" choice="single" required="true">\n{choices}\n'
            '  </Choices>\n</View>\n')


def choice_result(dal_id: int, class_name: str) -> dict[str, Any]:
    """One classification region: the `result` item of a prediction (or of an annotation)."""
    return {"id": f"dal{dal_id}", "type": "choices", "from_name": FROM_NAME, "to_name": TO_NAME,
            "value": {"choices": [class_name]}}


def task(dal_id: int, image: str, meta: dict[str, Any], prediction: dict[str, Any] | None) -> dict[str, Any]:
    """One Label Studio task: the image URL and the pool id as data, the model's guess as a prediction."""
    out: dict[str, Any] = {"data": {TO_NAME: image, ID_KEY: int(dal_id)}}
    if prediction is not None:
        out["predictions"] = [prediction]
    out["meta"] = meta
    return out


def xml_escape(s: str) -> str:
    return s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")


# --------------------------------------------------------------------------------------------- import
@dataclass
class Annotation:
    """One answer about one task, in whatever format it came: a choice, a skip, or no annotation at all."""

    where: str  # `task N`, `record N`, `line N`: where in the file, for error messages
    id: Any  # the pool id as found (validated later)
    label: Any = None  # the chosen class (a name or an index) as found
    image: Any = None
    annotator: str | None = None
    time: datetime | None = None  # updated_at, else created_at
    order: int = 0  # later in time = larger, where timestamps tie or are missing
    cancelled: bool = False  # skipped / cancelled in Label Studio
    empty: bool = False  # the task has no annotation (exported with all tasks)
    error: str | None = None


def parse_json_export(text: str, source: str) -> tuple[str, list[Annotation]]:
    """("label-studio-json" | "label-studio-json-min", annotations) of a Label Studio JSON or JSON-MIN export."""
    from dal_dist.errors import DalDistError

    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise DalDistError(f"{source}: not valid JSON: {e}") from e
    if isinstance(data, dict):
        data = [data]  # one task, as Label Studio's target storage writes it
    if not isinstance(data, list):
        raise DalDistError(f"{source}: expected a Label Studio export (a JSON list of tasks), "
                           f"got {type(data).__name__}")
    full = any(isinstance(t, dict) and isinstance(t.get("data"), dict) for t in data)
    out: list[Annotation] = []
    for n, item in enumerate(data):
        if not isinstance(item, dict):
            out.append(Annotation(f"task {n}", None, error="not a JSON object"))
        elif full:
            out.extend(_json_task(item, f"task {n}"))
        else:
            out.append(_json_min_record(item, f"task {n}", n, len(data)))
    return ("label-studio-json" if full else "label-studio-json-min"), out


def _json_task(item: dict[str, Any], where: str) -> list[Annotation]:
    """The annotations of one task of a JSON export (a task without any gives one `empty` entry)."""
    fields = item.get("data") if isinstance(item.get("data"), dict) else {}
    dal_id, image = fields.get(ID_KEY), fields.get(TO_NAME)
    anns = item.get("annotations", item.get("completions")) or []
    if not isinstance(anns, list):
        return [Annotation(where, dal_id, image=image, error="`annotations` is not a list")]
    if not anns:
        return [Annotation(where, dal_id, image=image, empty=True)]
    out = []
    for k, a in enumerate(anns):
        w = f"{where} annotation {k}"
        if not isinstance(a, dict):
            out.append(Annotation(w, dal_id, image=image, error="annotation is not a JSON object"))
            continue
        cancelled = bool(a.get("was_cancelled") or a.get("skipped"))
        label, error = (None, None) if cancelled else _result_choice(a.get("result"))
        out.append(Annotation(w, dal_id, label, image, _annotator(a.get("completed_by")),
                              _time(a.get("updated_at") or a.get("created_at")), k, cancelled, error=error))
    return out


def _result_choice(result: Any) -> tuple[Any, str | None]:
    """The one choice of an annotation's `result` list, or why there is not exactly one."""
    regions = result if isinstance(result, list) else []
    choices = [r.get("value", {}).get("choices") for r in regions
               if isinstance(r, dict) and r.get("type") == "choices" and isinstance(r.get("value"), dict)]
    if len(choices) != 1 or not isinstance(choices[0], list) or len(choices[0]) != 1:
        return None, f"expected exactly one choice in the annotation, got {choices}"
    return choices[0][0], None


def _json_min_record(item: dict[str, Any], where: str, n: int, total: int) -> Annotation:
    """One JSON-MIN record (newest first, so a later position is an earlier answer)."""
    ann = Annotation(where, item.get(ID_KEY), image=item.get(TO_NAME), annotator=_annotator(item.get("annotator")),
                     time=_time(item.get("updated_at") or item.get("created_at")), order=total - n)
    if FROM_NAME not in item:
        ann.empty = True
        return ann
    ann.label, ann.error = _min_value(item[FROM_NAME])
    return ann


def _min_value(value: Any) -> tuple[Any, str | None]:
    """A JSON-MIN/CSV label cell: the choice itself, or the converter's `{"choices": [...]}` for several."""
    if isinstance(value, list) and len(value) == 1:
        value = value[0]
    if isinstance(value, dict):
        value = value.get("choices")
    if isinstance(value, list):
        return (value[0], None) if len(value) == 1 else (None, f"expected one choice, got {value}")
    return (value, None) if value is not None else (None, f"no `{FROM_NAME}`")


def parse_csv_export(text: str, source: str) -> tuple[str, list[Annotation]]:
    """("csv" | "label-studio-csv", annotations) of a plain `id,label[,image]` CSV or a Label Studio CSV/TSV
    export."""
    from dal_dist.errors import DalDistError

    first = text.splitlines()[0] if text.strip() else ""
    delimiter = "\t" if "\t" in first and "," not in first else ","
    reader = csv.DictReader(io.StringIO(text), delimiter=delimiter)
    cols = [c.strip() for c in (reader.fieldnames or [])]
    studio = ID_KEY in cols
    if not studio and ("id" not in cols or "label" not in cols):
        raise DalDistError(f"{source}: expected a CSV header with columns `id,label` (got {cols or 'no header'}), "
                           f"or a Label Studio CSV export (with a `{ID_KEY}` column)")
    if studio and FROM_NAME not in cols:
        raise DalDistError(f"{source}: a Label Studio CSV export without a `{FROM_NAME}` column (got {cols}); "
                           "export the project that tasks.json and label_config.xml made")
    image_col = next((c for c in ("image", "path") if c in cols), None)
    rows = [{(k or "").strip(): (v or "").strip() if isinstance(v, str) else v for k, v in rec.items()}
            for rec in reader]
    out = []
    for n, rec in enumerate(rows, start=2):  # line 1 is the header
        where = f"line {n}"
        image = rec.get(image_col) if image_col else None
        if not studio:
            out.append(Annotation(where, rec.get("id", ""), rec.get("label", ""), image, order=n))
            continue
        ann = Annotation(where, rec.get(ID_KEY, ""), image=image or None, annotator=_annotator(rec.get("annotator")),
                         time=_time(rec.get("updated_at") or rec.get("created_at")), order=len(rows) - n)
        cell = rec.get(FROM_NAME, "")
        if cell == "" and not rec.get("annotation_id"):
            ann.empty = True
        else:
            ann.label, ann.error = _min_value(_maybe_json(cell))
        out.append(ann)
    return ("label-studio-csv" if studio else "csv"), out


def _maybe_json(cell: str) -> Any:
    """The converter writes several choices as JSON text in a CSV cell; a plain class name stays text."""
    if cell.startswith(("[", "{")):
        try:
            return json.loads(cell)
        except json.JSONDecodeError:
            return cell
    return cell


def _annotator(raw: Any) -> str | None:
    """Who answered: Label Studio exports a user id, or a user object with an email."""
    if isinstance(raw, dict):
        raw = raw.get("email") or raw.get("id")
    if raw is None or raw == "":
        return None
    is_id = (isinstance(raw, int) and not isinstance(raw, bool)) or (isinstance(raw, str) and raw.isdigit())
    return f"user {raw}" if is_id else str(raw)  # JSON/JSON-MIN give the id as a number, CSV as text


def _time(raw: Any) -> datetime | None:
    """An ISO timestamp (`2021-03-09T22:16:08.728353Z`) as an aware datetime, None when absent or unreadable."""
    if not isinstance(raw, str) or not raw:
        return None
    try:
        t = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        return None
    return t if t.tzinfo else t.replace(tzinfo=timezone.utc)
