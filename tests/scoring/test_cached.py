"""Score many: a head over cached embeddings, under the scoring job's contract, with no image decoded."""

import json

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from dal_dist.errors import DalDistError
from dal_dist.models import build_model, default_config, load_checkpoint, preprocess, save_checkpoint
from dal_dist.pool import read_images
from dal_dist.scoring import embed_pool, embeddings_info, read_embedding_rows, score_embeddings, score_pool


@pytest.fixture
def cached(tmp_path, small_pool):
    """float32 mnist-cnn backbone features of the 120-image pool, and a head over them."""
    embed_pool(small_pool, tmp_path / "emb", model="mnist-cnn", embedding_dtype="float32", executor="local")
    info = embeddings_info(tmp_path / "emb")
    head = build_model(default_config("embedding-head", 10, in_channels=info.dim, image_size=1, hidden=16, seed=2))
    save_checkpoint(head, tmp_path / "head.pt")
    return small_pool, tmp_path / "emb", tmp_path / "head.pt", info


def test_embeddings_read_back_by_id_as_the_backbone_computes_them(cached):
    pool, emb, _, info = cached
    assert (info.rows, info.dim, info.model, info.dtype) == (120, 32 * 11 * 11, "mnist-cnn", "float32")
    ids = np.array([7, 0, 119, 7])
    rows = read_embedding_rows(info, ids)
    net = build_model(default_config("mnist-cnn", 10))  # embed_pool builds the same seeded network by name
    with torch.no_grad():
        ref = net.features(preprocess(torch.from_numpy(read_images(pool, ids, (28, 28, 1))), net.config)).numpy()
    assert rows.shape == (4, info.dim) and np.allclose(rows, ref, atol=1e-5)
    with pytest.raises(DalDistError, match=r"no embedding for 1 of the ids asked for, e.g. \[500\]"):
        read_embedding_rows(info, np.array([1, 500]))


def test_head_scores_every_unlabeled_row_once_with_the_heads_own_predictions(tmp_path, cached):
    _, emb, head_ckpt, info = cached
    labeled = np.arange(0, 120, 3)
    summary = score_embeddings(emb, head_ckpt, tmp_path / "scores", acquisitions="bald,entropy", mc_samples=8,
                               labeled=labeled, keep_probs=True, batch_size=50)
    assert (summary.rows, summary.rejects) == (80, 0)
    t = pq.read_table(tmp_path / "scores").sort_by("id")
    ids = t.column("id").to_numpy()
    assert np.array_equal(ids, np.setdiff1d(np.arange(120), labeled))
    head = load_checkpoint(head_ckpt)
    with torch.no_grad():
        x = torch.from_numpy(read_embedding_rows(info, ids))
        probs = torch.softmax(head(x), -1).numpy()  # dropout off
        emb_ref = head.features(x).numpy()
    assert np.allclose(np.array(t.column("probs").to_pylist()), probs, atol=1e-5)
    assert np.allclose(np.array(t.column("embedding").to_pylist(), dtype=np.float32), emb_ref, atol=2e-2)
    bald = t.column("bald").to_numpy()
    assert np.isfinite(bald).all() and (bald >= 0).all() and bald.std() > 0
    assert json.loads((tmp_path / "scores" / "_dal_scores.json").read_text())["rows"] == 80
    # Deterministic per seed, whatever the batch size (masks are seeded per MC sub-batch of ids).
    score_embeddings(emb, head_ckpt, tmp_path / "again", acquisitions="bald,entropy", mc_samples=8, labeled=labeled,
                     batch_size=50, keep_probs=True)
    assert np.array_equal(pq.read_table(tmp_path / "again").sort_by("id").column("bald").to_numpy(), bald)


def test_labeled_rows_keep_their_embedding_for_kcenter(tmp_path, cached):
    _, emb, head_ckpt, _ = cached
    score_embeddings(emb, head_ckpt, tmp_path / "s", mc_samples=2, labeled=np.arange(10), embed_labeled=True)
    t = pq.read_table(tmp_path / "s").sort_by("id")
    assert t.num_rows == 120 and t.column("labeled").to_pylist() == [True] * 10 + [False] * 110
    assert t.column("bald").null_count == 10


def test_bad_inputs_are_one_line_errors_before_any_output(tmp_path, cached, small_pool, ckpt):
    _, emb, head_ckpt, info = cached
    with pytest.raises(DalDistError, match=r"takes 1x28x28 inputs; the embeddings .* are 3872-wide rows"):
        score_embeddings(emb, ckpt, tmp_path / "out")
    with pytest.raises(DalDistError, match="not a `dal-dist embed` output"):
        score_embeddings(small_pool, head_ckpt, tmp_path / "out")
    score_pool(small_pool, ckpt, tmp_path / "scores", executor="local", mc_samples=2)
    with pytest.raises(DalDistError, match="a scores output, not embeddings"):
        score_embeddings(tmp_path / "scores", head_ckpt, tmp_path / "out")
    with pytest.raises(DalDistError, match="embeddings directory not found"):
        score_embeddings(tmp_path / "nope", head_ckpt, tmp_path / "out")
    assert not (tmp_path / "out").exists()
