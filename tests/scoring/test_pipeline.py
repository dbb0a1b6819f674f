"""Scoring: one row per unlabeled id on a 2-worker local Ray, rejects, labeled handling, bad input."""

from __future__ import annotations

import gzip
import io
import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image

from dal_dist.errors import DalDistError
from dal_dist.models import build_model, default_config, save_checkpoint
from dal_dist.placement import plan_cpus
from dal_dist.scoring import BatchScorer, _footer_readers, footer_readers_for, read_scores_table, score_pool

ACQ = ["bald", "entropy", "margin", "least_confidence", "variation_ratio", "mean_std"]


def _mnist(mnist_test_dir, n):
    with gzip.open(mnist_test_dir / "t10k-images-idx3-ubyte.gz") as f:
        x = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 28, 28, 1)[:n]
    with gzip.open(mnist_test_dir / "t10k-labels-idx1-ubyte.gz") as f:
        y = np.frombuffer(f.read(), np.uint8, offset=8)[:n].astype(np.int64)
    return x, y


def _png(img: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(img[..., 0]).save(buf, format="PNG")
    return buf.getvalue()


def _write_mixed_pool(path, x, y, files=3):
    """Raw-pixel rows, PNG rows, and three bad rows: corrupt PNG, short raw buffer, null image."""
    n = len(x)
    images, h, w, c = [], [], [], []
    for i in range(n):
        if i % 5 == 0:  # encoded PNG rows
            images.append(_png(x[i])); h.append(None); w.append(None); c.append(None)
        else:
            images.append(x[i].tobytes()); h.append(28); w.append(28); c.append(1)
    images[7] = b"\x89PNG\r\n\x1a\nthis is not a png"; h[7] = w[7] = c[7] = None
    images[11] = x[11].tobytes()[:780]
    images[13] = None
    table = pa.table({"id": pa.array(np.arange(1000, 1000 + n), pa.int64()),
                      "image": pa.array(images, pa.binary()),
                      "height": pa.array(h, pa.int32()), "width": pa.array(w, pa.int32()),
                      "channels": pa.array(c, pa.int32()), "label": pa.array(y, pa.int64())})
    path.mkdir(parents=True)
    step = -(-n // files)
    for k in range(files):
        pq.write_table(table.slice(k * step, step), path / f"part-{k}.parquet", row_group_size=64)
    return table


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    path = tmp_path_factory.mktemp("ckpt") / "mnist-cnn.pt"
    save_checkpoint(build_model(default_config("mnist-cnn", 10, seed=0)), path)
    return path


def _footer_reader_actors() -> set[str]:
    """Ids of every FooterReader actor this Ray session has created (the GCS table keeps dead ones)."""
    from ray._private.state import actors  # the public state API needs the dashboard, which tests leave off

    return {k for k, v in actors().items() if v["ActorClassName"] == "FooterReader"}


def test_footer_readers_follow_the_pool_files(monkeypatch):
    assert [footer_readers_for(n) for n in (0, 1, 10, 11, 95, 320, 5000)] == [1, 1, 1, 2, 10, 32, 32]
    monkeypatch.delenv("RAY_DATA_PARQUET_FOOTER_NUM_ACTORS", raising=False)
    with _footer_readers(25):
        assert os.environ["RAY_DATA_PARQUET_FOOTER_NUM_ACTORS"] == "3"
    assert "RAY_DATA_PARQUET_FOOTER_NUM_ACTORS" not in os.environ
    monkeypatch.setenv("RAY_DATA_PARQUET_FOOTER_NUM_ACTORS", "7")  # the user's setting wins
    with _footer_readers(25):
        assert os.environ["RAY_DATA_PARQUET_FOOTER_NUM_ACTORS"] == "7"
    assert os.environ["RAY_DATA_PARQUET_FOOTER_NUM_ACTORS"] == "7"


def test_two_workers_one_row_per_unlabeled_id_with_rejects(tmp_path, ray_local, mnist_test_dir, ckpt):
    x, y = _mnist(mnist_test_dir, 600)
    table = _write_mixed_pool(tmp_path / "pool", x, y)
    labeled = np.arange(1000, 1600, 9)  # 67 labeled ids, never scored
    pq.write_table(pa.table({"id": labeled}), tmp_path / "labeled.parquet")
    readers_before = _footer_reader_actors()
    summary = score_pool(tmp_path / "pool", ckpt, tmp_path / "scores", acquisitions=ACQ, mc_samples=8,
                         workers=2, labeled=tmp_path / "labeled.parquet", batch_size=64, progress=False)
    # Three files are one footer batch: one footer reader, not Ray Data's default pool of 32.
    assert len(_footer_reader_actors() - readers_before) == footer_readers_for(3) == 1
    assert "RAY_DATA_PARQUET_FOOTER_NUM_ACTORS" not in os.environ
    out = read_scores_table(tmp_path / "scores")
    ids = out.column("id").to_numpy()
    bad = {1007, 1011, 1013}
    expected = set(table.column("id").to_numpy().tolist()) - set(labeled.tolist()) - bad
    assert len(ids) == len(set(ids.tolist())) == len(expected) == summary.rows
    assert set(ids.tolist()) == expected
    rejects = pq.read_table(tmp_path / "scores" / "rejects")
    reasons = dict(zip(rejects.column("id").to_pylist(), rejects.column("reason").to_pylist()))
    assert set(reasons) == bad and summary.rejects == 3
    assert "780" in reasons[1011] and "784" in reasons[1011]
    for name in ACQ:
        v = out.column(name).to_numpy()
        assert np.isfinite(v).all() and (v >= 0).all(), name
    assert out.schema.field("embedding").type == pa.list_(pa.float16(), 128)
    assert not out.column("labeled").to_numpy().any()
    conf = out.column("confidence").to_numpy()
    assert ((conf > 0.09) & (conf <= 1.0)).all()
    assert not any(p.name.startswith(".scores.staging") for p in tmp_path.iterdir())


def test_embed_labeled_keeps_labeled_rows_once_embedding_only(tmp_path, ray_local, mnist_test_dir, ckpt):
    x, y = _mnist(mnist_test_dir, 200)
    from dal_dist.pool import write_pool

    write_pool(tmp_path / "pool", x, y, chunk_rows=64)
    labeled = np.arange(0, 200, 10)
    summary = score_pool(tmp_path / "pool", ckpt, tmp_path / "scores", acquisitions=["bald"], mc_samples=4,
                         workers=1, labeled=labeled, embed_labeled=True, embedding_dtype="float32",
                         progress=False)
    out = read_scores_table(tmp_path / "scores").sort_by("id")
    assert out.column("id").to_pylist() == list(range(200)) and summary.labeled_rows == 20
    flag = out.column("labeled").to_numpy()
    assert flag.sum() == 20 and set(np.flatnonzero(flag).tolist()) == set(labeled.tolist())
    bald = out.column("bald")
    assert bald.null_count == 20 and all(bald[int(i)].as_py() is None for i in labeled)
    emb = np.stack(out.column("embedding").to_numpy(zero_copy_only=False))
    assert emb.shape == (200, 128) and np.isfinite(emb).all()


def test_batch_scorer_matches_direct_computation_and_is_seeded(ckpt):
    from dal_dist import acquisition
    from dal_dist.models import load_checkpoint, mc_head_probs, preprocess

    scorer = BatchScorer(ckpt.read_bytes(), ["bald", "entropy"], mc_samples=16, device="cpu")
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (32, 28, 28, 1), dtype=np.uint8)
    ids = np.arange(32)
    a = scorer.score_images(ids, images)
    b = scorer.score_images(ids, images)
    assert a.equals(b)  # same batch, same seed → same dropout masks
    model = load_checkpoint(ckpt)
    from dal_dist.scoring import _batch_seed

    with torch.no_grad():
        f = model.features(preprocess(torch.from_numpy(images), model.config))
        torch.manual_seed(_batch_seed(0, ids))
        probs = mc_head_probs(model, f, 16)
    np.testing.assert_allclose(a.column("bald").to_numpy(), acquisition.bald(probs).numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(a.column("entropy").to_numpy(), acquisition.entropy(probs).numpy(), rtol=1e-5)
    np.testing.assert_array_equal(a.column("pred").to_numpy(), probs.mean(0).argmax(-1).numpy())


def test_pred_loss_needs_a_learning_loss_model(tmp_path, ckpt, mnist_test_dir):
    x, y = _mnist(mnist_test_dir, 20)
    from dal_dist.pool import write_pool

    write_pool(tmp_path / "pool", x, y)
    with pytest.raises(DalDistError, match="pred_loss.*Learning Loss"):
        score_pool(tmp_path / "pool", ckpt, tmp_path / "s", acquisitions="bald,pred_loss")
    ll = tmp_path / "ll.pt"
    save_checkpoint(build_model(default_config("mnist-cnn", 10, learning_loss=True)), ll)
    scorer = BatchScorer(ll.read_bytes(), ["bald", "pred_loss"], mc_samples=4, device="cpu")
    out = scorer.score_images(np.arange(20), x)
    assert np.isfinite(out.column("pred_loss").to_numpy()).all()


def test_structural_errors_stop_before_any_work(tmp_path, ckpt, mnist_test_dir):
    x, y = _mnist(mnist_test_dir, 50)
    from dal_dist.pool import write_pool

    write_pool(tmp_path / "pool", x, y)
    # A checkpoint with fewer classes than the pool's labels.
    small = tmp_path / "c5.pt"
    save_checkpoint(build_model(default_config("mnist-cnn", 5)), small)
    with pytest.raises(DalDistError, match="5 classes"):
        score_pool(tmp_path / "pool", small, tmp_path / "s")
    # Missing id column.
    pq.write_table(pa.table({"image": pa.array([b"x"], pa.binary())}), tmp_path / "noid.parquet")
    with pytest.raises(DalDistError, match="id"):
        score_pool(tmp_path / "noid.parquet", ckpt, tmp_path / "s")
    # Duplicate ids across files.
    dup = tmp_path / "dup"
    write_pool(dup, x[:10], y[:10])
    t = pq.read_table(sorted(dup.glob("part-*.parquet"))[0])
    pq.write_table(t.slice(0, 3), dup / "zz-extra.parquet")
    with pytest.raises(DalDistError, match="duplicate"):
        score_pool(dup, ckpt, tmp_path / "s")
    # Existing output is never clobbered without --overwrite.
    (tmp_path / "s").mkdir()
    (tmp_path / "s" / "keep.txt").write_text("precious")
    with pytest.raises(DalDistError, match="exists and is not empty"):
        score_pool(tmp_path / "pool", ckpt, tmp_path / "s")
    assert (tmp_path / "s" / "keep.txt").read_text() == "precious"
    with pytest.raises(DalDistError, match="mc-samples"):
        score_pool(tmp_path / "pool", ckpt, tmp_path / "s2", mc_samples=1)


def test_resource_plan_never_reserves_every_cpu():
    cpus, threads = plan_cpus([2.0], 2, None, None)
    assert cpus * 2 <= 1.0 and threads == 1
    cpus, threads = plan_cpus([2.0], 1, None, None)
    assert cpus == 1.0 and threads == 2
    cpus, _ = plan_cpus([1.0, 1.0], 2, None, None)  # one actor per 1-CPU node: it must reserve nothing
    assert cpus == 0.0
    with pytest.raises(DalDistError, match="leaves no node a free CPU"):
        plan_cpus([2.0], 2, 1.0, None)
