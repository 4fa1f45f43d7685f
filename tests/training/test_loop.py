from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from agegender.config import ModelConfig
from agegender.data.dataset import LabelledArrays
from agegender.data.samples import FaceSample
from agegender.models.heads import ModelOutput
from agegender.models.registry import create_model
from agegender.training.loop import RunningMeans, batch_indices
from agegender.training.losses import LossParts

NAN = math.nan


def arrays(n: int, seed: int = 0) -> LabelledArrays:
    rng = np.random.default_rng(seed)
    return LabelledArrays(
        images=rng.integers(0, 256, size=(n, 32, 32, 3), dtype=np.uint8),
        age=np.array([20.0 + i if i % 4 else NAN for i in range(n)], np.float32),
        gender=np.array([float(i % 2) if i % 5 else NAN for i in range(n)], np.float32),
        samples=[FaceSample(Path(f"{i}.jpg")) for i in range(n)],
    )


def tiny_model() -> torch.nn.Module:
    torch.manual_seed(0)
    return create_model(ModelConfig(widths=(8, 16), head_hidden=16))


def test_running_means_by_hand():
    means = RunningMeans()
    # batch 1: 2 images, both gender-labelled (one right), one age-labelled (error 2)
    means.update(
        LossParts(torch.tensor(1.0), torch.tensor(0.5), torch.tensor(2.0), n_gender=2, n_age=1),
        ModelOutput(torch.tensor([1.0, -1.0]), torch.tensor([10.0, 20.0])),
        age=torch.tensor([12.0, NAN]),
        gender=torch.tensor([1.0, 1.0]),
    )
    # batch 2: 2 images, one gender-labelled (right), two age-labelled (errors 1 and 3)
    means.update(
        LossParts(torch.tensor(3.0), torch.tensor(1.0), torch.tensor(2.0), n_gender=1, n_age=2),
        ModelOutput(torch.tensor([-2.0, 0.5]), torch.tensor([30.0, 40.0])),
        age=torch.tensor([31.0, 37.0]),
        gender=torch.tensor([0.0, NAN]),
    )
    result = means.result(seconds=1.5)
    assert result.loss == pytest.approx((1.0 * 2 + 3.0 * 2) / 4)
    assert result.gender_loss == pytest.approx((0.5 * 2 + 1.0 * 1) / 3)
    assert result.age_loss == pytest.approx((2.0 * 1 + 2.0 * 2) / 3)
    assert result.gender_acc == pytest.approx(2 / 3)
    assert result.age_mae == pytest.approx((2 + 1 + 3) / 3)
    assert (result.images, result.seconds) == (4, 1.5)


def test_running_means_without_labels_are_nan():
    result = RunningMeans().result(0.0)
    assert math.isnan(result.loss) and math.isnan(result.gender_acc) and result.images == 0


def test_batch_indices():
    assert [b.tolist() for b in batch_indices(5, 2, None)] == [[0, 1], [2, 3], [4]]
    shuffled = batch_indices(10, 4, torch.Generator().manual_seed(0))
    assert [len(b) for b in shuffled] == [4, 4, 2]
    assert sorted(torch.cat(shuffled).tolist()) == list(range(10))
    again = batch_indices(10, 4, torch.Generator().manual_seed(0))
    assert [b.tolist() for b in shuffled] == [b.tolist() for b in again]

