"""Optimizers and learning-rate schedules named in TrainConfig."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from agegender.config import OPTIMIZERS, SCHEDULERS, ConfigError, TrainConfig
from agegender.training.averaging import WeightAverage
from agegender.training.callbacks import EarlyStopping


def create_optimizer(parameters, config: TrainConfig, lr: float | None = None) -> torch.optim.Optimizer:
    lr = config.lr if lr is None else lr
    if config.optimizer == "adam":
        return torch.optim.Adam(parameters, lr=lr, weight_decay=config.weight_decay)
    if config.optimizer == "adamw":
        return torch.optim.AdamW(parameters, lr=lr, weight_decay=config.weight_decay)
    if config.optimizer == "sgd":
        return torch.optim.SGD(parameters, lr=lr, momentum=config.momentum, nesterov=True,
                               weight_decay=config.weight_decay)  # fmt: skip
    raise ValueError(f"unknown optimizer '{config.optimizer}'; choose one of {', '.join(OPTIMIZERS)}")


class EpochScheduler:
    """One interface over the schedules: `epoch_end(val_loss)` after every epoch."""

    def __init__(self, optimizer: torch.optim.Optimizer, config: TrainConfig, epochs: int):
        self.kind, self.epochs = config.scheduler, max(epochs, 1)
        if self.kind == "plateau":
            self.scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
                optimizer, factor=config.plateau_factor, patience=config.plateau_patience
            )
        elif self.kind == "step":
            self.scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=config.step_size, gamma=config.gamma)
        elif self.kind == "cosine":
            self.scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=self.epochs)
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
        """Restore after the optimizer. A cosine schedule saved for fewer epochs (a resume that adds
        epochs) is stretched to this run's length, rather than rising again past its old end."""
        if self.scheduler is None:
            return
        self.scheduler.load_state_dict(state)
        if self.kind == "cosine" and self.scheduler.T_max != self.epochs:
            self._stretch_cosine()

    def _stretch_cosine(self) -> None:
        cosine = self.scheduler
        cosine.T_max = self.epochs
        progress = min(cosine.last_epoch, self.epochs) / self.epochs
        for group, base in zip(cosine.optimizer.param_groups, cosine.base_lrs):
            # the closed form at this epoch; the scheduler's recursive steps continue from it
            group["lr"] = cosine.eta_min + (base - cosine.eta_min) * (1 + math.cos(math.pi * progress)) / 2
        cosine._last_lr = [group["lr"] for group in cosine.optimizer.param_groups]


def check_warmup_steps(steps: int) -> None:
    if steps < 0:
        raise ConfigError(f"train.warmup_steps must be 0 (off) or positive, got {steps}")


class Warmup:
    """Linear learning-rate warm-up over a fresh optimizer's first `steps` steps; `step` steps the optimizer.

    Adam's first updates are full-size whatever the gradient, which jolts pretrained weights (the
    loss spike at the start of phase 2). The warm-up only scales the scheduled learning rate around
    each step and puts it back, so the epoch schedule never sees it and the two compose at any
    epoch boundary."""

    def __init__(self, steps: int):
        check_warmup_steps(steps)
        self.steps, self.done = steps, 0

    def step(self, optimizer: torch.optim.Optimizer) -> None:
        if self.done >= self.steps:
            optimizer.step()
            return
        scheduled = [group["lr"] for group in optimizer.param_groups]
        for group, lr in zip(optimizer.param_groups, scheduled):
            group["lr"] = lr * (self.done + 1) / self.steps
        optimizer.step()
        for group, lr in zip(optimizer.param_groups, scheduled):
            group["lr"] = lr
        self.done += 1

    def state_dict(self) -> dict:
        return {"done": self.done}

    def load_state_dict(self, state: dict) -> None:
        self.done = int(state.get("done", self.steps))  # a state from before warm-up existed: done


@dataclass(kw_only=True)
class Stepping:
    """What a phase's loop advances besides the weights; its state is one layout in last_state.pt."""

    optimizer: torch.optim.Optimizer
    scheduler: EpochScheduler
    stopper: EarlyStopping
    generator: torch.Generator  # batch order, augmentation, mixup
    warmup: Warmup
    average: WeightAverage  # train.ema_decay; decay 0 keeps the model itself

    def stepping_state(self) -> dict:
        return {
            "weight_average": self.average.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "early_stopping": self.stopper.state_dict(),
            "generator": self.generator.get_state(),
            "warmup": self.warmup.state_dict(),
            "torch_rng": torch.get_rng_state(),  # dropout's draws continue where they stopped
        }

    def restore_stepping_state(self, state: dict) -> None:
        """Undo stepping_state; the optimizer goes first because the scheduler may rewrite its rates."""
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.stopper.load_state_dict(state["early_stopping"])
        self.generator.set_state(state["generator"])
        self.warmup.load_state_dict(state.get("warmup", {}))
        if state.get("weight_average"):  # empty when the run keeps no average
            self.average.load_state_dict(state["weight_average"])
        if "torch_rng" in state:  # states saved before it was kept resume without it
            torch.set_rng_state(state["torch_rng"])


def current_lr(optimizer: torch.optim.Optimizer) -> float:
    return float(optimizer.param_groups[0]["lr"])
