from __future__ import annotations

import io
import math

import pytest
import torch
from rich.console import Console

from agegender.config import ConfigError
from agegender.models.heads import ModelOutput
from agegender.training.callbacks import HistoryCSV
from agegender.training.fit import fit
from agegender.training.losses import MultiTaskLoss
from agegender.training.mixup import blend_loss, draw_mix, forward_and_loss

NAN = math.nan
LOSS = MultiTaskLoss(gender_weight=1.0, age_weight=0.1, label_smoothing=0.05)


def linear_forward(x: torch.Tensor) -> ModelOutput:
    """A model whose output is its input's first two columns: easy to check by hand."""
    return ModelOutput(gender_logit=x[:, 0], age=x[:, 1])


def batch(n: int = 6) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    x = torch.randn(n, 2) * torch.tensor([2.0, 10.0]) + torch.tensor([0.0, 30.0])
    age = torch.tensor([20.0, 30.0, NAN, 50.0, 60.0, 70.0][:n])
    gender = torch.tensor([0.0, 1.0, 1.0, NAN, 0.0, 1.0][:n])
    return x, age, gender


def test_draw_mix_is_seeded_and_favours_the_sample_itself():
    draws = [draw_mix(8, 0.4, torch.Generator().manual_seed(seed)) for seed in (1, 1, 2)]
    assert torch.equal(draws[0][0], draws[1][0]) and draws[0][1] == draws[1][1]
    assert draws[0][1] != draws[2][1]
    for partner, weight in draws:
        assert sorted(partner.tolist()) == list(range(8))
        assert 0.5 <= weight <= 1.0


def test_blend_loss_weights_both_label_sets():
    x, age, gender = batch()
    output, partner = linear_forward(x), torch.tensor([5, 4, 3, 2, 1, 0])
    own, other = LOSS(output, age, gender), LOSS(output, age[partner], gender[partner])
    blended = blend_loss(LOSS, output, age, gender, partner, 0.7)
    assert float(blended.total) == pytest.approx(0.7 * float(own.total) + 0.3 * float(other.total))
    assert float(blended.age) == pytest.approx(0.7 * float(own.age) + 0.3 * float(other.age))
    assert (blended.n_gender, blended.n_age) == (own.n_gender, own.n_age)  # missing labels stay masked
    assert float(blend_loss(LOSS, output, age, gender, partner, 1.0).total) == pytest.approx(float(own.total))


def test_alpha_zero_is_the_plain_loss():
    x, age, gender = batch()
    output, parts = forward_and_loss(linear_forward, x, age, gender, LOSS, alpha=0.0, generator=torch.Generator())
    assert torch.equal(output.age, x[:, 1])
    assert float(parts.total) == pytest.approx(float(LOSS(linear_forward(x), age, gender).total))


def test_mixup_feeds_the_blend_and_scores_it_against_both_labels():
    x, age, gender = batch()
    partner, weight = draw_mix(len(x), 0.4, torch.Generator().manual_seed(3))
    assert weight < 1.0  # this seed blends; otherwise the test would not tell mixup from no mixup
    output, parts = forward_and_loss(linear_forward, x, age, gender, LOSS, alpha=0.4, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(output.age, weight * x[:, 1] + (1 - weight) * x[partner, 1])
    expected = blend_loss(LOSS, output, age, gender, partner, weight)
    assert float(parts.total) == pytest.approx(float(expected.total))


def test_negative_alpha_is_refused_before_any_data_is_read(make_config, tmp_path):
    config = make_config(tmp_path / "no_such_folder", tmp_path / "cache", mixup_alpha=-0.2)
    with pytest.raises(ConfigError, match="mixup_alpha"):
        fit(config, tmp_path / "run", console=Console(file=io.StringIO()))


def test_fit_passes_mixup_to_the_training_loop(make_config, utkface, cache_dir, tmp_path):
    quiet = Console(file=io.StringIO())
    for alpha in (0.0, 0.4):
        fit(make_config(utkface.path, cache_dir, epochs=2, mixup_alpha=alpha), tmp_path / f"run{alpha}", console=quiet)
    plain, mixed = (HistoryCSV(tmp_path / f"run{alpha}" / "history.csv").rows() for alpha in (0.0, 0.4))
    assert len(mixed) == 2 and all(math.isfinite(float(r["train_loss"])) for r in mixed)
    assert mixed[0]["train_loss"] != plain[0]["train_loss"]  # same seed: only the blending differs
