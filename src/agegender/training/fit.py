"""fit(): the training loop, top to bottom. A run directory holds everything a run produces:

    config.yaml  history.csv  best.safetensors  last.safetensors  last_state.pt
    metrics.json  learning_curves.png
"""

from __future__ import annotations

import json
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from torch import nn

from agegender.config import RunConfig, apply_mapping, load_config, save_config
from agegender.data.dataset import PreparedData, label_stats, prepare_data
from agegender.training.distill import with_teacher_targets
from agegender.data.transforms import check_augment
from agegender.errors import UserInputError
from agegender.evaluation.plots import plot_learning_curves
from agegender.evaluation.report import build_report, report_to_dict
from agegender.models.checkpoint import (
    CheckpointError,
    build_meta,
    init_from_checkpoint,
    load_resume_point,
    load_weights,
    repair_best,
    save_checkpoint,
    save_resume_point,
)
from agegender.models.pretrained import BACKBONES, is_pretrained, resolve_weights_path
from agegender.models.registry import create_model
from agegender.models.summary import ModelSummary, summarize_model
from agegender.training.averaging import WeightAverage, check_ema_decay
from agegender.training.callbacks import EarlyStopping, HistoryCSV
from agegender.training.distributed import (
    DistributedContext,
    epoch_shard,
    evaluate_sharded,
    init_distributed,
    per_rank_batch_size,
    rank_console,
    rank_generator,
    reduce_epoch_metrics,
    shutdown_distributed,
    take,
    wrap_for_training,
)
from agegender.training.loop import EpochMetrics, evaluate_epoch, predict_arrays, train_one_epoch
from agegender.training.losses import MultiTaskLoss
from agegender.training.mixup import check_mixup_alpha
from agegender.training.schedule import (
    EpochScheduler,
    Stepping,
    Warmup,
    check_warmup_steps,
    create_optimizer,
    current_lr,
    trainable,
)

BEST, LAST, STATE = "best.safetensors", "last.safetensors", "last_state.pt"


class RunError(UserInputError):
    """A run directory cannot be used as asked (e.g. --resume of a different model)."""


@dataclass(frozen=True)
class FitResult:
    run_dir: Path
    best_epoch: int
    stopped_epoch: int
    metrics: dict[str, Any]


@dataclass(kw_only=True)
class TrainingState(Stepping):
    """Everything that changes during fit() and must survive an interruption."""

    model: nn.Module
    epoch: int = 0  # last completed epoch
    context: DistributedContext = field(default_factory=DistributedContext)  # torchrun rank, device
    train_model: nn.Module | None = None  # what training steps call: DDP wrapper (torchrun), compiled module

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, **self.stepping_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.epoch = int(state["epoch"])
        self.restore_stepping_state(state)


def create_training_state(config: RunConfig, context: DistributedContext | None = None) -> TrainingState:
    context = context or DistributedContext()
    with torch.random.fork_rng(devices=[]):  # same seed, same initial weights, without touching global RNG
        torch.manual_seed(config.data.seed)
        model = create_model(config.model)
    if config.train.channels_last:
        model = model.to(memory_format=torch.channels_last)
    model = model.to(context.device)
    optimizer = create_optimizer(trainable(model), config.train)
    generator = torch.Generator().manual_seed(config.data.seed)
    return TrainingState(
        model=model,
        optimizer=optimizer,
        scheduler=EpochScheduler(optimizer, config.train, config.train.epochs),
        stopper=EarlyStopping(config.train.early_stopping_patience, config.train.min_delta),
        generator=generator,
        warmup=Warmup(config.train.warmup_steps),
        average=WeightAverage(model, config.train.ema_decay),
        context=context,
        train_model=compile_for_training(wrap_for_training(model, context), config.train.compile),
    )


def compile_for_training(model: nn.Module, compile_model: bool) -> nn.Module:
    """train.compile: torch.compile the module training steps run through (evaluation and checkpoints
    use the plain module, which shares its weights). On this project's 2-core CPU it did not pay
    (README, Training speed); on a GPU it usually does."""
    return torch.compile(model) if compile_model else model


def resume_config(
    run_dir: Path,
    *,
    model: str | None = None,
    epochs: int | None = None,
    threads: int | None = None,
    device: str | None = None,
) -> RunConfig:
    """The run's own config. A resume may only check the model name, add epochs, or move the run
    to another thread count or device (where it runs, not what it learns): nothing else can change
    mid-run."""
    config_path = run_dir / "config.yaml"
    if not config_path.exists() or not (run_dir / LAST).exists():
        raise RunError(f"{run_dir}: nothing to resume (no config.yaml / {LAST}; was it started?)")
    config = load_config(config_path)
    if model is not None and model != config.model.name:
        raise RunError(
            f"{run_dir}: run was trained with model '{config.model.name}', not '{model}'; "
            "use a new --out directory for a different model"
        )
    if epochs is not None and epochs < config.train.epochs:
        raise RunError(f"{run_dir}: the run is set to {config.train.epochs} epochs; a resume can add epochs, not remove them")
    changes = {key: value for key, value in (("epochs", epochs), ("threads", threads), ("device", device)) if value is not None}
    return apply_mapping(config, {"train": changes})  # checked like any setting: bounds, device names


def restore_last(state: TrainingState, run_dir: Path, console: Console) -> None:
    saved, note = load_resume_point(state.model, run_dir / LAST, run_dir / STATE)
    if note:
        console.print(note)
    state.load_state_dict(saved)
    note = repair_best(run_dir / BEST, run_dir / LAST, state.average.evaluated, state.stopper.best_epoch, state.epoch)
    if note:
        console.print(note)


def make_progress(console: Console) -> Progress:
    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[stats]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=True,
    )


def run_epoch(
    state: TrainingState, data: PreparedData, loss_fn: MultiTaskLoss, config: RunConfig, console: Console
) -> tuple[EpochMetrics, EpochMetrics]:
    epoch, context = state.epoch + 1, state.context
    train, batch_size, generator = data.train, config.train.batch_size, state.generator
    if context.enabled:  # this rank's shard of a permutation shared by all ranks
        train = take(data.train, epoch_shard(len(data.train), context, state.generator))
        batch_size, generator = per_rank_batch_size(batch_size, context), rank_generator(config.data.seed, epoch, context)
    with make_progress(console) as progress:
        task = progress.add_task(f"epoch {epoch}/{config.train.epochs}", total=len(train), stats="")
        train_metrics = train_one_epoch(
            state.train_model if state.train_model is not None else state.model,
            train,
            loss_fn,
            state.optimizer,
            augment=config.augment,
            batch_size=batch_size,
            generator=generator,
            channels_last=config.train.channels_last,
            mixup_alpha=config.train.mixup_alpha,
            warmup=state.warmup,
            average=state.average,
            on_batch=lambda n, means: progress.update(task, advance=n, stats=means.short()),
        )
    evaluated = state.average.evaluated
    if context.enabled:
        train_metrics = reduce_epoch_metrics(train_metrics, context)
        val_metrics = evaluate_sharded(evaluated, data.val, loss_fn, context, channels_last=config.train.channels_last)
    else:
        val_metrics = evaluate_epoch(evaluated, data.val, loss_fn, channels_last=config.train.channels_last)
    return train_metrics, val_metrics


def history_row(epoch: int, train: EpochMetrics, val: EpochMetrics, lr: float, phase: str = "train") -> dict:
    return {
        "epoch": epoch,
        "phase": phase,
        **train.as_row("train"),
        **val.as_row("val"),
        "lr": lr,
        "seconds": train.seconds + val.seconds,
    }


def epoch_line(epoch: int, train: EpochMetrics, val: EpochMetrics, lr: float, best: bool) -> str:
    mark = " *best*" if best else ""
    return (
        f"epoch {epoch}: train loss {train.loss:.4f} acc {train.gender_acc:.4f} mae {train.age_mae:.2f} | "
        f"val loss {val.loss:.4f} acc {val.gender_acc:.4f} mae {val.age_mae:.2f} | "
        f"lr {lr:.2e} | {train.seconds + val.seconds:.1f}s{mark}"
    )


def check_pretrained_options(config: RunConfig, resume: bool) -> None:
    """Fail on --weights / fine-tuning settings before any data is decoded or a directory made."""
    if not is_pretrained(config.model.name):
        if config.model.weights:
            raise RunError(f"model '{config.model.name}' has no pretrained backbone; --weights needs one of the pretrained models")
        return
    if config.train.compile:
        raise RunError("train.compile applies to Model A (custom) runs; two-phase fine-tuning trains on cached activations")
    spec = BACKBONES[config.model.name]
    if config.data.image_size < spec.min_input_size:
        raise RunError(
            f"data.image_size={config.data.image_size} is too small for {config.model.name}: it needs at least "
            f"{spec.min_input_size} px; it was trained at {spec.native_size} (--image-size {spec.native_size})"
        )
    from agegender.training.finetune import plan_phases

    with torch.random.fork_rng(devices=[]):  # a throw-away model, counted for its blocks only
        plan_phases(create_model(config.model), config)
    if not resume:
        resolve_weights_path(config.model)


def check_age_labels(data: PreparedData, path: str) -> None:
    """The age head learns from exact ages and age groups; a training set with neither cannot train it."""
    if not np.isfinite(data.train.age_targets(np.arange(len(data.train)))[:, 0]).any():
        raise RunError(f"{path}: no training image has an age or an age_group label, so the age head cannot learn")


def fit(
    config: RunConfig, run_dir: Path, *, data: PreparedData | None = None, console: Console | None = None
) -> FitResult:
    """Start a new run as `config` says, writing everything to `run_dir`; resumable after any epoch."""
    run_dir = Path(run_dir)
    if (run_dir / LAST).exists():
        raise RunError(f"{run_dir}: already holds a run; use --resume {run_dir} or a new --out")
    return _train(config, run_dir, resume=False, data=data, console=console)


def resume(
    run_dir: Path,
    *,
    model: str | None = None,
    epochs: int | None = None,
    threads: int | None = None,
    device: str | None = None,
    data: PreparedData | None = None,
    console: Console | None = None,
) -> FitResult:
    """Continue an interrupted (or finished) run from its last epoch with its own config; `epochs`
    extends it, `threads` and `device` move it, `model` only checks that the run is the one meant."""
    run_dir = Path(run_dir)
    config = resume_config(run_dir, model=model, epochs=epochs, threads=threads, device=device)
    return _train(config, run_dir, resume=True, data=data, console=console)


def _train(config: RunConfig, run_dir: Path, *, resume: bool, data: PreparedData | None, console: Console | None) -> FitResult:
    console = console or Console(stderr=True)
    if config.train.threads:
        torch.set_num_threads(config.train.threads)
    context = init_distributed(config.train.device)  # torchrun: join the process group
    console = rank_console(context, console)
    # Dropout draws from torch's global RNG: seed it per run (and rank) so the same command gives the
    # same weights, and give the caller its own RNG state back afterwards.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.data.seed + context.rank)
        return _train_seeded(config, run_dir, resume=resume, data=data, console=console, context=context)


def _train_seeded(
    config: RunConfig,
    run_dir: Path,
    *,
    resume: bool,
    data: PreparedData | None,
    console: Console,
    context: DistributedContext,
) -> FitResult:
    if context.enabled and is_pretrained(config.model.name):
        raise RunError("two-phase fine-tuning of pretrained backbones runs in one process; start it without torchrun")
    check_pretrained_options(config, resume)
    check_mixup_alpha(config.train.mixup_alpha)
    check_augment(config.augment)
    check_warmup_steps(config.train.warmup_steps)
    check_ema_decay(config.train.ema_decay)
    data = data or prepare_data(config.data)
    console.print(data.summary_line())
    if len(data.train) < 2 or len(data.val) < 1:
        raise RunError(f"{config.data.path}: too few images to train ({data.summary_line()})")
    check_age_labels(data, config.data.path)
    run_dir.mkdir(parents=True, exist_ok=True)
    data = with_teacher_targets(data, config, run_dir, console)
    if context.is_main:
        save_config(config, run_dir / "config.yaml")
    if is_pretrained(config.model.name):  # two phases: heads on cached features, then the last blocks
        from agegender.training.finetune import fit_two_phase

        return fit_two_phase(config, run_dir, data, resume=resume, console=console, context=context)

    state = create_training_state(config, context)
    summary = summarize_model(state.model, config.model.name, config.data.image_size)
    console.print(summary.line())
    meta_base = dict(label_stats=label_stats(data.train))
    history = HistoryCSV(run_dir / "history.csv")
    if resume:
        restore_last(state, run_dir, console)
        if context.is_main:
            history.truncate_after(state.epoch)
        console.print(f"resumed {run_dir} after epoch {state.epoch}")
    elif config.train.init_from:
        init_from_checkpoint(state.model, Path(config.train.init_from), config.model.name)
        console.print(f"initial weights from {config.train.init_from}")
    loss_fn = MultiTaskLoss.from_config(config.train)

    try:
        train_epochs(state, data, loss_fn, config, run_dir, history, meta_base, console)
    except KeyboardInterrupt:
        console.print(f"interrupted after epoch {state.epoch}; continue with: agegender train --resume {run_dir}")
        raise
    if not context.enabled:
        return finish_run(state, data, config, run_dir, summary, console)
    result = finish_run(state, data, config, run_dir, summary, console) if context.is_main else None
    shutdown_distributed(context)  # other ranks wait here until rank 0 has written metrics.json
    metrics = result.metrics if result else json.loads((run_dir / "metrics.json").read_text())
    return FitResult(run_dir, metrics["best_epoch"], metrics["stopped_epoch"], metrics)


def train_epochs(state, data, loss_fn, config, run_dir, history, meta_base, console) -> None:
    while state.epoch < config.train.epochs and not state.stopper.should_stop:
        train_metrics, val_metrics = run_epoch(state, data, loss_fn, config, console)
        state.epoch += 1
        lr = current_lr(state.optimizer)
        is_best = state.stopper.update(val_metrics.loss, state.epoch)
        state.scheduler.epoch_end(val_metrics.loss)
        console.print(epoch_line(state.epoch, train_metrics, val_metrics, lr, is_best))
        if not state.context.is_main:  # under torchrun only rank 0 writes
            continue
        history.append(history_row(state.epoch, train_metrics, val_metrics, lr))
        meta = build_meta(state.model, config, **meta_base, epoch=state.epoch)
        save_resume_point(run_dir / LAST, run_dir / STATE, state.model, meta, state.state_dict())
        # The validated weights (the average when train.ema_decay keeps one), after the state: see repair_best
        if is_best:
            save_checkpoint(run_dir / BEST, state.average.evaluated, meta)
    if state.stopper.should_stop:
        console.print(f"early stopping at epoch {state.epoch}; best epoch {state.stopper.best_epoch}")


def timing_summary(rows: list[dict[str, str]], best_epoch: int, n_train: int, batch_size: int) -> dict[str, float]:
    seconds = [float(r["seconds"]) for r in rows]
    if not seconds:
        return {}
    median = statistics.median(seconds)
    steps = max(1, -(-n_train // batch_size))
    summary = {
        "median_epoch_seconds": median,
        "ms_per_step": 1000 * median / steps,
        "train_images_per_second": n_train / median if median else float("nan"),
        "total_seconds": sum(seconds),
        "seconds_to_best_epoch": sum(seconds[:best_epoch]),
    }
    seconds_by_phase: dict[str, list[float]] = {}
    for row, row_seconds in zip(rows, seconds):
        seconds_by_phase.setdefault(row.get("phase", "train"), []).append(row_seconds)
    if len(seconds_by_phase) > 1:  # two-phase runs: heads-only steps and backbone steps differ by 100x
        summary["ms_per_step_by_phase"] = {
            phase: 1000 * statistics.median(times) / steps for phase, times in seconds_by_phase.items()
        }
    return summary


def split_report(model: nn.Module, arrays, channels_last: bool) -> dict | None:
    if len(arrays) == 0:
        return None
    age, p_female = predict_arrays(model, arrays.images, channels_last=channels_last)
    return report_to_dict(build_report(arrays.samples, age, p_female))


def final_val_line(val: dict) -> str:
    """Val gender accuracy and MAE; age-group accuracy instead of a MAE when val has groups only."""
    parts = [f"val gender acc {val['gender_accuracy']:.4f}" if val["gender_accuracy"] is not None else "no val gender labels"]
    if val["age_mae"] is not None:
        parts.append(f"age MAE {val['age_mae']:.2f}")
    if val.get("age_group_accuracy") is not None:
        parts.append(f"age-group acc {val['age_group_accuracy']:.4f}")
    return ", ".join(parts)


def finish_run(state, data, config, run_dir, summary: ModelSummary, console, extra: dict | None = None) -> FitResult:
    """Restore the best weights, measure them on val/test, write metrics.json and the curves."""
    best_path = run_dir / BEST
    if not best_path.exists():
        raise CheckpointError(f"{best_path}: no best checkpoint was written")
    load_weights(state.model, best_path)
    rows = HistoryCSV(run_dir / "history.csv").rows()
    best_row = next(r for r in rows if int(r["epoch"]) == state.stopper.best_epoch)
    metrics = {
        "model": {**summary.__dict__, "feature_map": list(summary.feature_map)},
        "best_epoch": state.stopper.best_epoch,
        "stopped_epoch": state.epoch,
        "early_stopped": state.stopper.should_stop,
        "split_sizes": {"train": len(data.train), "val": len(data.val), "test": len(data.test)},
        "data_summary": data.summary_line(),
        "train_at_best": {k: float(v) for k, v in best_row.items() if k.startswith("train_")},
        "val": split_report(state.model, data.val, config.train.channels_last),
        "test": split_report(state.model, data.test, config.train.channels_last),
        "timing": timing_summary(rows, state.stopper.best_epoch, len(data.train), config.train.batch_size),
        **(extra or {}),
    }
    (run_dir / "metrics.json").write_text(json.dumps(metrics, indent=2))
    plot_learning_curves(run_dir / "history.csv", run_dir / "learning_curves.png", title=f"{config.model.name} ({run_dir.name})")
    console.print(f"best epoch {state.stopper.best_epoch}: {final_val_line(metrics['val'])}; wrote {run_dir}")
    return FitResult(run_dir, state.stopper.best_epoch, state.epoch, metrics)
