"""Acquisition math against hand-computed values and the properties that define each score."""

import math

import pytest
import torch

from dal_dist.scoring import acquisition as acq
from dal_dist.errors import DalDistError


def _probs(rows):
    """T×B×C tensor from nested lists [T][B][C]."""
    return torch.tensor(rows, dtype=torch.float32)


def test_entropy_uniform_is_log_c_and_onehot_is_zero():
    p = _probs([[[0.25] * 4, [1.0, 0.0, 0.0, 0.0]]])
    e = acq.entropy(p)
    assert e[0].item() == pytest.approx(math.log(4), abs=1e-6)
    assert e[1].item() == pytest.approx(0.0, abs=1e-6)


def test_entropy_is_maximal_at_uniform():
    torch.manual_seed(0)
    p = torch.softmax(torch.randn(5, 200, 6), dim=-1)
    assert (acq.entropy(p) <= math.log(6) + 1e-6).all()


def test_bald_zero_when_samples_agree_and_positive_when_they_disagree():
    agree = _probs([[[0.7, 0.3]], [[0.7, 0.3]], [[0.7, 0.3]]])
    assert acq.bald(agree).item() == pytest.approx(0.0, abs=1e-6)
    # Two confident samples that disagree: H(mean) = log 2, mean H = 0 → BALD = log 2.
    disagree = _probs([[[1.0, 0.0]], [[0.0, 1.0]]])
    assert acq.bald(disagree).item() == pytest.approx(math.log(2), abs=1e-5)


def test_bald_hand_computed():
    p = _probs([[[0.9, 0.1]], [[0.5, 0.5]]])
    h = lambda q: -sum(x * math.log(x) for x in q)  # noqa: E731
    expected = h([0.7, 0.3]) - 0.5 * (h([0.9, 0.1]) + h([0.5, 0.5]))
    assert acq.bald(p).item() == pytest.approx(expected, abs=1e-6)


def test_bald_nonnegative_and_bounded_by_entropy():
    torch.manual_seed(1)
    p = torch.softmax(3 * torch.randn(20, 500, 10), dim=-1)
    b, e = acq.bald(p), acq.entropy(p)
    assert (b >= 0).all() and (b <= e + 1e-5).all()


def test_margin_and_least_confidence_hand_computed():
    p = _probs([[[0.6, 0.3, 0.1]], [[0.4, 0.5, 0.1]]])  # mean = [0.5, 0.4, 0.1]
    assert acq.margin(p).item() == pytest.approx(1 - (0.5 - 0.4), abs=1e-6)
    assert acq.least_confidence(p).item() == pytest.approx(0.5, abs=1e-6)


def test_variation_ratio_counts_modal_votes():
    # Votes over T=4: class 0, 0, 1, 2 → mode count 2 → 1 - 2/4.
    p = _probs([[[0.8, 0.1, 0.1]], [[0.6, 0.3, 0.1]], [[0.2, 0.7, 0.1]], [[0.1, 0.2, 0.7]]])
    assert acq.variation_ratio(p).item() == pytest.approx(0.5)
    same = _probs([[[0.9, 0.1]]] * 5)
    assert acq.variation_ratio(same).item() == 0.0


def test_mean_std_hand_computed():
    p = _probs([[[1.0, 0.0]], [[0.0, 1.0]]])  # each class: values {1, 0} → population std 0.5
    assert acq.mean_std(p).item() == pytest.approx(0.5, abs=1e-6)
    assert acq.mean_std(_probs([[[0.3, 0.7]]] * 3)).item() == pytest.approx(0.0, abs=1e-4)


def test_higher_means_more_uncertain_for_every_score():
    confident = [[0.98, 0.01, 0.01]]
    unsure = [[0.34, 0.33, 0.33]]
    p = _probs([[confident[0], unsure[0]], [[0.97, 0.02, 0.01], [0.2, 0.5, 0.3]]])
    for name, fn in acq.ACQUISITIONS.items():
        s = fn(p)
        assert s.shape == (2,)
        assert s[1] >= s[0], name


def test_parse_acquisitions():
    assert acq.parse_acquisitions("bald, entropy,bald") == ["bald", "entropy"]
    with pytest.raises(DalDistError, match="unknown \\['nope'\\]"):
        acq.parse_acquisitions("bald,nope")
