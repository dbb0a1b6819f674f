"""Learning Loss (Yoo & Kweon 2019): the margin ranking loss between predicted and target losses."""

import pytest
import torch

from dal_dist.models import loss_prediction_loss


def test_ranking_loss_zero_when_predictions_follow_targets_beyond_the_margin():
    # pairs (0, 3) and (1, 2): targets say l0 > l3 and l1 < l2; predictions agree with gaps 2 and 1.5.
    target = torch.tensor([3.0, 0.5, 1.0, 0.1])
    pred = torch.tensor([4.0, 0.0, 1.5, 2.0])
    assert loss_prediction_loss(pred, target, margin=1.0).item() == 0.0


def test_ranking_loss_reversed_order_has_hand_computed_value():
    target = torch.tensor([3.0, 0.5, 1.0, 0.1])
    pred = torch.tensor([2.0, 1.5, 0.0, 4.0])  # both pairs ranked the wrong way
    # pair (0,3): l0 > l3 → max(0, -(2 - 4) + 1) = 3;  pair (1,2): l1 < l2 → max(0, (1.5 - 0) + 1) = 2.5
    assert loss_prediction_loss(pred, target, margin=1.0).item() == pytest.approx((3.0 + 2.5) / 2)
    # Inside the margin but right order still costs: l0 > l1, pred gap 0.25 < ξ = 1 → 0.75.
    assert loss_prediction_loss(torch.tensor([0.5, 0.25]), torch.tensor([2.0, 1.0])).item() == pytest.approx(0.75)


def test_ranking_loss_ties_follow_the_paper_and_gradient_skips_targets():
    # Equal losses count as l_i < l_j (the paper's indicator is -1 unless l_i > l_j).
    pred = torch.tensor([0.0, 0.0], requires_grad=True)
    target = torch.tensor([1.0, 1.0], requires_grad=True)
    loss = loss_prediction_loss(pred, target, margin=1.0)
    assert loss.item() == pytest.approx(1.0)
    loss.backward()
    assert pred.grad.tolist() == [1.0, -1.0] and target.grad is None
