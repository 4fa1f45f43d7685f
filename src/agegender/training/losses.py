"""Multi-task loss: BCE with label smoothing for gender, L1 (years) for age; missing labels masked.

An age target is an interval [low, high] of years, (B, 2): an exact age is [a, a], an age group its
interval (data/age_groups.py), a missing label NaN. The age loss is the distance from the predicted age
to the interval (zero inside it, L1 to the nearer edge outside; an open group has high = inf, so only
its low edge counts), which for an exact age is the usual L1. A (B,) tensor of exact ages is accepted too.
"""

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


def as_age_range(target: torch.Tensor) -> torch.Tensor:
    """(B, 2) [low, high] years from (B, 2) intervals or (B,) exact ages."""
    return torch.stack([target, target], dim=1) if target.dim() == 1 else target


def age_loss(predicted: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Mean distance in years from each prediction to its age interval (L1 for exact ages)."""
    bounds = as_age_range(target)
    mask = ~torch.isnan(bounds[:, 0])
    if not mask.any():
        return predicted.sum() * 0.0, 0
    low, high, age = bounds[mask, 0], bounds[mask, 1], predicted[mask]  # (M,) each
    outside = (low - age).clamp(min=0) + (age - high).clamp(min=0)  # an inf high edge gives 0
    return outside.mean(), int(mask.sum())


def age_distribution_loss(logits: torch.Tensor, target: torch.Tensor, sigma: float) -> torch.Tensor:
    """Exact ages: cross-entropy between the predicted age bins and a Gaussian of width `sigma` around
    the age. Age groups: -log of the probability the bins inside the group hold, which is zero once all
    of it is there, whatever its shape inside the group."""
    bounds = as_age_range(target)
    mask = ~torch.isnan(bounds[:, 0])
    if not mask.any():
        return logits.sum() * 0.0
    low, high = bounds[mask, 0:1], bounds[mask, 1:2]  # (M, 1) each
    log_p = torch.log_softmax(logits[mask], dim=1)  # (M, K)
    centres = torch.arange(logits.shape[1], dtype=logits.dtype, device=logits.device)  # (K,)
    exact = (low == high).squeeze(1)  # (M,)
    gaussian = torch.softmax(-((centres - low) ** 2) / (2 * sigma**2), dim=1)  # (M, K), used where exact
    exact_loss = -(gaussian * log_p).sum(dim=1)  # (M,)
    # (M, K) bins a group allows; every bin on exact rows, whose value here is unused but must stay
    # finite (a -inf there would turn the masked-out gradient into NaN)
    inside = (centres >= low) & (centres <= high) | exact[:, None]
    group_loss = -torch.logsumexp(log_p.masked_fill(~inside, float("-inf")), dim=1)  # (M,)
    return torch.where(exact, exact_loss, group_loss).mean()


class MultiTaskLoss:
    def __init__(self, gender_weight: float, age_weight: float, label_smoothing: float,
                 age_distribution_weight: float = 0.0, age_sigma: float = 2.0):  # fmt: skip
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
        if age_sigma <= 0:
            raise ValueError(f"age_sigma must be positive, got {age_sigma}")
        self.gender_weight, self.age_weight, self.smoothing = gender_weight, age_weight, label_smoothing
        self.distribution_weight, self.sigma = age_distribution_weight, age_sigma

    @classmethod
    def from_config(cls, config) -> MultiTaskLoss:
        """From a TrainConfig."""
        return cls(config.gender_weight, config.age_weight, config.label_smoothing, config.age_distribution_weight,
                   config.age_sigma)  # fmt: skip

    def __call__(self, output: ModelOutput, age: torch.Tensor, gender: torch.Tensor) -> LossParts:
        g_loss, n_gender = gender_loss(output.gender_logit, gender, self.smoothing)
        a_loss, n_age = age_loss(output.age, age)
        total = self.gender_weight * g_loss + self.age_weight * a_loss
        if self.distribution_weight and output.age_logits is not None:
            total = total + self.distribution_weight * age_distribution_loss(output.age_logits, age, self.sigma)
        return LossParts(total, g_loss, a_loss, n_gender, n_age)
