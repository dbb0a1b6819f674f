"""--precision: forward passes autocast to bf16/fp16, scores still computed in float32 from the softmax."""

import numpy as np
import pyarrow as pa
import pytest

from dal_dist.errors import DalDistError
from dal_dist.models import build_model, default_config, save_checkpoint
from dal_dist.scoring import BatchScorer, score_pool
from dal_dist.scoring.scorer import resolve_precision
from scoring_helpers import mnist


def _trained_like(tmp_path):
    """A seeded mnist-cnn (untrained nets still give spread-out scores on real digits)."""
    path = tmp_path / "m.pt"
    save_checkpoint(build_model(default_config("mnist-cnn", 10, seed=4)), path)
    return path.read_bytes()


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_reduced_precision_scores_agree_with_fp32_on_real_digits(tmp_path, mnist_test_dir, precision):
    x, _ = mnist(mnist_test_dir, 128)
    ids = np.arange(128)
    ckpt = _trained_like(tmp_path)
    ref = BatchScorer(ckpt, ["bald", "entropy"], mc_samples=8, device="cpu", keep_probs=True, precision="fp32")
    low = BatchScorer(ckpt, ["bald", "entropy"], mc_samples=8, device="cpu", keep_probs=True, precision=precision)
    a, b = ref.score_images(ids, x), low.score_images(ids, x)
    assert a.schema == b.schema and b.schema.field("bald").type == pa.float32()
    pa_, pb = np.array(a.column("probs").to_pylist()), np.array(b.column("probs").to_pylist())
    assert np.abs(pa_ - pb).max() < 0.02 and (pa_.argmax(1) == pb.argmax(1)).mean() >= 0.95
    ea, eb = a.column("entropy").to_numpy(), b.column("entropy").to_numpy()
    assert np.corrcoef(np.argsort(np.argsort(ea)), np.argsort(np.argsort(eb)))[0, 1] > 0.95  # same ranking
    assert not np.array_equal(ea, eb)  # the reduced precision did run


def test_precision_defaults_by_device_and_bad_values_are_refused(tmp_path, small_pool, ckpt):
    import torch

    assert resolve_precision(None, torch.device("cpu")) == "fp32"
    assert resolve_precision("auto", torch.device("cuda")) == "bf16"
    with pytest.raises(DalDistError, match="--precision must be one of bf16, fp16, fp32 or auto, got 'fp8'"):
        score_pool(small_pool, ckpt, tmp_path / "out", precision="fp8", executor="local")
    assert not (tmp_path / "out").exists()
