"""Epoch bookkeeping: metrics, running means, batch order and labels."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch

from agegender.data.dataset import LabelledArrays
from agegender.training.losses import as_age_range


@dataclass(frozen=True)
class EpochMetrics:
    loss: float
    gender_loss: float
    age_loss: float
    gender_acc: float
    age_mae: float
    seconds: float
    images: int

    def as_row(self, prefix: str) -> dict[str, float]:
        """history.csv's columns of this epoch's train or val pass, e.g. val_gender_acc."""
        return {f"{prefix}_{key}": value for key, value in asdict(self).items() if key not in ("seconds", "images")}


class RunningMeans:
    """Sample-weighted running means of the loss parts, accuracy and MAE."""

    def __init__(self) -> None:
        self.sums = {"loss": 0.0, "gender_loss": 0.0, "age_loss": 0.0, "correct": 0.0, "abs_error": 0.0}
        self.counts = {"all": 0, "gender": 0, "age": 0, "exact_age": 0}

    @torch.no_grad()  # bookkeeping only; float() of a graph-attached tensor warns on every run
    def update(self, parts, output, age: torch.Tensor, gender: torch.Tensor) -> None:
        batch = age.shape[0]
        self.sums["loss"] += float(parts.total.detach()) * batch
        self.sums["gender_loss"] += float(parts.gender.detach()) * parts.n_gender
        self.sums["age_loss"] += float(parts.age.detach()) * parts.n_age
        bounds = as_age_range(age)  # (B, 2); MAE counts exact ages only, the loss groups too
        exact_mask = ~torch.isnan(bounds[:, 0]) & (bounds[:, 0] == bounds[:, 1])
        gender_mask = ~torch.isnan(gender)
        predicted_female = (output.gender_logit[gender_mask] > 0).float()
        # >= 0.5: a distilled target is a probability (training/distill.py); a label is 0 or 1 as it was
        self.sums["correct"] += float((predicted_female == (gender[gender_mask] >= 0.5).float()).sum())
        self.sums["abs_error"] += float((output.age[exact_mask] - bounds[exact_mask, 0]).abs().sum())
        self.counts["all"] += batch
        self.counts["gender"] += parts.n_gender
        self.counts["age"] += parts.n_age
        self.counts["exact_age"] += int(exact_mask.sum())

    def _mean(self, key: str, count: str) -> float:
        return self.sums[key] / self.counts[count] if self.counts[count] else float("nan")

    def result(self, seconds: float) -> EpochMetrics:
        return EpochMetrics(
            loss=self._mean("loss", "all"),
            gender_loss=self._mean("gender_loss", "gender"),
            age_loss=self._mean("age_loss", "age"),
            gender_acc=self._mean("correct", "gender"),
            age_mae=self._mean("abs_error", "exact_age"),
            seconds=seconds,
            images=self.counts["all"],
        )

    def short(self) -> str:
        m = self.result(0.0)
        return f"loss {m.loss:.3f} acc {m.gender_acc:.3f} mae {m.age_mae:.2f}"


def batch_indices(n: int, batch_size: int, generator: torch.Generator | None,
                  weights: np.ndarray | None = None) -> list[torch.Tensor]:  # fmt: skip
    """An epoch's batches of indices: a shuffled pass with a generator (n draws in proportion to `weights`,
    with replacement, where data.sampling gives them), else 0..n-1 in order."""
    if generator is None:
        order = torch.arange(n)
    elif weights is None:
        order = torch.randperm(n, generator=generator)
    else:
        order = torch.multinomial(torch.from_numpy(weights), n, replacement=True, generator=generator)
    return list(order.split(batch_size))


def batch_labels(
    data: LabelledArrays, index: torch.Tensor, device: torch.device | str = "cpu"
) -> tuple[torch.Tensor, torch.Tensor]:
    """(age (B, 2) [low, high] years, gender (B,)) of the images at `index`, on `device`; NaN marks a
    missing label. An exact age is [age, age], an age group its interval (see training/losses.py)."""
    picked = index.numpy()
    return torch.from_numpy(data.age_targets(picked)).to(device), torch.from_numpy(data.gender[picked]).to(device)


