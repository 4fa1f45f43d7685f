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


INF = math.inf


def test_interval_age_loss_is_zero_inside_and_l1_to_the_nearest_edge_outside():
    predicted = torch.tensor([28.0, 20.0, 40.0, 50.0, 70.0, 30.0])
    target = torch.tensor([[24.5, 32.5], [24.5, 32.5], [24.5, 32.5], [59.5, INF], [59.5, INF], [33.0, 33.0]])
    loss, n = age_loss(predicted, target)
    # inside, 4.5 below the low edge, 7.5 above the high edge, 9.5 below an open group, inside it, exact L1 3
    assert n == 6
    assert float(loss) == pytest.approx((0 + 4.5 + 7.5 + 9.5 + 0 + 3) / 6)


def test_exact_ages_as_intervals_give_the_same_loss_as_plain_ages():
    predicted, ages = torch.tensor([10.0, 52.5, 3.0]), torch.tensor([12.0, NAN, 7.5])
    intervals = torch.stack([ages, ages], dim=1)
    assert float(age_loss(predicted, intervals)[0]) == pytest.approx(float(age_loss(predicted, ages)[0]))
    sigma = 2.0
    logits = torch.randn(3, 117, generator=torch.Generator().manual_seed(0))
    assert float(age_distribution_loss(logits, intervals, sigma)) == pytest.approx(
        float(age_distribution_loss(logits, ages, sigma))
    )


def test_group_distribution_term_is_minus_log_of_the_mass_inside_the_group():
    logits = torch.full((1, 117), -30.0)
    logits[0, 25:33] = 0.0  # all mass inside "25-32"
    inside = age_distribution_loss(logits, torch.tensor([[24.5, 32.5]]), sigma=2.0)
    assert float(inside) == pytest.approx(0.0, abs=1e-6)
    half = torch.full((1, 117), -30.0)
    half[0, 30], half[0, 40] = 0.0, 0.0  # half the mass inside
    assert float(age_distribution_loss(half, torch.tensor([[24.5, 32.5]]), sigma=2.0)) == pytest.approx(math.log(2), rel=1e-4)
    open_group = age_distribution_loss(half, torch.tensor([[59.5, INF]]), sigma=2.0)
    assert float(open_group) > 10  # no mass at 60 or above


def test_exact_ages_and_groups_mix_in_one_batch_with_finite_gradients():
    logits = torch.randn(4, 117, requires_grad=True)
    predicted = (logits.softmax(1) @ torch.arange(117.0)).detach().requires_grad_()
    target = torch.tensor([[30.5, 30.5], [24.5, 32.5], [NAN, NAN], [69.5, INF]])  # a fractional exact age too
    loss_fn = MultiTaskLoss(1.0, 0.1, 0.0, age_distribution_weight=0.5)
    parts = loss_fn(ModelOutput(torch.zeros(4, requires_grad=True), predicted, logits), target, torch.tensor([0.0, 1, 1, NAN]))
    parts.total.backward()
    assert parts.n_age == 3
    assert torch.isfinite(logits.grad).all() and torch.isfinite(predicted.grad).all()
    assert float(logits.grad[2].abs().sum()) == 0.0  # the unlabelled row gets no gradient
