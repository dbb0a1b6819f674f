"""The head trained on cached embeddings: deterministic part once, only the last layer sampled (exact MC dropout)."""

import pytest
import torch
from torch import nn

from dal_dist.errors import DalDistError
from dal_dist.models import (EmbeddingHead, build_model, default_config, load_checkpoint, mc_head_probs,
                             save_checkpoint)


@pytest.mark.parametrize("hidden", [0, 16])
def test_head_sampling_over_cached_rows_equals_full_stochastic_passes(hidden):
    model = build_model(default_config("embedding-head", 4, in_channels=12, hidden=hidden, seed=3))
    assert isinstance(model, EmbeddingHead) and model.embed_dim == (hidden or 12)
    rows = torch.randn(5, 12).half()  # cached embeddings are float16
    f = model.features(rows)
    assert torch.equal(f, model.features(rows.view(5, 12, 1, 1)))  # a D-wide row is a D×1×1 input
    for m in model.modules():
        if isinstance(m, nn.Dropout):
            m.train(True)
    for s in range(3):  # the deterministic part consumes no randomness: head-only == full pass
        torch.manual_seed(s)
        full = model(rows)
        torch.manual_seed(s)
        assert torch.equal(full, model.head(f))
    model.eval()
    torch.manual_seed(0)
    probs = mc_head_probs(model, f, 6)
    assert probs.shape == (6, 5, 4) and not torch.allclose(probs[0], probs[1])


def test_embedding_head_checkpoints_and_bad_configs(tmp_path):
    model = build_model(default_config("embedding-head", 3, in_channels=8, hidden=4))
    save_checkpoint(model, tmp_path / "h.pt")
    again = load_checkpoint(tmp_path / "h.pt")
    x = torch.randn(2, 8)
    assert torch.equal(again(x), model(x))
    with pytest.raises(DalDistError, match="in_channels=D, image_size=1"):
        build_model(default_config("embedding-head", 3, in_channels=8, image_size=4))


def test_folded_mask_samples_are_dropout_of_each_row_and_match_per_row_dropout_in_distribution():
    model = build_model(default_config("embedding-head", 3, in_channels=6, dropout=0.5, seed=1)).eval()
    f = model.features(torch.randn(4, 6))
    torch.manual_seed(5)
    probs = model.sample_probs(f, 7)
    torch.manual_seed(5)  # the masks it drew, one per sample, shared by the rows of the call
    keep = (torch.rand(7, 1, 6) >= 0.5).float() / 0.5
    for t in range(7):
        ref = torch.softmax(model.fc(f * keep[t]), dim=-1)  # dropout of every row with mask t, by hand
        assert torch.allclose(probs[t], ref, atol=1e-6)
    # Per row, the folded samples and nn.Dropout's own per-row masks draw from the same distribution.
    torch.manual_seed(0)
    folded = model.sample_probs(f, 20_000).mean(0)
    model.drop.train(True)
    torch.manual_seed(1)
    per_row = torch.softmax(model.head(f.repeat(20_000, 1)), -1).view(20_000, 4, 3).mean(0)
    assert torch.allclose(folded, per_row, atol=0.01)
    assert not torch.allclose(folded, torch.softmax(model.fc(f), -1), atol=1e-3)  # dropout does change the mean
