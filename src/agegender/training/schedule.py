"""Optimizers and learning-rate schedules named in TrainConfig."""

from __future__ import annotations

import torch
from torch import nn

from agegender.config import TrainConfig

OPTIMIZERS = ("adam", "adamw", "sgd")
SCHEDULERS = ("plateau", "step", "cosine", "none")


def create_optimizer(parameters, config: TrainConfig, lr: float | None = None) -> torch.optim.Optimizer:
    lr = config.lr if lr is None else lr
    if config.optimizer == "adam":
        return torch.optim.Adam(parameters, lr=lr, weight_decay=config.weight_decay)
    if config.optimizer == "adamw":
        return torch.optim.AdamW(parameters, lr=lr, weight_decay=config.weight_decay)
    if config.optimizer == "sgd":
        return torch.optim.SGD(parameters, lr=lr, momentum=config.momentum, nesterov=True, weight_decay=config.weight_decay)
    raise ValueError(f"unknown optimizer '{config.optimizer}'; choose one of {', '.join(OPTIMIZERS)}")


class EpochScheduler:
    """One interface over the schedules: `epoch_end(val_loss)` after every epoch."""

    def __init__(self, optimizer: torch.optim.Optimizer, config: TrainConfig, epochs: int):
        self.kind = config.scheduler
        if self.kind == "plateau":
            self.scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
                optimizer, factor=config.plateau_factor, patience=config.plateau_patience
            )
        elif self.kind == "step":
            self.scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=config.step_size, gamma=config.gamma)
        elif self.kind == "cosine":
            self.scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(epochs, 1))
        elif self.kind == "none":
            self.scheduler = None
        else:
            raise ValueError(f"unknown scheduler '{self.kind}'; choose one of {', '.join(SCHEDULERS)}")

    def epoch_end(self, val_loss: float) -> None:
        if self.kind == "plateau":
            self.scheduler.step(val_loss)
        elif self.scheduler is not None:
            self.scheduler.step()

    def state_dict(self) -> dict:
        return self.scheduler.state_dict() if self.scheduler is not None else {}

    def load_state_dict(self, state: dict) -> None:
        if self.scheduler is not None:
            self.scheduler.load_state_dict(state)


def current_lr(optimizer: torch.optim.Optimizer) -> float:
    return float(optimizer.param_groups[0]["lr"])


def trainable(model: nn.Module):
    return [p for p in model.parameters() if p.requires_grad]
