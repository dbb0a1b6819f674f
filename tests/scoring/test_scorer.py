"""BatchScorer without Ray: matches a direct computation, seeded, bounded memory (MC sub-batches), fit checks."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dal_dist.errors import DalDistError
from dal_dist.models import build_model, default_config, load_checkpoint, mc_head_probs, preprocess
from dal_dist.scoring import BatchScorer, acquisition
from dal_dist.scoring.scorer import (HEAD_BYTES_BUDGET, batch_seed, check_batch_memory, check_channels,
                                     head_row_bytes, mc_chunk_rows)


def test_batch_scorer_matches_direct_computation_and_is_seeded(ckpt):
    scorer = BatchScorer(ckpt.read_bytes(), ["bald", "entropy"], mc_samples=16, device="cpu")
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (32, 28, 28, 1), dtype=np.uint8)
    ids = np.arange(32)
    a = scorer.score_images(ids, images)
    b = scorer.score_images(ids, images)
    assert a.equals(b)  # same batch, same seed → same dropout masks
    model = load_checkpoint(ckpt)
    with torch.no_grad():
        f = model.features(preprocess(torch.from_numpy(images), model.config))
        torch.manual_seed(batch_seed(0, ids))
        probs = mc_head_probs(model, f, 16)
    np.testing.assert_allclose(a.column("bald").to_numpy(), acquisition.bald(probs).numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(a.column("entropy").to_numpy(), acquisition.entropy(probs).numpy(), rtol=1e-5)
    np.testing.assert_array_equal(a.column("pred").to_numpy(), probs.mean(0).argmax(-1).numpy())



def test_a_batch_too_big_for_the_head_budget_is_scored_in_seeded_sub_batches(ckpt):
    model = load_checkpoint(ckpt)
    row = head_row_bytes(model)
    budget = 16 * 5 * row  # T=16: five images per sub-batch
    whole = BatchScorer(ckpt.read_bytes(), ["bald", "variation_ratio"], mc_samples=16, device="cpu")
    split = BatchScorer(ckpt.read_bytes(), ["bald", "variation_ratio"], mc_samples=16, device="cpu",
                        head_bytes=budget)
    assert whole.chunk_rows >= 32 and split.chunk_rows == 5
    images = np.random.default_rng(1).integers(0, 256, (32, 28, 28, 1), dtype=np.uint8)
    ids = np.arange(100, 132)
    a = split.score_images(ids, images)
    assert a.equals(split.score_images(ids, images))  # reproducible: each sub-batch seeded by its ids
    assert a.column("embedding").equals(whole.score_images(ids, images).column("embedding"))  # no dropout there
    with torch.no_grad():  # exactly the per-sub-batch computation
        f = model.features(preprocess(torch.from_numpy(images), model.config))
        bald, pred = [], []
        for s in range(0, 32, 5):
            torch.manual_seed(batch_seed(0, ids[s:s + 5]))
            probs = mc_head_probs(model, f[s:s + 5], 16)
            bald.append(acquisition.bald(probs))
            pred.append(probs.mean(0).argmax(-1))
    np.testing.assert_allclose(a.column("bald").to_numpy(), torch.cat(bald).numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(a.column("pred").to_numpy(), torch.cat(pred).numpy())


def test_mc_samples_that_do_not_fit_one_image_are_refused_with_the_figure(ckpt):
    model = load_checkpoint(ckpt)
    row = head_row_bytes(model)
    assert mc_chunk_rows(20, row) == HEAD_BYTES_BUDGET // (20 * row)
    with pytest.raises(DalDistError, match=r"--mc-samples 100000: the MC head needs [\d.]+ GiB for a single image "
                                           r".*use --mc-samples <= \d+"):
        mc_chunk_rows(100_000, row)
    with pytest.raises(DalDistError, match="--mc-samples 100000"):
        BatchScorer(ckpt.read_bytes(), ["bald"], mc_samples=100_000, device="cpu")
    with pytest.raises(DalDistError, match=r"--batch-size 100000000: one batch of 1x28x28 model inputs needs "
                                           r"[\d.]+ GiB"):
        check_batch_memory(model, 20, 100_000_000, (28, 28, 1))
    assert check_batch_memory(model, 20, 256, (28, 28, 1)) >= 256


def test_channels_the_pool_cannot_convert_to_are_a_configuration_error(tmp_path):
    grey = build_model(default_config("mnist-cnn", 10))
    rgb = build_model(default_config("mnist-cnn", 10, in_channels=3))
    two = build_model(default_config("mnist-cnn", 10, in_channels=2))
    for model, shape in ((grey, (28, 28, 1)), (grey, (28, 28, 3)), (rgb, (28, 28, 1)), (rgb, None),
                         (two, (28, 28, 2))):
        check_channels(model, shape, "pool")  # equal, or converted by decode (grey <-> RGB <-> RGBA)
    with pytest.raises(DalDistError, match=r"pool p: holds 2-channel images; .* expects in_channels=1"):
        check_channels(grey, (28, 28, 2), "p")
    with pytest.raises(DalDistError, match=r"unknown channels .* in_channels=2"):
        check_channels(two, None, "p")


def test_rejects_of_an_abandoned_job_do_not_bring_its_staging_back(tmp_path, ckpt):
    staging = tmp_path / ".out.staging-x"
    scorer = BatchScorer(ckpt.read_bytes(), ["bald"], mc_samples=2, device="cpu",
                         rejects_dir=staging / "rejects")
    scorer.write_rejects(np.array([3]), ["image: null"])  # staging gone (removed by abandon): nothing written
    assert not staging.exists()
    staging.mkdir()
    scorer.write_rejects(np.array([3]), ["image: null"])
    assert len(list((staging / "rejects").glob("part-*.parquet"))) == 1
