from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from agegender.config import TrainConfig
from agegender.training.schedule import (
    OPTIMIZERS,
    SCHEDULERS,
    EpochScheduler,
    create_optimizer,
    current_lr,
    trainable,
)


def parameters():
    return [torch.nn.Parameter(torch.zeros(3))]


@pytest.mark.parametrize(
    ("name", "cls"), [("adam", torch.optim.Adam), ("adamw", torch.optim.AdamW), ("sgd", torch.optim.SGD)]
)
def test_each_optimizer_builds(name, cls):
    config = TrainConfig(optimizer=name, lr=0.02, weight_decay=0.001, momentum=0.8)
    optimizer = create_optimizer(parameters(), config)
    assert type(optimizer) is cls
    group = optimizer.param_groups[0]
    assert (group["lr"], group["weight_decay"]) == (0.02, 0.001)
    if name == "sgd":
        assert group["momentum"] == 0.8 and group["nesterov"] is True


def test_optimizer_names_are_all_covered():
    assert set(OPTIMIZERS) == {"adam", "adamw", "sgd"}
    assert set(SCHEDULERS) == {"plateau", "step", "cosine", "none"}


def test_optimizer_lr_argument_wins():
    assert current_lr(create_optimizer(parameters(), TrainConfig(lr=0.5), lr=0.1)) == 0.1


def test_unknown_optimizer():
    with pytest.raises(ValueError, match="unknown optimizer 'adagrad'; choose one of adam, adamw, sgd"):
        create_optimizer(parameters(), TrainConfig(optimizer="adagrad"))


def lrs_after(scheduler_name: str, losses: list[float], **changes) -> list[float]:
    config = replace(TrainConfig(lr=1.0, scheduler=scheduler_name), **changes)
    optimizer = create_optimizer(parameters(), replace(config, optimizer="sgd", weight_decay=0.0))
    scheduler = EpochScheduler(optimizer, config, epochs=4)
    result = []
    for loss in losses:
        optimizer.step()
        scheduler.epoch_end(loss)
        result.append(current_lr(optimizer))
    return result


def test_cosine_schedule():
    # lr_t = 0.5 * (1 + cos(pi * t / 4)) over 4 epochs
    assert lrs_after("cosine", [1, 1, 1, 1]) == pytest.approx([0.853553, 0.5, 0.146447, 0.0], abs=1e-6)


def test_step_schedule():
    assert lrs_after("step", [1, 1, 1, 1], step_size=2, gamma=0.1) == pytest.approx([1.0, 0.1, 0.1, 0.01])


def test_plateau_schedule_uses_the_validation_loss():
    lrs = lrs_after("plateau", [1.0, 0.5, 0.6, 0.7], plateau_patience=1, plateau_factor=0.5)
    assert lrs == pytest.approx([1.0, 1.0, 1.0, 0.5])


def test_no_schedule():
    assert lrs_after("none", [1, 1, 1]) == [1.0, 1.0, 1.0]


@pytest.mark.parametrize("name", ["plateau", "step", "cosine", "none"])
def test_scheduler_state_round_trip(name):
    config = TrainConfig(lr=1.0, scheduler=name, step_size=1)
    optimizer = create_optimizer(parameters(), config)
    scheduler = EpochScheduler(optimizer, config, epochs=5)
    optimizer.step()
    scheduler.epoch_end(1.0)
    restored = EpochScheduler(create_optimizer(parameters(), config), config, epochs=5)
    restored.load_state_dict(scheduler.state_dict())
    assert restored.state_dict() == scheduler.state_dict()
    if name == "none":
        assert scheduler.state_dict() == {}


def test_unknown_scheduler():
    config = TrainConfig(scheduler="onecycle")
    with pytest.raises(ValueError, match="unknown scheduler 'onecycle'; choose one of plateau, step, cosine, none"):
        EpochScheduler(create_optimizer(parameters(), config), config, epochs=3)


def test_trainable_skips_frozen_parameters():
    model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Linear(2, 1))
    model[0].requires_grad_(False)
    assert trainable(model) == list(model[1].parameters())
