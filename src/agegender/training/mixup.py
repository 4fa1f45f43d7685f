"""Mixup (Zhang et al., 2018): train on blends of two samples and the same blend of their losses.

A batch is blended with a shuffled copy of itself, x = w * x + (1 - w) * x[partner], with w ~ Beta(alpha, alpha)
folded into [0.5, 1] so the first sample dominates and train accuracy can still be read against its labels.
The loss is w * loss(labels) + (1 - w) * loss(partner's labels), exact for any loss and keeping missing labels
masked. It works on images (Model A) and cached activations (Model B) alike, for no extra forward pass.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from agegender.config import ConfigError
from agegender.models.heads import ModelOutput
from agegender.training.losses import LossParts, MultiTaskLoss


def check_mixup_alpha(alpha: float) -> None:
    if alpha < 0:
        raise ConfigError(f"train.mixup_alpha must be 0 (off) or positive, got {alpha}")


def draw_mix(batch: int, alpha: float, generator: torch.Generator) -> tuple[torch.Tensor, float]:
    """(partner index (B,), weight of each sample itself in [0.5, 1]), drawn from `generator` only,
    so a resumed run draws the same blends."""
    partner = torch.randperm(batch, generator=generator)
    seed = int(torch.randint(2**31 - 1, (1,), generator=generator))  # torch has no seeded Beta sampler
    weight = float(np.random.default_rng(seed).beta(alpha, alpha))
    return partner, max(weight, 1.0 - weight)


def blend_loss(loss_fn: MultiTaskLoss, output: ModelOutput, age, gender, partner, weight: float) -> LossParts:
    own, other = loss_fn(output, age, gender), loss_fn(output, age[partner], gender[partner])
    return LossParts(
        total=weight * own.total + (1 - weight) * other.total,
        gender=weight * own.gender + (1 - weight) * other.gender,
        age=weight * own.age + (1 - weight) * other.age,
        n_gender=own.n_gender,
        n_age=own.n_age,
    )


def forward_and_loss(forward: Callable[[torch.Tensor], ModelOutput], x: torch.Tensor, age: torch.Tensor,
                     gender: torch.Tensor, loss_fn: MultiTaskLoss, *, alpha: float,
                     generator: torch.Generator) -> tuple[ModelOutput, LossParts]:  # fmt: skip
    """One training forward pass, blended with mixup when alpha > 0."""
    if alpha <= 0:
        output = forward(x)
        return output, loss_fn(output, age, gender)
    partner, weight = draw_mix(x.shape[0], alpha, generator)
    partner = partner.to(x.device)
    output = forward(weight * x + (1 - weight) * x[partner])
    return output, blend_loss(loss_fn, output, age, gender, partner, weight)
