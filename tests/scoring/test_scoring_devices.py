"""The scorer's device paths, run on every device this machine has: CPU here, CUDA where a GPU is visible.

On CUDA these are the checks the CPU cannot make: a batch of labeled rows only with backbone embeddings
(the model on the GPU, the zero-row probe on the host crashed once), overlap on its own CUDA streams giving
the scores of one batch at a time, and bf16 autocast against fp32 on CPU.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
import torch

from dal_dist.scoring import BatchScorer
from dal_dist.scoring.scorer import embed_dim, score_batches
from scoring_helpers import ACQ, mnist

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(),
                                                                  reason="needs a CUDA GPU"))]


def _raw_batches(x: np.ndarray, rows: int) -> list[pa.Table]:
    n = len(x)
    table = pa.table({"id": pa.array(np.arange(n) + 1000, pa.int64()),
                      "image": pa.array([r.tobytes() for r in x], pa.binary()),
                      "height": pa.array([28] * n, pa.int32()), "width": pa.array([28] * n, pa.int32()),
                      "channels": pa.array([1] * n, pa.int32())})
    return [table.slice(s, rows) for s in range(0, n, rows)]


@pytest.mark.parametrize("device", DEVICES)
def test_a_batch_of_labeled_rows_only_scores_to_an_empty_table(ckpt, mnist_test_dir, device):
    x, _ = mnist(mnist_test_dir, 32)
    batch = _raw_batches(x, 32)[0]
    scorer = BatchScorer(ckpt.read_bytes(), ["bald"], mc_samples=2, device=device, embedding_source="backbone",
                         labeled_ids=np.arange(1000, 1032))
    out = scorer(batch)
    assert out.num_rows == 0
    assert out.schema.field("embedding").type.list_size == embed_dim(scorer.model, "backbone")


@pytest.mark.parametrize("device", DEVICES)
def test_overlapped_batches_score_as_one_at_a_time(ckpt, mnist_test_dir, device):
    x, _ = mnist(mnist_test_dir, 320)
    batches = _raw_batches(x, 64)
    kwargs = dict(mc_samples=8, device=device, precision="fp32")
    plain = list(score_batches(BatchScorer(ckpt.read_bytes(), ACQ, overlap=False, **kwargs), batches))
    overlapped = list(score_batches(BatchScorer(ckpt.read_bytes(), ACQ, overlap=True, **kwargs), batches))
    assert [t.column("id") for t in overlapped] == [t.column("id") for t in plain]
    for a, b in zip(overlapped, plain):  # same masks; on CUDA cuDNN may pick other kernels between scorers
        for name in (*ACQ, "confidence"):
            np.testing.assert_allclose(a.column(name).to_numpy(), b.column(name).to_numpy(), rtol=1e-4, atol=1e-5)
        assert a.column("pred").equals(b.column("pred"))


@pytest.mark.parametrize("device", DEVICES)
def test_the_devices_default_precision_agrees_with_fp32_on_cpu(ckpt, mnist_test_dir, device):
    x, _ = mnist(mnist_test_dir, 256)
    ids = np.arange(256)
    ref = BatchScorer(ckpt.read_bytes(), ["entropy"], mc_samples=8, device="cpu", keep_probs=True, precision="fp32")
    dev = BatchScorer(ckpt.read_bytes(), ["entropy"], mc_samples=8, device=device, keep_probs=True)
    assert dev.precision == ("bf16" if device == "cuda" else "fp32")
    a, b = ref.score_images(ids, x), dev.score_images(ids, x)
    pa_, pb = np.array(a.column("probs").to_pylist()), np.array(b.column("probs").to_pylist())
    assert np.abs(pa_ - pb).max() < 0.02 and (pa_.argmax(1) == pb.argmax(1)).mean() >= 0.95
