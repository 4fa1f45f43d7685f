"""The phase runner's pieces: one training epoch, one evaluation pass, where a run stands."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch

from agegender.config import AugmentConfig, TrainConfig
from agegender.models.backends import predict_arrays
from agegender.training.averaging import WeightAverage
from agegender.training.callbacks import EarlyStopping
from agegender.training.engine import Phase, PhaseRun, RunPosition, evaluate, set_trainable, train_epoch
from agegender.training.losses import MultiTaskLoss
from agegender.training.schedule import EpochScheduler, Warmup
from agegender.training.sources import ImageBatches
from tests.training.test_loop import arrays, tiny_model

CPU = torch.device("cpu")


def phase_run(model: torch.nn.Module) -> PhaseRun:
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.01)
    return PhaseRun(
        phase=Phase("train", None, 1, 0.01), optimizer=optimizer, scheduler=EpochScheduler(optimizer, TrainConfig(), 1),
        stopper=EarlyStopping(1, 0.0), generator=torch.Generator().manual_seed(0), warmup=Warmup(0),
        average=WeightAverage(model, 0.0), train_module=model,
    )  # fmt: skip


def test_train_epoch_updates_weights_quietly():
    model, source = tiny_model(), ImageBatches(arrays(9), AugmentConfig(), True, CPU)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    run, seen = phase_run(model), []
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # e.g. float() of a tensor that still requires grad
        batches = source.train_batches(4, run.generator)
        metrics = train_epoch(run, batches, MultiTaskLoss(1.0, 0.1, 0.05), 0.0, run.generator, on_batch=lambda n, means: seen.append(n))
    # batches of 4, 4 and 1: BatchNorm cannot train on the single image, so it is skipped
    assert seen == [4, 4] and metrics.images == 8
    assert model.training
    assert any(not torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert math.isfinite(metrics.loss) and 0 <= metrics.gender_acc <= 1


def test_evaluate_matches_predict_arrays():
    model, data = tiny_model(), arrays(6)
    metrics = evaluate(model, ImageBatches(data, None, True, CPU), MultiTaskLoss(1.0, 0.1, 0.0))
    assert not model.training and metrics.images == 6
    age, p_female = predict_arrays(model, data.images, batch_size=4)
    labelled = ~np.isnan(data.age)
    assert metrics.age_mae == pytest.approx(float(np.abs(age - data.age)[labelled].mean()), rel=1e-5)
    g = ~np.isnan(data.gender)
    assert metrics.gender_acc == pytest.approx(float(((p_female > 0.5) == data.gender.astype(bool))[g].mean()))


def test_position_reads_the_one_phase_state_layout_of_77dbc71():
    old = {"epoch": 3, "early_stopping": {"best": 0.5, "best_epoch": 2, "bad_epochs": 1}, "optimizer": {}}
    position = RunPosition.from_state(old)
    assert (position.phase_index, position.phase_epoch, position.epoch) == (0, 3, 3)
    assert (position.best_val_loss, position.best_epoch) == (0.5, 2)
    assert RunPosition.from_state({**old, **position.state_dict()}).state_dict() == position.state_dict()


def test_position_keeps_the_best_across_phases():
    position = RunPosition(phase_index=1, phase_epoch=0, epoch=4, best_val_loss=1.0, best_epoch=3)
    assert not position.record(1.5, min_delta=0.0) and (position.epoch, position.phase_epoch) == (5, 1)
    assert position.record(0.9, min_delta=0.0) and position.best_epoch == 6
    assert RunPosition().record(math.nan, min_delta=0.0)  # a run's first epoch is its first best


def test_set_trainable_freezes_the_backbone_before_the_first_trained_block():
    model = torch.nn.Module()
    model.backbone = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Linear(2, 2), torch.nn.Linear(2, 2))
    model.head = torch.nn.Linear(2, 1)
    trained = set_trainable(model, 2)
    assert trained == [*model.backbone[2].parameters(), *model.head.parameters()]
    assert not any(p.requires_grad for p in model.backbone[:2].parameters())
    assert set_trainable(model, None) == list(model.parameters())  # one phase trains everything
