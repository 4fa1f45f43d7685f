from __future__ import annotations

import pytest
import torch
from torch import nn

from agegender.config import ConfigError
from agegender.training.averaging import WeightAverage, check_ema_decay, ramped_decay


def small_model() -> nn.Module:
    return nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2))


@torch.no_grad()
def fake_step(model: nn.Module, step: int) -> None:
    """What an optimizer step and a training forward pass would change: weights and BatchNorm statistics."""
    model[0].weight.add_(1.0 + step)
    model[1].running_mean.add_(2.0)
    model[1].num_batches_tracked.add_(1)


def test_decay_ramps_up_to_the_configured_value():
    assert ramped_decay(0.998, 0) == pytest.approx(0.1)
    assert ramped_decay(0.998, 1) == pytest.approx(2 / 11)
    assert ramped_decay(0.998, 100_000) == 0.998


def test_off_means_the_model_itself():
    model = small_model()
    average = WeightAverage(model, 0.0)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    average.update()
    assert average.averaged is None and average.evaluated is model and average.state_dict() == {}
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_average_of_weights_and_batchnorm_statistics_follows_the_ramped_decay():
    model = small_model()
    average = WeightAverage(model, 0.9)
    expected_weight = expected_mean = None
    for step in range(40):
        fake_step(model, step)
        average.update()
        if step == 0:  # the first update copies the weights as they are
            expected_weight, expected_mean = model[0].weight.clone(), model[1].running_mean.clone()
        else:
            decay = ramped_decay(0.9, step)
            expected_weight = decay * expected_weight + (1 - decay) * model[0].weight
            expected_mean = decay * expected_mean + (1 - decay) * model[1].running_mean
    averaged = average.evaluated
    assert averaged is not model
    torch.testing.assert_close(averaged[0].weight, expected_weight)
    torch.testing.assert_close(averaged[1].running_mean, expected_mean)
    assert averaged[1].num_batches_tracked == model[1].num_batches_tracked  # a count, kept as it is
    assert not torch.equal(averaged[0].weight, model[0].weight)  # it lags behind the raw weights


def test_state_round_trip_continues_the_same_average():
    model = small_model()
    average = WeightAverage(model, 0.9)
    for step in range(3):
        fake_step(model, step)
        average.update()
    restored = WeightAverage(model, 0.9)
    restored.load_state_dict(average.state_dict())
    fake_step(model, 3)
    average.update()
    restored.update()
    for (name, kept), (_, again) in zip(average.evaluated.state_dict().items(), restored.evaluated.state_dict().items()):
        assert torch.equal(kept, again), name


@pytest.mark.parametrize("decay", [1.0, -0.1, 1.5])
def test_a_decay_outside_0_1_is_refused(decay):
    with pytest.raises(ConfigError, match="train.ema_decay must be 0 \\(off\\) or in \\(0, 1\\)"):
        check_ema_decay(decay)
