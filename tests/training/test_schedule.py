from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch

from agegender.config import ConfigError, TrainConfig
from agegender.training.schedule import (
    OPTIMIZERS,
    SCHEDULERS,
    EpochScheduler,
    Warmup,
    create_optimizer,
    current_lr,
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


def sgd_steps(warmup: Warmup | None, steps: int, lr: float = 1.0) -> list[float]:
    """Size of each plain-SGD update of a parameter whose gradient is always 1."""
    parameter = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([parameter], lr=lr)
    sizes = []
    for _ in range(steps):
        before = parameter.item()
        parameter.grad = torch.ones(1)
        if warmup is None:
            optimizer.step()
        else:
            warmup.step(optimizer)
        sizes.append(before - parameter.item())
        assert current_lr(optimizer) == lr  # the scheduled rate is back after every step
    return sizes


def test_warmup_scales_the_first_steps_linearly_then_steps_plainly():
    assert sgd_steps(Warmup(4), 6) == pytest.approx([0.25, 0.5, 0.75, 1.0, 1.0, 1.0])
    assert sgd_steps(Warmup(0), 2) == sgd_steps(None, 2) == pytest.approx([1.0, 1.0])


def test_warmup_leaves_the_epoch_schedule_alone():
    # Warm-up longer than an epoch: the cosine schedule still sees (and sets) its own rates.
    config = TrainConfig(lr=1.0, scheduler="cosine", optimizer="sgd", weight_decay=0.0)
    schedules = []
    for warmup in (None, Warmup(5)):
        optimizer = create_optimizer(parameters(), config)
        scheduler, lrs = EpochScheduler(optimizer, config, epochs=4), []
        for _ in range(4):  # epochs of 2 steps
            for _ in range(2):
                optimizer.param_groups[0]["params"][0].grad = torch.ones(3)
                if warmup is None:
                    optimizer.step()
                else:
                    warmup.step(optimizer)
            scheduler.epoch_end(1.0)
            lrs.append(current_lr(optimizer))
        schedules.append(lrs)
    assert schedules[0] == schedules[1]


def test_warmup_state_round_trip_and_older_states():
    warmup = Warmup(3)
    sgd_steps(warmup, 2)
    restored = Warmup(3)
    restored.load_state_dict(warmup.state_dict())
    assert restored.done == 2 and sgd_steps(restored, 2) == pytest.approx([1.0, 1.0])
    older = Warmup(3)
    older.load_state_dict({})  # a training state saved before warm-up existed resumes without one
    assert sgd_steps(older, 1) == pytest.approx([1.0])


def test_negative_warmup_is_refused():
    with pytest.raises(ConfigError, match="train.warmup_steps must be 0 \\(off\\) or positive, got -1"):
        Warmup(-1)


def test_a_cosine_schedule_resumed_with_more_epochs_is_stretched():
    config = TrainConfig(lr=1.0, scheduler="cosine", optimizer="sgd", weight_decay=0.0)
    optimizer = create_optimizer(parameters(), config)
    short = EpochScheduler(optimizer, config, epochs=4)
    for _ in range(2):
        optimizer.step()
        short.epoch_end(1.0)
    saved_optimizer, saved_schedule = optimizer.state_dict(), short.state_dict()

    optimizer = create_optimizer(parameters(), config)  # the resume: optimizer first, then schedule
    optimizer.load_state_dict(saved_optimizer)
    longer = EpochScheduler(optimizer, config, epochs=8)
    longer.load_state_dict(saved_schedule)
    lrs = [current_lr(optimizer)]
    for _ in range(6):
        optimizer.step()
        longer.epoch_end(1.0)
        lrs.append(current_lr(optimizer))
    expected = [0.5 * (1 + math.cos(math.pi * epoch / 8)) for epoch in range(2, 9)]
    assert lrs == pytest.approx(expected, abs=1e-9)  # on the 8-epoch curve from epoch 2, ending at 0
