"""SRAAL on a pool of real photos of mixed sizes: the selector trains on the photo transform of each image, at
the model's size, exactly as scoring will decode them (issue 13), also when the ids span several pool batches."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

skimage_data = pytest.importorskip("skimage.data")
from PIL import Image  # noqa: E402

import dal_dist.methods.sraal as sraal  # noqa: E402
import dal_dist.pool.read as pool_read  # noqa: E402
from dal_dist.methods.sraal import SRAALConfig, selector_read, state_scores, train_sraal_round  # noqa: E402
from dal_dist.models import default_config, load_checkpoint  # noqa: E402
from dal_dist.pool import ingest_image_folder, iter_batches, read_images, validate_pool  # noqa: E402

SIZE = 32


@pytest.fixture(scope="module")
def photo_pool(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two classes of crops of real photos, each of its own size, as PNG and JPEG (RGB and grey)."""
    root = tmp_path_factory.mktemp("photos")
    sources = {"cat": [skimage_data.chelsea()], "coffee": [skimage_data.coffee(), skimage_data.camera()]}
    rng = np.random.default_rng(0)
    for cls, images in sources.items():
        (root / "train" / cls).mkdir(parents=True)
        for i in range(8):
            img = images[i % len(images)]
            h, w = img.shape[:2]
            ch, cw = int(rng.integers(h // 3, h)), int(rng.integers(w // 3, w))
            y, x = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
            Image.fromarray(img[y:y + ch, x:x + cw]).save(root / "train" / cls / f"{i}.{('png', 'jpg')[i % 2]}")
    ingest_image_folder(root / "train", root / "pool", workers=1)
    assert validate_pool(root / "pool").image_shape is None  # mixed sizes
    return root / "pool"


def test_selector_reads_like_the_task_model() -> None:
    mc = default_config("sraal", 2, in_channels=3, image_size=SIZE)
    assert selector_read(None, mc) == ((SIZE, SIZE, 3), True)  # mixed sizes: photo transform
    assert selector_read((SIZE, SIZE, 3), mc) == ((SIZE, SIZE, 3), False)  # already the model's size: as stored
    assert selector_read((SIZE, 48, 3), mc) == ((SIZE, SIZE, 3), True)  # uniform but not square: not stretched
    assert selector_read((64, 64, 1), default_config("sraal", 2, in_channels=1, image_size=SIZE)) == \
        ((SIZE, SIZE, 1), True)


def test_round_on_mixed_size_photos_trains_on_what_scoring_decodes(photo_pool: Path, tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    from dal_dist.scoring import BatchScorer

    # Batches of 4 rows: the sampled ids span several, whose first rows differ in size (before the fix, each
    # batch was stretched to its first row's size and stacking them failed).
    small = pool_read.iter_batches
    monkeypatch.setattr(pool_read, "iter_batches", lambda p, columns=None, batch_size=4096: small(p, columns, 4))
    seen: dict[str, Any] = {}
    fit = sraal.train_sraal_selector

    def spy(mc: Any, labeled_x: np.ndarray, labeled_y: np.ndarray, unlabeled_x: np.ndarray, *a: Any, **k: Any) -> Any:
        seen.update(labeled=labeled_x, unlabeled=unlabeled_x)
        return fit(mc, labeled_x, labeled_y, unlabeled_x, *a, **k)

    monkeypatch.setattr(sraal, "train_sraal_selector", spy)
    ids = np.arange(16)
    labeled, labels, unlabeled = np.array([0, 5, 9, 14]), np.array([0, 0, 1, 1]), np.setdiff1d(ids, [0, 5, 9, 14])
    mc = default_config("sraal", 2, in_channels=3, image_size=SIZE, seed=1)
    cfg = SRAALConfig(steps=3, batch_size=4, unlabeled_sample=8, seed=0)
    prev = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        result = train_sraal_round(photo_pool, labeled, labels, unlabeled, mc, cfg, tmp_path / "selector.pt",
                                   image_shape=None, executor="local")
    finally:
        torch.set_num_threads(prev)
    assert result.metrics["steps"] == 3 and result.metrics["unlabeled_sampled"] == 8
    assert seen["labeled"].shape == (4, SIZE, SIZE, 3) and seen["unlabeled"].shape == (8, SIZE, SIZE, 3)
    np.testing.assert_array_equal(seen["labeled"], read_images(photo_pool, labeled, (SIZE, SIZE, 3), photo=True))

    # Scoring decodes each photo the same way: the selector's scores of the pool are those of its training input.
    model = load_checkpoint(result.checkpoint, expect_name="sraal")
    scorer = BatchScorer(result.checkpoint.read_bytes(), ["sraal"], mc_samples=2, device="cpu")
    out = [scorer(rb) for rb in small(photo_pool)]
    scored = {i: s for t in out for i, s in zip(t.column("id").to_pylist(), t.column("sraal").to_pylist())}
    assert sorted(scored) == ids.tolist()
    np.testing.assert_allclose([scored[int(i)] for i in labeled], state_scores(model, seen["labeled"]),
                               rtol=1e-5, atol=1e-6)
    assert sum(rb.num_rows for rb in iter_batches(photo_pool)) == 16
