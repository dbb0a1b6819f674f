"""Who answers label requests: the simulated oracle (the pool's hidden labels) or a human (files out).

Human round trip: after selection the driver exports `RUN_DIR/rounds/NNN/to_label/`
(`to_label.csv` with `id,image`, one `<id>.png` per image, a Label Studio import `tasks.json` with
relative image paths, and `label_config.xml`), then pauses; the labels come back through
`dal_dist.driver.labels` (`dal-dist labels import`), and `dal-dist run --resume` continues.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from dal_dist.errors import DalDistError

TO_LABEL = "to_label"


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
def export_to_label(round_dir: str | os.PathLike, ids: np.ndarray, images: np.ndarray,
                    class_names: list[str]) -> Path:
    """Write `round_dir/to_label/` (CSV, PNGs, Label Studio tasks + config) at once: a staging dir renamed."""
    from PIL import Image

    round_dir = Path(round_dir)
    out = round_dir / TO_LABEL
    if out.is_dir():
        return out
    staging = round_dir / f".{TO_LABEL}.staging-{uuid.uuid4().hex[:8]}"
    staging.mkdir(parents=True)
    try:
        rows, tasks = [], []
        for i, img in zip(np.asarray(ids, dtype=np.int64), images):
            name = f"{int(i)}.png"
            Image.fromarray(img[..., 0] if img.shape[-1] == 1 else img).save(staging / name)
            rows.append((int(i), name))
            tasks.append({"data": {"dal_id": int(i), "image": name}})
        with open(staging / "to_label.csv", "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["id", "image"])
            w.writerows(rows)
        (staging / "tasks.json").write_text(json.dumps(tasks, indent=1) + "\n")
        choices = "\n".join(f'    <Choice value="{_xml_escape(c)}"/>' for c in class_names)
        (staging / "label_config.xml").write_text(
            '<View>\n  <Image name="image" value="$image"/>\n'
            f'  <Choices name="label" toName="image" choice="single">\n{choices}\n  </Choices>\n</View>\n')
        staging.rename(out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out


def _xml_escape(s: str) -> str:
    return s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")
