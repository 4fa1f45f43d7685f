from __future__ import annotations

import math

import pytest
import torch

from agegender.models.heads import ModelOutput
from agegender.training.losses import MultiTaskLoss, age_distribution_loss, age_loss, gender_loss

NAN = math.nan


def softplus(x: float) -> float:
    return math.log1p(math.exp(x))


@pytest.mark.parametrize(("target", "smoothed"), [(1.0, 0.9), (0.0, 0.1)])
def test_label_smoothing_by_hand(target, smoothed):
    # BCE(logit 2, t) = t * softplus(-2) + (1 - t) * softplus(2), with t = target * 0.8 + 0.5 * 0.2
    loss, n = gender_loss(torch.tensor([2.0]), torch.tensor([target]), smoothing=0.2)
    expected = smoothed * softplus(-2.0) + (1 - smoothed) * softplus(2.0)
    assert n == 1
    assert float(loss) == pytest.approx(expected, rel=1e-6)


def test_no_smoothing_is_plain_bce():
    loss, _ = gender_loss(torch.tensor([0.0, 3.0]), torch.tensor([1.0, 0.0]), smoothing=0.0)
    assert float(loss) == pytest.approx((math.log(2) + softplus(3.0)) / 2, rel=1e-6)


def test_nan_gender_targets_are_masked():
    logits = torch.tensor([2.0, -50.0, 2.0], requires_grad=True)
    loss, n = gender_loss(logits, torch.tensor([1.0, NAN, 1.0]), smoothing=0.0)
    assert n == 2
    assert float(loss.detach()) == pytest.approx(softplus(-2.0), rel=1e-6)
    loss.backward()
    assert torch.isfinite(logits.grad).all() and float(logits.grad[1]) == 0.0


def test_nan_age_targets_are_masked():
    predicted = torch.tensor([12.0, 100.0, 27.0], requires_grad=True)
    loss, n = age_loss(predicted, torch.tensor([10.0, NAN, 30.0]))
    assert n == 2
    assert float(loss.detach()) == pytest.approx((2 + 3) / 2)
    loss.backward()
    assert predicted.grad.tolist() == pytest.approx([0.5, 0.0, -0.5])


def test_all_missing_gives_zero_loss_that_still_backpropagates():
    output = ModelOutput(torch.tensor([0.3, -1.0], requires_grad=True), torch.tensor([20.0, 40.0], requires_grad=True))
    parts = MultiTaskLoss(1.0, 0.1, 0.05)(output, torch.tensor([NAN, NAN]), torch.tensor([NAN, NAN]))
    assert [float(t.detach()) for t in (parts.total, parts.gender, parts.age)] == [0.0, 0.0, 0.0]
    assert (parts.n_gender, parts.n_age) == (0, 0)
    assert parts.total.requires_grad
    parts.total.backward()
    assert output.gender_logit.grad.tolist() == [0.0, 0.0]
    assert output.age.grad.tolist() == [0.0, 0.0]


def test_total_is_the_weighted_sum():
    output = ModelOutput(torch.tensor([0.0, 0.0]), torch.tensor([20.0, 40.0]))
    parts = MultiTaskLoss(gender_weight=2.0, age_weight=0.1, label_smoothing=0.0)(
        output, torch.tensor([25.0, 30.0]), torch.tensor([1.0, 0.0])
    )
    # gender: BCE at p = 0.5 is ln 2 for either label; age: (5 + 10) / 2 = 7.5
    assert float(parts.gender) == pytest.approx(math.log(2))
    assert float(parts.age) == pytest.approx(7.5)
    assert float(parts.total) == pytest.approx(2 * math.log(2) + 0.75)
    assert (parts.n_gender, parts.n_age) == (2, 2)


@pytest.mark.parametrize("smoothing", [-0.1, 1.0])
def test_invalid_smoothing(smoothing):
    with pytest.raises(ValueError, match="label_smoothing"):
        MultiTaskLoss(1.0, 0.1, smoothing)


def test_age_distribution_loss_is_smallest_for_logits_peaked_at_the_true_age():
    target = torch.tensor([30.0])
    centres = torch.arange(117.0)
    peaked_right = -((centres - 30.0) ** 2).unsqueeze(0) / 8.0  # log of a Gaussian, sigma 2, at 30
    peaked_wrong = -((centres - 60.0) ** 2).unsqueeze(0) / 8.0
    right = age_distribution_loss(peaked_right, target, sigma=2.0)
    wrong = age_distribution_loss(peaked_wrong, target, sigma=2.0)
    assert right < wrong
    # equal distributions: the cross-entropy equals the target's entropy (about 2.11 nats for sigma 2)
    assert float(right) == pytest.approx(0.5 * math.log(2 * math.pi * math.e * 4.0), abs=1e-3)


def test_age_distribution_loss_masks_missing_ages_and_only_applies_to_bins_heads():
    logits = torch.zeros(2, 117, requires_grad=True)
    loss = age_distribution_loss(logits, torch.tensor([NAN, NAN]), sigma=2.0)
    loss.backward()
    assert float(loss.detach()) == 0.0 and logits.grad.abs().sum() == 0
    with_logits = ModelOutput(torch.zeros(2), torch.tensor([20.0, 40.0]), torch.zeros(2, 117))
    without = ModelOutput(torch.zeros(2), torch.tensor([20.0, 40.0]))
    loss_fn = MultiTaskLoss(1.0, 0.1, 0.0, age_distribution_weight=0.5)
    age, gender = torch.tensor([20.0, 40.0]), torch.tensor([0.0, 1.0])
    uniform_cross_entropy = math.log(117)
    assert float(loss_fn(with_logits, age, gender).total) == pytest.approx(
        float(loss_fn(without, age, gender).total) + 0.5 * uniform_cross_entropy, rel=1e-5
    )
    with pytest.raises(ValueError, match="age_sigma"):
        MultiTaskLoss(1.0, 0.1, 0.0, age_sigma=0.0)
