"""`dal-dist run` on a pool of real photos of mixed sizes and modes (scikit-image), with torchvision's resnet18."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

skimage_data = pytest.importorskip("skimage.data")
from PIL import Image  # noqa: E402

from dal_dist.driver import run  # noqa: E402
from dal_dist.driver.config import parse_config  # noqa: E402
from dal_dist.driver.ledger import LabelLedger  # noqa: E402
from dal_dist.pool import ingest_image_folder, validate_pool  # noqa: E402


def _photo_folder(root: Path, copies: int) -> None:
    """Two classes of crops of different sizes (and modes) of real photos."""
    sources = {"cat": [skimage_data.chelsea()], "coffee": [skimage_data.coffee(), skimage_data.camera()]}
    rng = np.random.default_rng(0)
    for cls, images in sources.items():
        (root / cls).mkdir(parents=True, exist_ok=True)
        for i in range(copies):
            img = images[i % len(images)]
            h, w = img.shape[:2]
            ch, cw = int(rng.integers(h // 3, h)), int(rng.integers(w // 3, w))
            y, x = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
            crop = Image.fromarray(img[y:y + ch, x:x + cw])
            if i % 3 == 0:
                crop.save(root / cls / f"{i}.png")
            else:
                crop.convert("RGB").save(root / cls / f"{i}.jpg", quality=90)


def test_two_round_run_on_mixed_size_photos(tmp_path):
    _photo_folder(tmp_path / "train", 10)
    _photo_folder(tmp_path / "test", 3)
    ingest_image_folder(tmp_path / "train", tmp_path / "pool")
    ingest_image_folder(tmp_path / "test", tmp_path / "testpool")
    assert validate_pool(tmp_path / "pool").image_shape is None  # mixed sizes
    cfg = {"pool": str(tmp_path / "pool"), "test_pool": str(tmp_path / "testpool"),
           "model": {"name": "resnet18", "image_size": 64},
           "strategy": {"name": "bald", "mc_samples": 3}, "initial": {"kind": "balanced", "size": 4},
           "budget": 3, "rounds": 2, "train": {"epochs": 1, "batch_size": 4, "workers": 1},
           "final_train": False, "workers": 1, "seed": 1, "executor": "local"}
    out = run(parse_config(cfg), tmp_path / "run")
    assert out.status == "done"
    ledger = LabelLedger(tmp_path / "run").table()
    assert ledger.num_rows == 4 + 2 * 3 and len(set(ledger.column("id").to_pylist())) == 10
