"""fit() and resume(): a run from config to metrics.json, top to bottom. The phases themselves run in
engine.py; the run directory's files are named in rundir.py."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from torch import nn

from agegender.config import RunConfig, save_config
from agegender.data.dataset import PreparedData, label_stats, prepare_data
from agegender.data.sampling import parse_sampling
from agegender.data.transforms import check_augment
from agegender.models.checkpoint import CheckpointError, build_meta, load_weights, save_checkpoint
from agegender.models.pretrained import load_pretrained_weights, resolve_weights_path
from agegender.models.registry import create_model
from agegender.models.spec import backbone_spec
from agegender.models.summary import ModelSummary, summarize_model
from agegender.training.averaging import WeightAverage, check_ema_decay
from agegender.training.callbacks import EarlyStopping, HistoryCSV
from agegender.training.distill import with_teacher_targets
from agegender.training.distributed import (
    DistributedContext,
    barrier,
    init_distributed,
    rank_console,
    shutdown_distributed,
    wrap_for_training,
)
from agegender.training.engine import (
    EpochSettings,
    Phase,
    PhaseRun,
    RunPosition,
    plan_phases,
    set_trainable,
    train_phase,
)
from agegender.training.losses import MultiTaskLoss
from agegender.training.mixup import check_mixup_alpha
from agegender.training.results import (
    FitMetrics,
    FitResult,
    PhaseSummary,
    final_val_line,
    split_report,
    timing_summary,
    train_at_best,
    write_metrics,
)
from agegender.training.resume_points import init_from_checkpoint, load_resume_point, repair_best, save_resume_point
from agegender.training.rundir import (
    BEST,
    CONFIG,
    HISTORY,
    LAST,
    METRICS,
    STATE,
    RunError,
    discard_unsaved_start,
    epoch_line,
    history_row,
    resume_config,
    run_lock,
)
from agegender.training.schedule import EpochScheduler, Warmup, check_warmup_steps, create_optimizer
from agegender.training.sources import FromBlock, build_cached_sources, image_sources

__all__ = ["FitMetrics", "FitResult", "RunError", "fit", "resume"]


def fit(
    config: RunConfig, run_dir: Path, *, data: PreparedData | None = None, console: Console | None = None
) -> FitResult:
    """Start a new run as `config` says, writing everything to `run_dir`; resumable after any epoch."""
    run_dir = Path(run_dir)
    if (run_dir / LAST).exists():
        raise RunError(f"{run_dir}: already holds a run; use --resume {run_dir} or a new --out")
    return _train(config, run_dir, resume=False, data=data, console=console)


def resume(run_dir: Path, *, model: str | None = None, epochs: int | None = None, threads: int | None = None,
           device: str | None = None, data: PreparedData | None = None,
           console: Console | None = None) -> FitResult:  # fmt: skip
    """Continue an interrupted (or finished) run from its last epoch with its own config; `epochs`
    extends it, `threads` and `device` move it, `model` only checks that the run is the one meant."""
    run_dir = Path(run_dir)
    config = resume_config(run_dir, model=model, epochs=epochs, threads=threads, device=device)
    return _train(config, run_dir, resume=True, data=data, console=console)


def _train(config: RunConfig, run_dir: Path, *, resume: bool, data: PreparedData | None,
           console: Console | None) -> FitResult:  # fmt: skip
    console = console or Console(stderr=True)
    if config.train.threads:
        torch.set_num_threads(config.train.threads)
    context = init_distributed(config.train.device)  # torchrun: join the process group
    console = rank_console(context, console)
    # Dropout draws from torch's global RNG: seed it per run (and rank) so the same command gives the
    # same weights, and give the caller its own RNG state back afterwards.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.data.seed + context.rank)
        check_options(config, resume)
        data = data or prepare_data(config.data)
        console.print(data.summary_line())
        if len(data.train) < 2 or len(data.val) < 1:
            raise RunError(f"{config.data.path}: too few images to train ({data.summary_line()})")
        if not config.train.teacher:  # a teacher gives every unlabelled image an age
            check_age_labels(data, config.data.path)
        run_dir.mkdir(parents=True, exist_ok=True)
        with run_lock(run_dir, hold=context.is_main):
            note = None if resume or not context.is_main else discard_unsaved_start(run_dir)
            if note:
                console.print(note)
            data = with_teacher_targets(data, config, console)
            if context.is_main:
                save_config(config, run_dir / CONFIG)
            return Training(config, run_dir, data, context, console).run(resume)


def check_options(config: RunConfig, resume: bool) -> None:
    """Fail on bad settings before any data is decoded or a directory made."""
    check_mixup_alpha(config.train.mixup_alpha)
    check_augment(config.augment)
    check_warmup_steps(config.train.warmup_steps)
    check_ema_decay(config.train.ema_decay)
    parse_sampling(config.data.sampling, config.data.folders())
    name = config.model.name
    with torch.random.fork_rng(devices=[]):  # a throw-away model, asked for its spec and counted for its blocks
        model = create_model(config.model)
    spec = backbone_spec(model)
    if spec is None:
        if config.model.weights:
            raise RunError(f"model '{name}' has no pretrained backbone; --weights needs one of the pretrained models")
        return
    if config.train.compile:
        raise RunError("train.compile applies to Model A (custom) runs; "
                       "two-phase fine-tuning trains on cached activations")  # fmt: skip
    if config.data.image_size < spec.min_input_size:
        raise RunError(
            f"data.image_size={config.data.image_size} is too small for {name}: it needs at least "
            f"{spec.min_input_size} px; it was trained at {spec.native_size} (--image-size {spec.native_size})"
        )
    plan_phases(model, config)
    if not resume:
        resolve_weights_path(config.model)


def check_age_labels(data: PreparedData, path: str) -> None:
    """The age head learns from exact ages and age groups; a training set with neither cannot train it."""
    if not np.isfinite(data.train.age_targets(np.arange(len(data.train)))[:, 0]).any():
        raise RunError(f"{path}: no training image has an age or an age_group label, so the age head cannot learn")


def create_run_model(config: RunConfig, context: DistributedContext) -> nn.Module:
    with torch.random.fork_rng(devices=[]):  # same seed, same initial weights, without touching global RNG
        torch.manual_seed(config.data.seed)
        model = create_model(config.model)
    if config.train.channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model.to(context.device)


@dataclass
class Training:
    """One fit() or resume() of a run directory: its model, where it stands, and the files it writes."""

    config: RunConfig
    run_dir: Path
    data: PreparedData
    context: DistributedContext
    console: Console
    position: RunPosition = field(default_factory=RunPosition)
    early_stopped: bool = False

    def __post_init__(self) -> None:
        self.model = create_run_model(self.config, self.context)
        self.history = HistoryCSV(self.run_dir / HISTORY)
        self.label_stats = label_stats(self.data.train)
        train = self.config.train
        self.settings = EpochSettings(self.config.data.seed, train.batch_size, train.mixup_alpha,
                                      MultiTaskLoss.from_config(train), self.context, self.console)  # fmt: skip

    def run(self, resume: bool) -> FitResult:
        phases = plan_phases(self.model, self.config)
        if resume:
            self.restore()
        else:
            self.initialise()
        set_trainable(self.model, phases[-1].first_trained_block)  # the summary counts what any phase trains
        summary = summarize_model(self.model, self.config.model.name, self.config.data.image_size)
        self.console.print(summary.line())
        try:
            phase_summaries = self.train_phases(phases, resume)
        except KeyboardInterrupt:
            command = f"agegender train --resume {self.run_dir}"
            self.console.print(f"interrupted after epoch {self.position.epoch}; continue with: {command}")
            raise
        metrics = self.finish(summary, phase_summaries) if self.context.is_main else None
        shutdown_distributed(self.context)  # under torchrun, other ranks wait here for rank 0's metrics.json
        metrics = metrics or FitMetrics.from_dict(json.loads((self.run_dir / METRICS).read_text()))
        return FitResult(self.run_dir, metrics.best_epoch, metrics.stopped_epoch, metrics)

    def initialise(self) -> None:
        """A new run's first weights: the pretrained backbone's, or --init's checkpoint (heads included)."""
        name, spec = self.config.model.name, backbone_spec(self.model)
        if spec is not None:
            weights = load_pretrained_weights(self.model, self.config.model)
            self.console.print(f"{name}: {spec.pretrained_on} backbone weights from {weights}")
        if self.config.train.init_from:
            init_from_checkpoint(self.model, Path(self.config.train.init_from), name)
            self.console.print(f"initial weights from {self.config.train.init_from}")

    def restore(self) -> None:
        saved, note = load_resume_point(self.model, self.run_dir / LAST, self.run_dir / STATE)
        if note:
            self.console.print(note)
        self.position = RunPosition.from_state(saved)
        if self.context.is_main:
            self.history.truncate_after(self.position.epoch)
        self.console.print(f"resumed {self.run_dir} after epoch {self.position.epoch}")

    def train_phases(self, phases: list[Phase], resume: bool) -> list[PhaseSummary]:
        summaries, pending, first = [], {}, self.position.phase_index
        for index, phase in enumerate(phases):
            if index < first:  # finished before this --resume
                summaries.append(PhaseSummary(phase.name, phase.lr, phase.first_trained_block))
                continue
            if index > self.position.phase_index:  # a new phase starts from the best weights so far
                barrier(self.context)  # written by rank 0
                if (self.run_dir / BEST).exists():  # else no epoch ran yet (phases of 0 epochs after --init)
                    load_weights(self.model, self.run_dir / BEST)
                self.position.phase_index, self.position.phase_epoch, self.position.saved = index, 0, {}
            run = self.start_phase(index, phase)
            # the resumed state's validated weights are known only now
            if resume and index == first and self.context.is_main:
                note = repair_best(self.run_dir / BEST, self.run_dir / LAST, run.average.evaluated,
                                   self.position.best_epoch, self.position.epoch)  # fmt: skip
                if note:
                    self.console.print(note)
            later = tuple(p.first_trained_block for p in phases[index + 1 :] if p.first_trained_block is not None)
            summaries.append(self.train_phase(run, later, pending))
        return summaries

    def start_phase(self, index: int, phase: Phase) -> PhaseRun:
        config, model, first = self.config.train, self.model, phase.first_trained_block
        optimizer = create_optimizer(set_trainable(model, first), config, lr=phase.lr)
        trained = FromBlock(model, first) if phase.named else model  # a pretrained model's phase: BatchNorm frozen
        run = PhaseRun(
            phase=phase,
            optimizer=optimizer,
            scheduler=EpochScheduler(optimizer, config, phase.epochs),
            stopper=EarlyStopping(config.early_stopping_patience, config.min_delta),
            generator=torch.Generator().manual_seed(self.config.data.seed + 7919 * index),
            warmup=Warmup(config.warmup_steps),
            average=WeightAverage(model, config.ema_decay),
            train_module=wrap_for_training(trained, self.context),
        )
        # train.compile: only what training steps run through; evaluation and checkpoints use the plain module,
        # which shares its weights. On this project's 2-core CPU it did not pay (README, Training speed).
        if config.compile:
            run.train_module = torch.compile(run.train_module)
        if self.position.saved:  # resuming inside this phase
            run.restore_stepping_state(self.position.saved)
        return run

    def train_phase(self, run: PhaseRun, later: tuple[int | None, ...], pending: dict) -> PhaseSummary:
        """Train one phase to its epoch limit or early stop; returns its summary for metrics.json."""
        phase = run.phase
        trainable = sum(p.numel() for p in self.model.parameters() if p.requires_grad)
        summary = PhaseSummary(phase.name, phase.lr, phase.first_trained_block, trainable)
        self.early_stopped |= run.stopper.should_stop
        if run.done(self.position):
            return summary
        cache_seconds = self.attach_sources(run, later, pending)
        train_phase(run, self.position, self.settings, self.save_epoch)
        self.early_stopped |= run.stopper.should_stop
        return PhaseSummary(phase.name, phase.lr, phase.first_trained_block, trainable, cache_seconds,
                            self.position.epoch, run.stopper.should_stop, run.stopper.best_epoch)  # fmt: skip

    def attach_sources(self, run: PhaseRun, later: tuple[int | None, ...], pending: dict) -> float | None:
        """The phase's batch sources; activations are cached for this phase and the later ones in one
        pass, unless an earlier phase did. Returns the seconds spent caching, if any."""
        first = run.phase.first_trained_block
        if first is None:
            run.train, run.val = image_sources(self.data, self.config, self.context)
            return None
        seconds = None
        if first not in pending:
            start = time.perf_counter()
            pending.update(build_cached_sources(self.model, (first, *later), self.data, self.config, self.context))
            seconds = time.perf_counter() - start
            self.position.cache_seconds += seconds
            shapes = ", ".join(str(tuple(train.cache.shape)) for train, _ in pending.values())
            self.console.print(f"{run.phase.name}: cached frozen activations {shapes} in {seconds:.1f}s")
        run.train, run.val = pending.pop(first)
        return seconds

    def save_epoch(self, run: PhaseRun, train, val, lr: float, is_best: bool) -> None:
        """The epoch's history row, last weights with the training state, then the best weights if they are."""
        epoch, phase = self.position.epoch, run.phase.name
        named = {"phase": phase} if run.phase.named else {}
        self.console.print(f"{phase} " * bool(named) + epoch_line(epoch, train, val, lr, is_best))
        if not self.context.is_main:  # under torchrun only rank 0 writes
            return
        self.history.append(history_row(epoch, train, val, lr, phase))
        meta = build_meta(self.model, self.config, label_stats=self.label_stats, epoch=epoch, **named)
        save_resume_point(self.run_dir / LAST, self.run_dir / STATE, self.model, meta,
                          {**self.position.state_dict(), **run.stepping_state()})  # fmt: skip
        # the validated weights (the phase's average with train.ema_decay), after the state: see repair_best
        if is_best:
            save_checkpoint(self.run_dir / BEST, run.average.evaluated, meta)

    def finish(self, summary: ModelSummary, phases: list[PhaseSummary]) -> FitMetrics:
        """Restore the best weights, measure them on val/test, write metrics.json and the curves."""
        best_path = self.run_dir / BEST
        if not best_path.exists():
            raise CheckpointError(f"{best_path}: no best checkpoint was written")
        set_trainable(self.model, None)
        load_weights(self.model, best_path)
        rows, best, data, cl = self.history.rows(), self.position.best_epoch, self.data, self.config.train.channels_last
        two_phase = backbone_spec(self.model) is not None
        metrics = FitMetrics(
            model=summary, best_epoch=best, stopped_epoch=self.position.epoch, early_stopped=self.early_stopped,
            split_sizes={"train": len(data.train), "val": len(data.val), "test": len(data.test)},
            data_summary=data.summary_line(), train_at_best=train_at_best(rows, best),
            val=split_report(self.model, data.val, cl, data.read), test=split_report(self.model, data.test, cl, data.read),
            timing=timing_summary(rows, best, len(data.train), self.config.train.batch_size),
            phases=tuple(phases) if two_phase else None,
            feature_cache_seconds=self.position.cache_seconds if two_phase else None,
        )  # fmt: skip
        write_metrics(metrics, self.run_dir, self.config.model.name)
        self.console.print(f"best epoch {metrics.best_epoch}: {final_val_line(metrics.val)}; wrote {self.run_dir}")
        return metrics
