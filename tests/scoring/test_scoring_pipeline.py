"""Scoring: one row per unlabeled id on a 2-worker local Ray, rejects, labeled handling, bad input."""

from __future__ import annotations

import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from dal_dist.errors import DalDistError
from dal_dist.models import build_model, default_config, save_checkpoint
from dal_dist.scoring import BatchScorer, read_scores_table, score_pool
from dal_dist.scoring.pipeline import footer_readers, footer_readers_for
from dal_dist.scoring.placement import check_fits_local_cluster, gpu_actor_cpus, plan_cpus
from dal_dist.scoring.scorer import vector_type
from scoring_helpers import ACQ, mnist as _mnist, write_mixed_pool as _write_mixed_pool


def _footer_reader_actors() -> set[str]:
    """Ids of every FooterReader actor this Ray session has created (the GCS table keeps dead ones)."""
    from ray._private.state import actors  # the public state API needs the dashboard, which tests leave off

    return {k for k, v in actors().items() if v["ActorClassName"] == "FooterReader"}


def test_footer_readers_follow_the_pool_files(monkeypatch):
    assert [footer_readers_for(n) for n in (0, 1, 10, 11, 95, 320, 5000)] == [1, 1, 1, 2, 10, 32, 32]
    monkeypatch.delenv("RAY_DATA_PARQUET_FOOTER_NUM_ACTORS", raising=False)
    with footer_readers(25):
        assert os.environ["RAY_DATA_PARQUET_FOOTER_NUM_ACTORS"] == "3"
    assert "RAY_DATA_PARQUET_FOOTER_NUM_ACTORS" not in os.environ
    monkeypatch.setenv("RAY_DATA_PARQUET_FOOTER_NUM_ACTORS", "7")  # the user's setting wins
    with footer_readers(25):
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
    assert out.schema.field("embedding").type == vector_type(pa.float16(), 128)  # non-null items: fast to read
    assert not out.column("labeled").to_numpy().any()
    conf = out.column("confidence").to_numpy()
    assert ((conf > 0.09) & (conf <= 1.0)).all()
    assert not any(p.name.startswith(".scores.staging") for p in tmp_path.iterdir())


def test_embed_labeled_keeps_labeled_rows_once_embedding_only(tmp_path, ray_local, mnist_test_dir, ckpt):
    x, y = _mnist(mnist_test_dir, 200)
    from dal_dist.pool import write_pool

    write_pool(tmp_path / "pool", x, y, chunk_rows=64)
    labeled = np.arange(0, 200, 10)
    # A random-subset round: the rest of the unlabeled pool is excluded, neither scored nor embedded.
    exclude = np.setdiff1d(np.arange(1, 200, 3), labeled)
    summary = score_pool(tmp_path / "pool", ckpt, tmp_path / "scores", acquisitions=["bald"], mc_samples=4,
                         workers=1, labeled=labeled, embed_labeled=True, embedding_dtype="float32",
                         progress=False, exclude=exclude)
    out = read_scores_table(tmp_path / "scores").sort_by("id")
    kept = np.setdiff1d(np.arange(200), exclude)
    assert out.column("id").to_pylist() == kept.tolist() and summary.labeled_rows == 20
    flag = out.column("labeled").to_numpy()
    ids = out.column("id").to_numpy()
    assert flag.sum() == 20 and set(ids[flag].tolist()) == set(labeled.tolist())
    bald = out.column("bald")
    assert bald.null_count == 20 and np.isfinite(bald.to_numpy(zero_copy_only=False)[~flag]).all()
    emb = np.stack(out.column("embedding").to_numpy(zero_copy_only=False))
    assert emb.shape == (len(kept), 128) and np.isfinite(emb).all()
    with pytest.raises(DalDistError, match="exclude: ids that are also labeled"):
        score_pool(tmp_path / "pool", ckpt, tmp_path / "s2", labeled=labeled, exclude=labeled[:3], executor="local")


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


def _node(cpus, gpus=0.0, alive=True):
    return {"Alive": alive, "Resources": {"CPU": cpus, **({"GPU": gpus} if gpus else {})}}


def test_gpu_actors_take_their_share_of_the_gpu_nodes_cpus():
    """An H200 node (16 CPUs, 1 GPU) gives its one actor 15 CPUs to decode with; 8 GPUs share 15 by eight."""
    head, cpu_plan = _node(8.0), (1.0, 1)
    assert gpu_actor_cpus([head, _node(16.0, 1.0)], 1.0, cpu_plan, None, None) == (15.0, 15)
    assert gpu_actor_cpus([head, _node(16.0, 1.0)], 0.5, cpu_plan, None, None) == (7.5, 7)  # two per card
    assert gpu_actor_cpus([head, _node(16.0, 8.0)], 1.0, cpu_plan, None, None) == (1.87, 1)
    assert gpu_actor_cpus([_node(16.0, 8.0), _node(64.0, 8.0)], 1.0, cpu_plan, None, None)[0] == 1.87  # smallest
    shares = gpu_actor_cpus([head, _node(16.0, 1.0)], 1.0, cpu_plan, None, 4)
    assert shares == (15.0, 4)  # --threads-per-worker still wins
    # The CPU plan stands: a CPU actor, --cpus-per-worker given, no GPU node up yet (autoscaling), a dead node.
    assert gpu_actor_cpus([head, _node(16.0, 1.0)], 0.0, cpu_plan, None, None) == cpu_plan
    assert gpu_actor_cpus([head, _node(16.0, 1.0)], 1.0, cpu_plan, 2.0, None) == cpu_plan
    assert gpu_actor_cpus([head], 1.0, cpu_plan, None, None) == cpu_plan
    assert gpu_actor_cpus([head, _node(16.0, 1.0, alive=False)], 1.0, cpu_plan, None, None) == cpu_plan
    assert gpu_actor_cpus([head, _node(1.0, 1.0)], 1.0, cpu_plan, None, None) == cpu_plan  # never below it


@pytest.fixture
def no_ray(monkeypatch):
    """Fail the test if scoring gets as far as starting Ray."""
    def refuse(address):
        raise AssertionError("Ray started before the arguments were checked")

    monkeypatch.setattr("dal_dist.scoring.pipeline.start_ray", refuse)


@pytest.mark.parametrize("kwargs, message", [
    ({"acquisitions": "bald,nope"}, r"unknown \['nope'\]"),
    ({"mc_samples": 1}, "--mc-samples must be >= 2"),
    ({"mc_samples": 100_000}, r"--mc-samples .* <= 10000, got 100000"),
    ({"batch_size": 0}, "--batch-size must be an integer >= 1, got 0"),
    ({"workers": 0}, "--workers must be an integer >= 1, got 0"),
    ({"threads_per_worker": -1}, "--threads-per-worker must be an integer >= 1, got -1"),
    ({"threads_per_worker": 0}, "--threads-per-worker must be an integer >= 1, got 0"),
    ({"cpus_per_worker": -0.5}, "--cpus-per-worker must be >= 0"),
    ({"gpus_per_worker": -1}, "--gpus-per-worker must be >= 0"),
    ({"gpus_per_worker": 1.5}, "whole number"),
    ({"embedding_source": "pixels"}, "--embedding must be 'head' or 'backbone'"),
    ({"embedding_dtype": "int8"}, "--embedding-dtype must be float16 or float32"),
    ({"executor": "dask"}, "executor must be 'ray' or 'local'"),
    ({"labeled": "missing-labels.csv"}, "missing-labels.csv"),
])
def test_every_argument_is_checked_before_ray_starts(tmp_path, small_pool, ckpt, no_ray, kwargs, message):
    with pytest.raises(DalDistError, match=message):
        score_pool(small_pool, ckpt, tmp_path / "scores", progress=False, **kwargs)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pool"]  # nothing created


def test_checkpoint_and_pool_problems_are_found_before_ray_starts(tmp_path, small_pool, ckpt, no_ray):
    with pytest.raises(DalDistError, match="checkpoint .*nope.pt: file not found"):
        score_pool(small_pool, tmp_path / "nope.pt", tmp_path / "scores")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(DalDistError, match="junk.pt: refused or unreadable"):
        score_pool(small_pool, tmp_path / "junk.pt", tmp_path / "scores")
    with pytest.raises(DalDistError, match="nowhere"):
        score_pool(tmp_path / "nowhere", ckpt, tmp_path / "scores")
    # A model whose input channels the pool's grey images cannot be converted to: a configuration error,
    # not 120 rejects and exit 0.
    two = tmp_path / "two.pt"
    save_checkpoint(build_model(default_config("mnist-cnn", 10, in_channels=2)), two)
    with pytest.raises(DalDistError, match=r"holds 1-channel images; .* expects in_channels=2"):
        score_pool(small_pool, two, tmp_path / "scores")
    assert not (tmp_path / "scores").exists()
    with pytest.raises(AssertionError, match="Ray started"):  # all good: the next step is starting Ray
        score_pool(small_pool, ckpt, tmp_path / "scores")
    assert not (tmp_path / "scores").exists() and not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_output_equal_to_inside_or_holding_an_input_is_refused(tmp_path, small_pool, ckpt, no_ray):
    from scoring_helpers import tree

    labels = tmp_path / "labels.csv"
    labels.write_text("id\n1\n2\n")
    before = tree(tmp_path)
    cases = [(small_pool, "is the pool"), (small_pool.as_uri(), "is the pool"), (small_pool / "scores", "is inside the pool"),
             (tmp_path, "holds the pool"), (ckpt, "is the checkpoint"), (ckpt.parent, "holds the checkpoint"),
             (labels, r"is the --labeled file")]
    for out, message in cases:
        for overwrite in (False, True):
            with pytest.raises(DalDistError, match=f"--out .*: {message} "):
                score_pool(small_pool, ckpt, out, labeled=labels, overwrite=overwrite, executor="local")
    assert tree(tmp_path) == before


def test_overwrite_replaces_only_a_scores_output(tmp_path, small_pool, ckpt):
    from scoring_helpers import tree

    # The case: --out is a folder holding notes, a model and a pool (not the inputs of this job).
    other = tmp_path / "work"
    other.mkdir()
    (other / "NOTES.txt").write_text("precious")
    (other / "model.pt").write_bytes(ckpt.read_bytes())
    x = pq.read_table(sorted(small_pool.glob("*.parquet"))[0])
    (other / "pool").mkdir()
    pq.write_table(x, other / "pool" / "part-00000.parquet")
    before = tree(other)
    with pytest.raises(DalDistError, match=r"work: holds 3 entries that are not a dal-dist scores output: "
                                           r"NOTES.txt, model.pt, pool/"):
        score_pool(small_pool, ckpt, other, overwrite=True, executor="local", progress=False)
    assert tree(other) == before
    # A scores output is replaced; one that later got a stray file is not.
    out = tmp_path / "scores"
    first = score_pool(small_pool, ckpt, out, mc_samples=2, executor="local", progress=False)
    again = score_pool(small_pool, ckpt, out, mc_samples=3, overwrite=True, executor="local", progress=False)
    assert first.rows == again.rows == 120
    (out / "NOTES.txt").write_text("mine")
    with pytest.raises(DalDistError, match=r"holds 1 entry that is not a dal-dist scores output: NOTES.txt"):
        score_pool(small_pool, ckpt, out, overwrite=True, executor="local", progress=False)
    assert (out / "NOTES.txt").read_text() == "mine" and read_scores_table(out).num_rows == 120
    # An existing file is not an output directory.
    (tmp_path / "file").write_text("x")
    with pytest.raises(DalDistError, match="file: is a file"):
        score_pool(small_pool, ckpt, tmp_path / "file", overwrite=True, executor="local", progress=False)


def test_a_local_cluster_dal_dist_started_refuses_requests_that_could_never_run():
    check_fits_local_cluster({"CPU": 2.0}, 2, None)
    check_fits_local_cluster({"CPU": 16.0, "GPU": 1.0}, 4, 0.25)
    with pytest.raises(DalDistError, match=r"--gpus-per-worker 1 x --workers 1 needs 1 GPUs; the local Ray "
                                           r"cluster dal-dist started has 0"):
        check_fits_local_cluster({"CPU": 2.0}, 1, 1)
    with pytest.raises(DalDistError, match=r"--workers 1000: the local Ray cluster dal-dist started has 2 CPUs; "
                                           r".*--workers <= 2"):
        check_fits_local_cluster({"CPU": 2.0}, 1000, None)
