"""Learning-curve figures from the trainer's history CSV."""

from __future__ import annotations

import csv
import math
from pathlib import Path

from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

FIGURE_SIZE_INCHES = (10.0, 7.5)
DPI = 110

# (metric suffix after "train_"/"val_", panel title, y label, scale applied to values)
_PANELS: tuple[tuple[str, str, str, float], ...] = (
    ("gender_loss", "Gender loss", "loss", 1.0),
    ("gender_acc", "Gender accuracy", "accuracy %", 100.0),
    ("age_loss", "Age loss", "loss", 1.0),
    ("age_mae", "Age MAE", "years", 1.0),
)
_TEXT_COLUMNS = frozenset({"phase"})

HistoryRow = dict[str, float | str]


def _parse_cell(column: str, text: str) -> float | str:
    if column in _TEXT_COLUMNS:
        return text
    # An empty cell means the metric was not computed that epoch (e.g. no validation set).
    return math.nan if text.strip() == "" else float(text)


def read_history(path: Path) -> list[HistoryRow]:
    """Rows of the history CSV; `phase` stays a string, every other column is a float."""
    with Path(path).open(newline="", encoding="utf-8") as handle:
        return [
            {column: _parse_cell(column, text or "") for column, text in row.items()}
            for row in csv.DictReader(handle)
        ]


def _x_positions(rows: list[HistoryRow]) -> list[float]:
    """Epoch numbers, or the row number if epochs restart per phase (x must increase)."""
    epochs = [float(row.get("epoch", math.nan)) for row in rows]
    increasing = all(later > earlier for earlier, later in zip(epochs, epochs[1:]))
    if increasing and not any(math.isnan(e) for e in epochs):
        return epochs
    return [float(i + 1) for i in range(len(rows))]


def _phase_boundaries(rows: list[HistoryRow], xs: list[float]) -> list[tuple[float, str]]:
    """(x midway between the two rows, new phase) wherever `phase` changes."""
    boundaries = []
    for i in range(1, len(rows)):
        previous, current = rows[i - 1].get("phase", ""), rows[i].get("phase", "")
        if current != previous:
            boundaries.append(((xs[i - 1] + xs[i]) / 2, str(current)))
    return boundaries


def _series(rows: list[HistoryRow], column: str, scale: float) -> list[float] | None:
    """Scaled column values, or None when the column is absent or entirely empty."""
    values = [float(row.get(column, math.nan)) * scale for row in rows]
    return None if all(math.isnan(v) for v in values) else values


def _draw_panel(
    axes: Axes,
    rows: list[HistoryRow],
    xs: list[float],
    boundaries: list[tuple[float, str]],
    panel: tuple[str, str, str, float],
) -> None:
    metric, title, ylabel, scale = panel
    for split in ("train", "val"):
        values = _series(rows, f"{split}_{metric}", scale)
        if values is not None:
            # Markers keep a single-epoch history visible (a one-point line draws nothing).
            axes.plot(xs, values, marker="o", markersize=3, label=split)
    for x, phase in boundaries:
        axes.axvline(x, color="grey", linestyle="--", linewidth=1)
        axes.text(
            x, 0.98, f" {phase}",
            transform=axes.get_xaxis_transform(),  # x in data units, y in axes fraction
            va="top", ha="left", fontsize=8, color="grey",
        )
    axes.set_title(title)
    axes.set_xlabel("epoch")
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes.set_ylabel(ylabel)
    axes.grid(alpha=0.3)
    if axes.get_legend_handles_labels()[0]:
        axes.legend(fontsize=8)


def plot_learning_curves(history_csv: Path, out_png: Path, title: str | None = None) -> Path:
    """2x2 figure of gender loss/accuracy and age loss/MAE, train vs val, with phase changes marked."""
    rows = read_history(history_csv)
    if not rows:
        raise ValueError(f"history CSV has no rows: {history_csv}")
    xs = _x_positions(rows)
    boundaries = _phase_boundaries(rows, xs)

    figure = Figure(figsize=FIGURE_SIZE_INCHES, dpi=DPI)
    for axes, panel in zip(figure.subplots(2, 2).flat, _PANELS):
        _draw_panel(axes, rows, xs, boundaries, panel)
    if title:
        figure.suptitle(title)
    figure.tight_layout()

    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    # No bbox_inches="tight": the pixel size must stay FIGURE_SIZE_INCHES * DPI.
    figure.savefig(out_png, dpi=DPI, format="png")
    return out_png
