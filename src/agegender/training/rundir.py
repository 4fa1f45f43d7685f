"""A run directory's files, and the per-epoch lines every training phase writes into it:

    config.yaml  history.csv  best.safetensors  last.safetensors  last_state.pt
    metrics.json  learning_curves.png
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from agegender.config import RunConfig, apply_mapping, load_config
from agegender.errors import UserInputError
from agegender.training.loop import EpochMetrics

CONFIG, HISTORY, METRICS, CURVES = "config.yaml", "history.csv", "metrics.json", "learning_curves.png"
BEST, LAST, STATE = "best.safetensors", "last.safetensors", "last_state.pt"


LOCK = ".lock"  # held (flock) by the process training in the folder, for its whole run


class RunError(UserInputError):
    """A run directory cannot be used as asked (e.g. --resume of a different model)."""


@contextmanager
def run_lock(run_dir: Path, hold: bool = True) -> Iterator[None]:
    """One training process per run folder: an exclusive lock for the run's lifetime (a second `train` on
    the folder is one RunError line). Once held, temporary files that killed runs left are removed.
    `hold` False (torchrun's other ranks) takes nothing: rank 0 holds it for them."""
    if not hold:
        yield
        return
    import fcntl

    with (run_dir / LOCK).open("a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RunError(f"{run_dir}: another `agegender train` is running in this folder") from None
        for leftover in run_dir.glob(".*.tmp"):  # write_atomically's, from a process killed mid-write
            leftover.unlink(missing_ok=True)
        yield


def discard_unsaved_start(run_dir: Path) -> str | None:
    """A new run in a folder whose earlier start was killed before its first checkpoint: that attempt's
    history rows (with no weights behind them) are dropped, so epochs are never counted twice."""
    history = run_dir / HISTORY
    if (run_dir / LAST).exists() or not history.exists():
        return None
    history.unlink()
    return f"{run_dir}: an earlier start left no checkpoint; its {HISTORY} was discarded and the run starts afresh"


def resume_config(run_dir: Path, *, model: str | None = None, epochs: int | None = None, threads: int | None = None,
                  device: str | None = None) -> RunConfig:  # fmt: skip
    """The run's own config. A resume may only check the model name, add epochs, or move the run to another
    thread count or device (where it runs, not what it learns): nothing else can change mid-run."""
    config_path = run_dir / CONFIG
    if not config_path.exists() or not (run_dir / LAST).exists():
        raise RunError(f"{run_dir}: nothing to resume (no {CONFIG} / {LAST}; was it started?)")
    config = load_config(config_path)
    if model is not None and model != config.model.name:
        raise RunError(
            f"{run_dir}: run was trained with model '{config.model.name}', not '{model}'; "
            "use a new --out directory for a different model"
        )
    if epochs is not None and epochs < config.train.epochs:
        raise RunError(
            f"{run_dir}: the run is set to {config.train.epochs} epochs; a resume can add epochs, not remove them"
        )
    changes = {key: value for key, value in {"epochs": epochs, "threads": threads, "device": device}.items()
               if value is not None}  # fmt: skip
    return apply_mapping(config, {"train": changes})  # checked like any setting: bounds, device names


def history_row(epoch: int, train: EpochMetrics, val: EpochMetrics, lr: float, phase: str) -> dict:
    seconds = train.seconds + val.seconds
    return {"epoch": epoch, "phase": phase, **train.as_row("train"), **val.as_row("val"), "lr": lr, "seconds": seconds}


def epoch_line(epoch: int, train: EpochMetrics, val: EpochMetrics, lr: float, best: bool) -> str:
    mark = " *best*" if best else ""
    return (
        f"epoch {epoch}: train loss {train.loss:.4f} acc {train.gender_acc:.4f} mae {train.age_mae:.2f} | "
        f"val loss {val.loss:.4f} acc {val.gender_acc:.4f} mae {val.age_mae:.2f} | "
        f"lr {lr:.2e} | {train.seconds + val.seconds:.1f}s{mark}"
    )
