"""Multi-task loss: BCE with label smoothing for gender, L1 (years) for age; missing labels masked."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from agegender.models.heads import ModelOutput


@dataclass(frozen=True)
class LossParts:
    total: torch.Tensor
    gender: torch.Tensor  # mean BCE over gender-labelled samples (0 when none)
    age: torch.Tensor  # mean |error| in years over age-labelled samples (0 when none)
    n_gender: int
    n_age: int


def gender_loss(logits: torch.Tensor, target: torch.Tensor, smoothing: float) -> tuple[torch.Tensor, int]:
    mask = ~torch.isnan(target)
    if not mask.any():
        return logits.sum() * 0.0, 0
    smoothed = target[mask] * (1.0 - smoothing) + 0.5 * smoothing
    return F.binary_cross_entropy_with_logits(logits[mask], smoothed), int(mask.sum())


def age_loss(predicted: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, int]:
    mask = ~torch.isnan(target)
    if not mask.any():
        return predicted.sum() * 0.0, 0
    return F.l1_loss(predicted[mask], target[mask]), int(mask.sum())


def age_distribution_loss(logits: torch.Tensor, target: torch.Tensor, sigma: float) -> torch.Tensor:
    """Cross-entropy between the predicted age bins and a Gaussian of width `sigma` around each true age."""
    mask = ~torch.isnan(target)
    if not mask.any():
        return logits.sum() * 0.0
    centres = torch.arange(logits.shape[1], dtype=logits.dtype, device=logits.device)  # (K,)
    target_distribution = torch.softmax(-((centres - target[mask, None]) ** 2) / (2 * sigma**2), dim=1)  # (B, K)
    return -(target_distribution * torch.log_softmax(logits[mask], dim=1)).sum(dim=1).mean()


class MultiTaskLoss:
    def __init__(
        self,
        gender_weight: float,
        age_weight: float,
        label_smoothing: float,
        age_distribution_weight: float = 0.0,
        age_sigma: float = 2.0,
    ):
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
        if age_sigma <= 0:
            raise ValueError(f"age_sigma must be positive, got {age_sigma}")
        self.gender_weight, self.age_weight, self.smoothing = gender_weight, age_weight, label_smoothing
        self.distribution_weight, self.sigma = age_distribution_weight, age_sigma

    @classmethod
    def from_config(cls, config) -> "MultiTaskLoss":
        """From a TrainConfig."""
        return cls(
            config.gender_weight, config.age_weight, config.label_smoothing, config.age_distribution_weight, config.age_sigma
        )

    def __call__(self, output: ModelOutput, age: torch.Tensor, gender: torch.Tensor) -> LossParts:
        g_loss, n_gender = gender_loss(output.gender_logit, gender, self.smoothing)
        a_loss, n_age = age_loss(output.age, age)
        total = self.gender_weight * g_loss + self.age_weight * a_loss
        if self.distribution_weight and output.age_logits is not None:
            total = total + self.distribution_weight * age_distribution_loss(output.age_logits, age, self.sigma)
        return LossParts(total, g_loss, a_loss, n_gender, n_age)
