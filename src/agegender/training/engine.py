"""The phase runner: every model trains as a sequence of phases, each a batch source, the parameters
it trains and its own stepping (optimizer, schedule, early stopping, warm-up, weight average).

    Model A (custom, levi_hassner)  one phase "train": the whole model on augmented images
    Model B (pretrained backbones)  phase1: the heads on the frozen backbone's cached features;
                                    phase2: the last `model.unfreeze_blocks` blocks too, at a lower rate;
                                    end_to_end (train.end_to_end_epochs > 0): every block, on augmented images

One epoch loop serves all (batch sources: sources.py; torchrun: distributed.py). Epochs count on
across phases; best.safetensors holds the best validated weights of any phase (with train.ema_decay
each phase's weight average, started afresh at the phase's first weights); a new phase starts from them.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from torch import nn

from agegender.config import RunConfig
from agegender.models.spec import backbone_spec
from agegender.training.distributed import DistributedContext, broadcast_buffers, rank_epoch, reduce_running_means
from agegender.training.loop import EpochMetrics, RunningMeans
from agegender.training.losses import MultiTaskLoss
from agegender.training.mixup import forward_and_loss
from agegender.training.schedule import Stepping, current_lr
from agegender.training.sources import Batch, CachedBatches, FinetuneError, FromBlock, ImageBatches


@dataclass(frozen=True)
class Phase:
    name: str  # "train" (Model A) | "phase1" | "phase2" | "end_to_end"
    first_trained_block: int | None  # None: the whole model, on images; else blocks before it are frozen and cached
    epochs: int
    lr: float

    @property
    def named(self) -> bool:
        """Model A's one phase goes unnamed in history and progress; a pretrained model's phases are named."""
        return self.name != "train"


def plan_phases(model: nn.Module, config: RunConfig) -> list[Phase]:
    phases = pretrained_phases(model, config) if backbone_spec(model) is not None else [
        Phase("train", None, config.train.epochs, config.train.lr)]  # fmt: skip
    if not any(phase.epochs for phase in phases):
        names = ", ".join(phase.name for phase in phases)
        raise FinetuneError(f"no epochs to train in any phase ({names}): raise train.epochs")
    return phases


def pretrained_phases(model: nn.Module, config: RunConfig) -> list[Phase]:
    blocks, unfreeze = len(model.backbone), config.model.unfreeze_blocks
    if not 0 <= unfreeze <= blocks:
        raise FinetuneError(
            f"model.unfreeze_blocks={unfreeze}, but the {config.model.name} backbone has {blocks} blocks "
            f"(stem, residual blocks or stages, head); choose 0..{blocks}"
        )
    if config.train.feature_views < 1:
        raise FinetuneError(f"train.feature_views must be at least 1, got {config.train.feature_views}")
    phases = [Phase("phase1", blocks, config.train.epochs, config.train.lr)]
    finetune_lr = config.train.finetune_lr if config.train.finetune_lr is not None else config.train.lr / 10
    if unfreeze:
        epochs = config.train.finetune_epochs if config.train.finetune_epochs is not None else config.train.epochs
        phases.append(Phase("phase2", blocks - unfreeze, epochs, finetune_lr))
    if config.train.end_to_end_epochs:
        lr = config.train.end_to_end_lr if config.train.end_to_end_lr is not None else finetune_lr
        phases.append(Phase("end_to_end", None, config.train.end_to_end_epochs, lr))
    return phases


def set_trainable(model: nn.Module, first_trained_block: int | None) -> list[nn.Parameter]:
    """Freeze the backbone before `first_trained_block` (None: nothing); return the parameters left to train."""
    if first_trained_block is None:
        return [p.requires_grad_(True) for p in model.parameters()]
    for index, block in enumerate(model.backbone):
        for parameter in block.parameters():
            parameter.requires_grad_(index >= first_trained_block)
    return [p for p in model.parameters() if p.requires_grad]


@dataclass
class RunPosition:
    """Where a run stands; saved after every epoch in last_state.pt for --resume."""

    phase_index: int = 0
    phase_epoch: int = 0
    epoch: int = 0  # counts on across phases (history.csv's epoch column)
    best_val_loss: float = math.inf
    best_epoch: int = 0
    cache_seconds: float = 0.0  # activation caching so far, all sessions (history.csv holds epoch times only)
    saved: dict[str, Any] = field(default_factory=dict)  # the resumed phase's stepping state

    def state_dict(self) -> dict[str, Any]:
        keys = ("phase_index", "phase_epoch", "epoch", "best_val_loss", "best_epoch", "cache_seconds")
        return {key: getattr(self, key) for key in keys}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> RunPosition:
        """Either layout of 77dbc71 too: its Model A states had no phase fields (their run's best is
        their early stopping's, their epochs the one phase's); its two-phase states had them all."""
        stopper = state.get("early_stopping", {})
        return cls(
            phase_index=int(state.get("phase_index", 0)),
            phase_epoch=int(state.get("phase_epoch", state["epoch"])),
            epoch=int(state["epoch"]),
            best_val_loss=float(state.get("best_val_loss", stopper.get("best", math.inf))),
            best_epoch=int(state.get("best_epoch", stopper.get("best_epoch", 0))),
            cache_seconds=float(state.get("cache_seconds", 0.0)),
            saved=state,
        )

    def record(self, val_loss: float, min_delta: float) -> bool:
        """Count an epoch; True when its validated weights are the run's best so far."""
        self.epoch, self.phase_epoch = self.epoch + 1, self.phase_epoch + 1
        if val_loss < self.best_val_loss - min_delta or self.best_epoch == 0:
            self.best_val_loss, self.best_epoch = val_loss, self.epoch
            return True
        return False


BatchSource = ImageBatches | CachedBatches  # len(), epoch_shard(), train_batches(), eval_batches()


@dataclass(kw_only=True)
class PhaseRun(Stepping):
    """One phase's stepping and what it steps over."""

    phase: Phase
    train_module: nn.Module  # what training steps call: the model or its FromBlock, under DDP / torch.compile
    train: BatchSource | None = None  # attached once the phase has epochs left (caching can take minutes)
    val: BatchSource | None = None

    @property
    def evaluated(self) -> nn.Module:
        """The validated (and saved-as-best) weights, as this phase's batches enter them."""
        model = self.average.evaluated
        return model if self.phase.first_trained_block is None else FromBlock(model, self.phase.first_trained_block)

    def done(self, position: RunPosition) -> bool:
        return self.stopper.should_stop or position.phase_epoch >= self.phase.epochs


OnBatch = Callable[[int, RunningMeans], None]


def train_epoch(run: PhaseRun, batches: Iterable[Batch], loss_fn: MultiTaskLoss, mixup_alpha: float,
                generator: torch.Generator, on_batch: OnBatch | None = None,
                context: DistributedContext = DistributedContext()) -> EpochMetrics:  # fmt: skip
    """One pass over the batches: forward (mixup blends when alpha > 0), backward, one optimizer step each;
    under torchrun the metrics of every rank's batches together."""
    run.train_module.train()
    start, means = time.perf_counter(), RunningMeans()
    for x, age, gender in batches:
        output, parts = forward_and_loss(run.train_module, x, age, gender, loss_fn, alpha=mixup_alpha,
                                         generator=generator)  # fmt: skip
        run.optimizer.zero_grad(set_to_none=True)
        parts.total.backward()
        run.warmup.step(run.optimizer)  # the optimizer's step, its learning rate scaled while warming up
        run.average.update()
        means.update(parts, output, age, gender)
        if on_batch is not None:
            on_batch(len(x), means)
    reduce_running_means(means, context)
    return means.result(time.perf_counter() - start)


@torch.no_grad()
def evaluate(model: nn.Module, source: BatchSource, loss_fn: MultiTaskLoss,
             context: DistributedContext = DistributedContext()) -> EpochMetrics:  # fmt: skip
    """Loss and metrics of `model` over the source's evaluation batches; under torchrun over each rank's
    share, with sums and counts added across ranks (equal to one process, up to summation order)."""
    broadcast_buffers(model, context)
    model.eval()
    start, means = time.perf_counter(), RunningMeans()
    for x, age, gender in source.eval_batches():
        output = model(x)
        means.update(loss_fn(output, age, gender), output, age, gender)
    reduce_running_means(means, context)
    return means.result(time.perf_counter() - start)


def progress_bar(console: Console) -> Progress:
    description, stats = TextColumn("[bold]{task.description}"), TextColumn("{task.fields[stats]}")
    columns = (description, BarColumn(), MofNCompleteColumn(), stats, TimeElapsedColumn(), TimeRemainingColumn())
    return Progress(*columns, console=console, transient=True)


@dataclass(frozen=True)
class EpochSettings:
    """What an epoch needs besides the phase: from the run's config, and where it runs."""

    seed: int
    batch_size: int
    mixup_alpha: float
    loss_fn: MultiTaskLoss
    context: DistributedContext
    console: Console


def run_epoch(run: PhaseRun, epoch: int, settings: EpochSettings) -> tuple[EpochMetrics, EpochMetrics]:
    """Train one epoch and validate the weights it ends with: (train metrics, val metrics)."""
    context, train, generator, batch_size = settings.context, run.train, run.generator, settings.batch_size
    if context.enabled:  # this rank's share, with its own batch size and generator
        train = train.epoch_shard(run.generator, context)
        batch_size, generator = rank_epoch(batch_size, settings.seed, epoch, context)
    with progress_bar(settings.console) as progress:
        named = f"{run.phase.name} " if run.phase.named else ""  # epochs count on across phases
        task = progress.add_task(f"{named}epoch {epoch}", total=len(train), stats="")
        batches = train.train_batches(batch_size, generator)
        train_metrics = train_epoch(run, batches, settings.loss_fn, settings.mixup_alpha, generator, context=context,
                                    on_batch=lambda n, means: progress.update(task, advance=n, stats=means.short()))
    return train_metrics, evaluate(run.evaluated, run.val, settings.loss_fn, context)


SaveEpoch = Callable[[PhaseRun, EpochMetrics, EpochMetrics, float, bool], None]


def train_phase(run: PhaseRun, position: RunPosition, settings: EpochSettings, save_epoch: SaveEpoch) -> None:
    """Epochs until the phase's limit or early stop; `save_epoch` writes each one's row and checkpoints."""
    while not run.done(position):
        train_metrics, val_metrics = run_epoch(run, position.epoch + 1, settings)
        lr = current_lr(run.optimizer)  # the epoch's, before the schedule steps
        is_best = position.record(val_metrics.loss, run.stopper.min_delta)  # the run's best, across phases
        run.stopper.update(val_metrics.loss, position.epoch)
        run.scheduler.epoch_end(val_metrics.loss)
        save_epoch(run, train_metrics, val_metrics, lr, is_best)
    if run.stopper.should_stop:
        stopped = f"early stopping at epoch {position.epoch}; best epoch {position.best_epoch}"
        settings.console.print(f"{run.phase.name}: {stopped}")
