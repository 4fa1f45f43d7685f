"""Two-phase fine-tuning of a pretrained backbone, fast on a CPU because frozen work is done once.

    phase1  backbone frozen, heads trained on pooled backbone features computed ONCE per view
    phase2  the last `model.unfreeze_blocks` backbone blocks unfrozen at a lower learning rate,
            trained on activations cached up to the first unfrozen block

Augmentation becomes a fixed pool of `train.feature_views` views per training image (original,
horizontally flipped, then randomly augmented ones); each epoch draws one view per image. Caching is
exact because frozen layers, BatchNorm included, run in eval mode. BatchNorm layers inside the unfrozen
blocks stay in eval mode too (running statistics kept, scale and shift trained): the usual advice for
fine-tuning with small batches, and what makes the cached phase-2 activations valid.

Each phase has its own optimizer, schedule and early stopping; history.csv rows carry the phase name
and epochs count on across phases; best.safetensors holds the best weights of either phase (with
train.ema_decay, each phase's weight average, started afresh at the phase's first weights).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console
from torch import nn

from agegender.config import AugmentConfig, RunConfig
from agegender.data.dataset import LabelledArrays, PreparedData, label_stats
from agegender.data.transforms import augment_batch, to_model_input
from agegender.errors import UserInputError
from agegender.models.checkpoint import (
    build_meta,
    init_from_checkpoint,
    load_resume_point,
    load_weights,
    repair_best,
    save_checkpoint,
    save_resume_point,
)
from agegender.models.heads import ModelOutput
from agegender.models.pretrained import BACKBONES, load_pretrained_weights
from agegender.models.registry import create_model
from agegender.models.summary import summarize_model
from agegender.training.averaging import WeightAverage
from agegender.training.callbacks import EarlyStopping, HistoryCSV
from agegender.training.distributed import DistributedContext
from agegender.training.loop import EpochMetrics, RunningMeans, batch_indices, batch_labels, model_device
from agegender.training.losses import MultiTaskLoss
from agegender.training.mixup import forward_and_loss
from agegender.training.schedule import (
    EpochScheduler,
    Stepping,
    Warmup,
    create_optimizer,
    current_lr,
    optimizer_step,
)

MAX_CACHE_BYTES = 4 * 2**30  # activations kept in memory; beyond this, ask for fewer views or blocks


class FinetuneError(UserInputError):
    """A fine-tuning setting cannot work with this model or data."""


@dataclass(frozen=True)
class Phase:
    name: str  # "phase1" | "phase2"
    first_trained_block: int  # backbone blocks before this index are frozen (and cached)
    epochs: int
    lr: float


def plan_phases(model: nn.Module, config: RunConfig) -> list[Phase]:
    blocks = len(model.backbone)
    unfreeze = config.model.unfreeze_blocks
    if not 0 <= unfreeze <= blocks:
        raise FinetuneError(
            f"model.unfreeze_blocks={unfreeze}, but the {config.model.name} backbone has {blocks} blocks "
            f"(stem, residual blocks or stages, head); choose 0..{blocks}"
        )
    if config.train.feature_views < 1:
        raise FinetuneError(f"train.feature_views must be at least 1, got {config.train.feature_views}")
    phases = [Phase("phase1", blocks, config.train.epochs, config.train.lr)]
    if unfreeze:
        lr = config.train.finetune_lr if config.train.finetune_lr is not None else config.train.lr / 10
        epochs = config.train.finetune_epochs if config.train.finetune_epochs is not None else config.train.epochs
        phases.append(Phase("phase2", blocks - unfreeze, epochs, lr))
    return phases


def set_trainable(model: nn.Module, first_trained_block: int) -> list[nn.Parameter]:
    """Freeze the backbone before `first_trained_block`; return the parameters left to train."""
    for index, block in enumerate(model.backbone):
        for parameter in block.parameters():
            parameter.requires_grad_(index >= first_trained_block)
    return [p for p in model.parameters() if p.requires_grad]


def set_train_mode(model: nn.Module) -> None:
    """Dropout in the heads trains; every BatchNorm keeps its running statistics (see module doc)."""
    model.eval()
    model.gender_head.train()
    model.age_head.train()


# ----------------------------------------------------------------------------- caching


def make_view(x: torch.Tensor, view: int, augment: AugmentConfig, generator: torch.Generator) -> torch.Tensor:
    """View 0: the image; view 1: mirrored; later views: random training augmentation."""
    if view == 0:
        return x
    if view == 1:
        return x.flip(-1)
    return augment_batch(x, augment, generator)


@torch.no_grad()
def frozen_prefix(model: nn.Module, x: torch.Tensor, split_points: tuple[int, ...]) -> dict[int, torch.Tensor]:
    """Activations entering each block index in `split_points`, from one pass through the backbone;
    at index len(backbone) (every block frozen) the pooled (B, C) features."""
    outputs, activations, done = {}, model.normalize(x), 0
    for point in sorted(split_points):
        activations = model.backbone[done:point](activations)  # (B, C, h, w)
        done = point
        outputs[point] = model.pool(activations).flatten(1) if point == len(model.backbone) else activations
    return outputs


@torch.no_grad()
def cache_activations(
    model: nn.Module,
    images: np.ndarray,
    split_points: tuple[int, ...],
    views: int,
    augment: AugmentConfig,
    generator: torch.Generator,
    channels_last: bool,
    batch_size: int = 128,
) -> dict[int, torch.Tensor]:
    """split point -> (views, N, ...) frozen-prefix activations of uint8 (N, S, S, 3) images, computed once."""
    model.eval()
    caches: dict[int, torch.Tensor] = {}
    device = model_device(model)
    for begin in range(0, len(images), batch_size):
        x = to_model_input(images[begin : begin + batch_size], channels_last)
        for view in range(views):  # views are made on the CPU (the generator's), the cache lives there too
            outputs = frozen_prefix(model, make_view(x, view, augment, generator).to(device), split_points)
            for point, out in outputs.items():
                if point not in caches:
                    caches[point] = allocate_cache(views, len(images), out.shape[1:])
                caches[point][view, begin : begin + len(out)] = out.cpu()
    return caches


def allocate_cache(views: int, n: int, shape: torch.Size) -> torch.Tensor:
    nbytes = views * n * int(np.prod(shape)) * 4
    if nbytes > MAX_CACHE_BYTES:
        raise FinetuneError(
            f"caching {views} views x {n} images of {tuple(shape)} activations needs {nbytes / 2**30:.1f} GiB; "
            "lower train.feature_views, model.unfreeze_blocks or data.image_size"
        )
    return torch.empty(views, n, *shape)


def forward_from(model: nn.Module, activations: torch.Tensor, first_trained_block: int) -> ModelOutput:
    """The rest of the network from cached activations: unfrozen blocks, pooling, heads."""
    if first_trained_block == len(model.backbone):
        features = activations  # (B, C) already pooled
    else:
        features = model.pool(model.backbone[first_trained_block:](activations)).flatten(1)  # (B, C)
    return model.heads(features)


def _batch(cache: torch.Tensor, views: torch.Tensor, index: torch.Tensor, channels_last: bool, device) -> torch.Tensor:
    x = cache[views, index].to(device)
    return x.contiguous(memory_format=torch.channels_last) if x.dim() == 4 and channels_last else x


# ----------------------------------------------------------------------------- epochs


def train_cached_epoch(
    model: nn.Module,
    phase: Phase,
    cache: torch.Tensor,
    labels: LabelledArrays,
    loss_fn: MultiTaskLoss,
    optimizer: torch.optim.Optimizer,
    *,
    batch_size: int,
    generator: torch.Generator,
    channels_last: bool,
    mixup_alpha: float = 0.0,
    warmup: Warmup | None = None,
    average: WeightAverage | None = None,
) -> EpochMetrics:
    """One pass over the training images, each seen through one randomly drawn cached view."""
    set_train_mode(model)
    start, means, device = time.perf_counter(), RunningMeans(), model_device(model)
    view_of = torch.randint(cache.shape[0], (cache.shape[1],), generator=generator)  # (N,)

    def forward(activations: torch.Tensor) -> ModelOutput:
        return forward_from(model, activations, phase.first_trained_block)

    for index in batch_indices(cache.shape[1], batch_size, generator):
        if len(index) < 2:
            continue
        x = _batch(cache, view_of[index], index, channels_last, device)  # (B, C) or (B, C, h, w)
        age, gender = batch_labels(labels, index, device)
        output, parts = forward_and_loss(forward, x, age, gender, loss_fn, alpha=mixup_alpha, generator=generator)
        optimizer.zero_grad(set_to_none=True)
        parts.total.backward()
        optimizer_step(optimizer, warmup, average)
        means.update(parts, ModelOutput(output.gender_logit.detach(), output.age.detach()), age, gender)
    return means.result(time.perf_counter() - start)


@torch.no_grad()
def evaluate_cached(
    model: nn.Module,
    phase: Phase,
    cache: torch.Tensor,
    labels: LabelledArrays,
    loss_fn: MultiTaskLoss,
    *,
    channels_last: bool,
    batch_size: int = 256,
) -> EpochMetrics:
    model.eval()
    start, means, device = time.perf_counter(), RunningMeans(), model_device(model)
    for index in batch_indices(cache.shape[1], batch_size, None):
        x = _batch(cache, torch.zeros_like(index), index, channels_last, device)  # the one val view
        output = forward_from(model, x, phase.first_trained_block)
        age, gender = batch_labels(labels, index, device)
        means.update(loss_fn(output, age, gender), output, age, gender)
    return means.result(time.perf_counter() - start)


# ----------------------------------------------------------------------------- state and phases


@dataclass
class Progress:
    """Where a two-phase run stands; saved after every epoch for --resume."""

    phase_index: int = 0
    phase_epoch: int = 0
    epoch: int = 0  # counts on across phases (history.csv's epoch column)
    best_val_loss: float = float("inf")
    best_epoch: int = 0
    cache_seconds: float = 0.0  # feature caching so far, all sessions (history.csv holds epoch times only)
    saved: dict[str, Any] = field(default_factory=dict)  # the phase's optimizer/scheduler/stopper state


@dataclass(kw_only=True)
class PhaseRun(Stepping):
    """One phase's stepping; train.ema_decay's average starts afresh from the phase's first weights."""

    phase: Phase

    def done(self, progress: Progress) -> bool:
        return self.stopper.should_stop or progress.phase_epoch >= self.phase.epochs


def start_phase(model, phase: Phase, config: RunConfig, progress: Progress) -> PhaseRun:
    parameters = set_trainable(model, phase.first_trained_block)
    optimizer = create_optimizer(parameters, config.train, lr=phase.lr)
    run = PhaseRun(
        phase=phase,
        optimizer=optimizer,
        scheduler=EpochScheduler(optimizer, config.train, phase.epochs),
        stopper=EarlyStopping(config.train.early_stopping_patience, config.train.min_delta),
        generator=torch.Generator().manual_seed(config.data.seed + 7919 * progress.phase_index),
        warmup=Warmup(config.train.warmup_steps),
        average=WeightAverage(model, config.train.ema_decay),
    )
    if progress.saved:  # resuming inside this phase
        run.restore_stepping_state(progress.saved)
    return run


def training_state(progress: Progress, run: PhaseRun) -> dict[str, Any]:
    return {
        "kind": "two_phase",
        "phase_index": progress.phase_index,
        "phase_epoch": progress.phase_epoch,
        "epoch": progress.epoch,
        "best_val_loss": progress.best_val_loss,
        "best_epoch": progress.best_epoch,
        "cache_seconds": progress.cache_seconds,
        **run.stepping_state(),
    }


def restore_progress(model: nn.Module, run_dir: Path, console: Console) -> Progress:
    from agegender.training.fit import LAST, STATE, RunError

    state, note = load_resume_point(model, run_dir / LAST, run_dir / STATE)
    if note:
        console.print(note)
    if state.get("kind") != "two_phase":
        raise RunError(f"{run_dir}: training state is not from a two-phase (pretrained) run; cannot resume it here")
    return Progress(
        phase_index=int(state["phase_index"]),
        phase_epoch=int(state["phase_epoch"]),
        epoch=int(state["epoch"]),
        best_val_loss=float(state["best_val_loss"]),
        best_epoch=int(state["best_epoch"]),
        cache_seconds=float(state.get("cache_seconds", 0.0)),
        saved=state,
    )


@dataclass(frozen=True)
class Caches:
    train: torch.Tensor  # (views, N, ...)
    val: torch.Tensor  # (1, N, ...)


def build_caches(model, split_points: tuple[int, ...], data: PreparedData, config: RunConfig) -> dict[int, Caches]:
    """Caches for every split point in one pass: phase 1 also prepares phase 2's (its prefix stays frozen)."""
    views_generator = torch.Generator().manual_seed(config.data.seed)  # same views in both phases, and on resume
    cl, augment = config.train.channels_last, config.augment
    train = cache_activations(model, data.train.images, split_points, config.train.feature_views, augment, views_generator, cl)
    val = cache_activations(model, data.val.images, split_points, 1, augment, views_generator, cl)
    if not train or not val:
        raise FinetuneError("no training or validation images to cache")
    return {point: Caches(train[point], val[point]) for point in split_points}


def run_phase(
    model: nn.Module,
    run: PhaseRun,
    progress: Progress,
    data: PreparedData,
    config: RunConfig,
    run_dir: Path,
    history: HistoryCSV,
    meta_base: dict[str, Any],
    console: Console,
    pending: dict[int, Caches],  # caches built earlier (phase 1 builds phase 2's in the same pass)
    later_points: tuple[int, ...],  # split points of the phases after this one
) -> dict[str, Any]:
    """Train one phase to its epoch limit or early stop; returns its summary for metrics.json."""
    from agegender.training.fit import BEST, LAST, STATE, epoch_line, history_row

    phase = run.phase
    summary = {"name": phase.name, "lr": phase.lr, "first_trained_block": phase.first_trained_block,
               "trainable_parameters": sum(p.numel() for p in model.parameters() if p.requires_grad)}  # fmt: skip
    if run.done(progress):
        return summary
    if phase.first_trained_block not in pending:
        start = time.perf_counter()
        pending.update(build_caches(model, (phase.first_trained_block, *later_points), data, config))
        summary["cache_seconds"] = time.perf_counter() - start
        progress.cache_seconds += summary["cache_seconds"]
        shapes = ", ".join(str(tuple(c.train.shape)) for c in pending.values())
        console.print(f"{phase.name}: cached frozen activations {shapes} in {summary['cache_seconds']:.1f}s")
    caches = pending.pop(phase.first_trained_block)
    loss_fn = MultiTaskLoss.from_config(config.train)
    cl = config.train.channels_last
    while not run.done(progress):
        train = train_cached_epoch(model, phase, caches.train, data.train, loss_fn, run.optimizer,
                                   batch_size=config.train.batch_size, generator=run.generator, channels_last=cl,
                                   mixup_alpha=config.train.mixup_alpha, warmup=run.warmup,
                                   average=run.average)  # fmt: skip
        val = evaluate_cached(run.average.evaluated, phase, caches.val, data.val, loss_fn, channels_last=cl)
        progress.epoch, progress.phase_epoch = progress.epoch + 1, progress.phase_epoch + 1
        lr = current_lr(run.optimizer)
        run.stopper.update(val.loss, progress.epoch)
        run.scheduler.epoch_end(val.loss)
        is_best = val.loss < progress.best_val_loss - config.train.min_delta or progress.best_epoch == 0
        if is_best:
            progress.best_val_loss, progress.best_epoch = val.loss, progress.epoch
        history.append(history_row(progress.epoch, train, val, lr, phase=phase.name))
        console.print(f"{phase.name} " + epoch_line(progress.epoch, train, val, lr, is_best))
        meta = build_meta(model, config, **meta_base, epoch=progress.epoch, phase=phase.name)
        save_resume_point(run_dir / LAST, run_dir / STATE, model, meta, training_state(progress, run))
        if is_best:  # the validated weights: the phase's average when train.ema_decay keeps one; after the state
            save_checkpoint(run_dir / BEST, run.average.evaluated, meta)
    summary["stopped_epoch"] = progress.epoch
    summary["early_stopped"] = run.stopper.should_stop
    summary["best_epoch_in_phase"] = run.stopper.best_epoch
    return summary


@dataclass
class _Stop:
    best_epoch: int
    should_stop: bool


@dataclass
class _Finished:
    """What fit.finish_run reads from a training state."""

    model: nn.Module
    stopper: _Stop
    epoch: int


def fit_two_phase(
    config: RunConfig, run_dir: Path, data: PreparedData, *, resume: bool, console: Console,
    context: DistributedContext | None = None,
):  # fmt: skip
    """fit() for a pretrained backbone: phase 1 (heads) then phase 2 (last blocks); see the module doc."""
    from agegender.training.fit import BEST, LAST, finish_run

    with torch.random.fork_rng(devices=[]):  # same seed, same head initialisation; global RNG untouched
        torch.manual_seed(config.data.seed)
        model = create_model(config.model)
    if config.train.channels_last:
        model = model.to(memory_format=torch.channels_last)
    model = model.to((context or DistributedContext()).device)
    phases = plan_phases(model, config)
    history = HistoryCSV(run_dir / "history.csv")
    if resume:
        progress = restore_progress(model, run_dir, console)
        history.truncate_after(progress.epoch)
        console.print(f"resumed {run_dir} after epoch {progress.epoch} ({phases[progress.phase_index].name})")
    else:
        weights = load_pretrained_weights(model, config.model)
        pretrained_on = BACKBONES[config.model.name].pretrained_on
        console.print(f"{config.model.name}: {pretrained_on} backbone weights from {weights}")
        if config.train.init_from:  # a trained model of this backbone replaces them, heads included
            init_from_checkpoint(model, Path(config.train.init_from), config.model.name)
            console.print(f"initial weights from {config.train.init_from}")
        progress = Progress()
    set_trainable(model, phases[-1].first_trained_block)
    summary = summarize_model(model, config.model.name, config.data.image_size)  # trainable: in any phase
    console.print(summary.line())
    meta_base = dict(label_stats=label_stats(data.train))

    phase_summaries, pending, first_phase = [], {}, progress.phase_index
    for index, phase in enumerate(phases):
        if index < progress.phase_index:  # finished before this --resume
            phase_summaries.append({"name": phase.name, "lr": phase.lr, "first_trained_block": phase.first_trained_block})
            continue
        if index > progress.phase_index:  # a new phase starts from the best weights so far
            load_weights(model, run_dir / BEST)
            progress.phase_index, progress.phase_epoch, progress.saved = index, 0, {}
        run = start_phase(model, phase, config, progress)
        if resume and index == first_phase:  # the resumed state's own validated weights are known only now
            evaluated = run.average.evaluated
            note = repair_best(run_dir / BEST, run_dir / LAST, evaluated, progress.best_epoch, progress.epoch)
            if note:
                console.print(note)
        later = tuple(p.first_trained_block for p in phases[index + 1 :])
        summary_of_phase = run_phase(model, run, progress, data, config, run_dir, history, meta_base, console, pending, later)
        phase_summaries.append(summary_of_phase)
        if run.stopper.should_stop:
            console.print(f"{phase.name}: early stopping at epoch {progress.epoch}")
    for parameter in model.parameters():
        parameter.requires_grad_(True)
    early_stopped = any(s.get("early_stopped") for s in phase_summaries)
    finished = _Finished(model, _Stop(progress.best_epoch, early_stopped), progress.epoch)
    extra = {"phases": phase_summaries, "feature_cache_seconds": progress.cache_seconds}
    return finish_run(finished, data, config, run_dir, summary, console, extra=extra)
