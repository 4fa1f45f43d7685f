"""Early stopping and the per-epoch history CSV (plots and reports are derived from it)."""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any

from agegender.errors import UserInputError

HISTORY_COLUMNS = (
    "epoch", "phase",
    "train_loss", "train_gender_loss", "train_age_loss", "train_gender_acc", "train_age_mae",
    "val_loss", "val_gender_loss", "val_age_loss", "val_gender_acc", "val_age_mae",
    "lr", "seconds",
)  # fmt: skip


class HistoryError(UserInputError):
    """A run's history.csv cannot be read."""


class EarlyStopping:
    """Stop after `patience` epochs without the monitored value improving by more than `min_delta`."""

    def __init__(self, patience: int, min_delta: float):
        self.patience, self.min_delta = patience, min_delta
        self.best, self.best_epoch, self.bad_epochs = math.inf, 0, 0

    def update(self, value: float, epoch: int) -> bool:
        """Record an epoch's value; True when it is a new best."""
        if value < self.best - self.min_delta:
            self.best, self.best_epoch, self.bad_epochs = value, epoch, 0
            return True
        self.bad_epochs += 1
        return False

    @property
    def should_stop(self) -> bool:
        return self.bad_epochs >= self.patience

    def state_dict(self) -> dict[str, float | int]:
        return {"best": self.best, "best_epoch": self.best_epoch, "bad_epochs": self.bad_epochs}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best = float(state["best"])
        self.best_epoch = int(state["best_epoch"])
        self.bad_epochs = int(state["bad_epochs"])


class HistoryCSV:
    """Appends one row per epoch; on resume, rows after the resumed epoch are dropped."""

    def __init__(self, path: Path):
        self.path = Path(path)

    def rows(self) -> list[dict[str, str]]:
        if not self.path.exists():
            return []
        try:
            with self.path.open(newline="") as handle:
                return list(csv.DictReader(handle))
        except (csv.Error, UnicodeDecodeError) as error:
            raise HistoryError(f"{self.path}: not a readable history CSV ({error}); move it away to resume") from None

    def truncate_after(self, epoch: int) -> None:
        """Keep the rows of epochs 1..`epoch` (the resumed state's), one each: a malformed row, or rows
        mixed by an earlier crash, are dropped rather than trusted."""
        by_epoch: dict[int, dict[str, str]] = {}
        for row in self.rows():
            number = str(row.get("epoch") or "")
            if number.isdigit() and 1 <= int(number) <= epoch:
                by_epoch[int(number)] = row  # a repeated epoch: the later row, written by the later attempt
        kept = [{key: row.get(key) for key in HISTORY_COLUMNS} for _, row in sorted(by_epoch.items())]
        with self.path.open("w", newline="") as handle:
            writer = csv.DictWriter(handle, HISTORY_COLUMNS)
            writer.writeheader()
            writer.writerows(kept)

    def append(self, row: dict[str, Any]) -> None:
        new_file = not self.path.exists()
        with self.path.open("a", newline="") as handle:
            writer = csv.DictWriter(handle, HISTORY_COLUMNS)
            if new_file:
                writer.writeheader()
            writer.writerow({key: _format(row[key]) for key in HISTORY_COLUMNS})


def _format(value: Any) -> str:
    return f"{value:.6g}" if isinstance(value, float) else str(value)
