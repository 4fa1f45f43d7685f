"""train.ema_decay: an exponential moving average (EMA) of the weights, validated and saved in their place.

Late in a run every step still moves the weights by gradient noise, so an epoch's last weights scatter
around where the run is going (val gender accuracy hops by a point per epoch on 1,000 faces); the
average over the last ~1 / (1 - decay) steps sits nearer the middle. BatchNorm's running statistics are
averaged too (use_buffers), so the copy is consistent with itself. The decay ramps up as (1 + n) / (10 + n),
as in timm's ModelEma, so the random initial weights fade out at once instead of over thousands of steps.
"""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch import Tensor, nn
from torch.optim.swa_utils import AveragedModel

from agegender.config import ConfigError


def check_ema_decay(decay: float) -> None:
    if not 0.0 <= decay < 1.0:
        raise ConfigError(f"train.ema_decay must be 0 (off) or in (0, 1), e.g. 0.998; got {decay}")


def ramped_decay(decay: float, steps_averaged: int) -> float:
    """The decay used after `steps_averaged` updates: small at first, `decay` from ~10 / (1 - decay) steps on."""
    return min(decay, (1 + steps_averaged) / (10 + steps_averaged))


def _ema_update(decay: float) -> Callable[[list[Tensor], list[Tensor], Tensor], None]:
    def update(averaged: list[Tensor], current: list[Tensor], steps_averaged: Tensor) -> None:
        weight_of_current = 1.0 - ramped_decay(decay, int(steps_averaged))
        if torch.is_floating_point(averaged[0]):
            torch._foreach_lerp_(averaged, current, weight_of_current)  # what torch's own EMA helper uses
        else:  # integer buffers (BatchNorm's batch counter) are counts, not averages
            for kept, latest in zip(averaged, current):
                kept.copy_(latest)

    return update


class WeightAverage:
    """The EMA of `model`'s weights (decay > 0), or nothing at all (decay 0): then `evaluated` is the
    model itself and `update` does nothing, so callers need no branches."""

    def __init__(self, model: nn.Module, decay: float):
        check_ema_decay(decay)
        self.source = model
        self.averaged = AveragedModel(model, multi_avg_fn=_ema_update(decay), use_buffers=True) if decay else None

    @property
    def evaluated(self) -> nn.Module:
        """The weights that are validated and saved as best: the average when there is one."""
        return self.averaged.module if self.averaged is not None else self.source

    def update(self) -> None:
        """After each optimizer step."""
        if self.averaged is not None:
            self.averaged.update_parameters(self.source)

    def state_dict(self) -> dict[str, Any]:
        return self.averaged.state_dict() if self.averaged is not None else {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if self.averaged is not None:
            self.averaged.load_state_dict(state)
