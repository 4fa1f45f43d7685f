"""Figures of the comparison report, each returned as PNG bytes (the report embeds or writes them)."""

from __future__ import annotations

import io
import math
from typing import Any, Callable

import numpy as np
import torch
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from agegender.data.samples import GENDER_NAMES
from agegender.data.transforms import augment_batch, to_model_input

DPI = 100
CURVES = (("loss", "loss (total)", 1.0), ("gender_acc", "gender accuracy %", 100.0), ("age_mae", "age MAE (years)", 1.0))


def _png(figure: Figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI)
    return buffer.getvalue()


def _grid(rows: int, cols: int, cell: tuple[float, float]) -> tuple[Figure, np.ndarray]:
    figure = Figure(figsize=(cell[0] * cols, cell[1] * rows), dpi=DPI, layout="constrained")
    axes = np.asarray(figure.subplots(rows, cols, squeeze=False))
    return figure, axes


def learning_curves(runs) -> bytes:
    """Rows: loss, gender accuracy, age MAE; one column per run; dashed lines where the phase changes."""
    figure, axes = _grid(len(CURVES), len(runs), (4.2, 2.6))
    for col, run in enumerate(runs):
        epochs = [float(r["epoch"]) for r in run.history]
        phases = [str(r.get("phase", "")) for r in run.history]
        for row, (metric, label, scale) in enumerate(CURVES):
            ax = axes[row, col]
            for split in ("train", "val"):
                ax.plot(epochs, [float(r[f"{split}_{metric}"]) * scale for r in run.history], marker="o", markersize=2.5, label=split)
            for i in range(1, len(phases)):
                if phases[i] != phases[i - 1]:
                    ax.axvline((epochs[i - 1] + epochs[i]) / 2, color="grey", linestyle="--", linewidth=1)
                    ax.text((epochs[i - 1] + epochs[i]) / 2, 0.97, f" {phases[i]}", transform=ax.get_xaxis_transform(),
                            va="top", fontsize=7, color="grey")  # fmt: skip
            ax.axvline(run.metrics["best_epoch"], color="green", alpha=0.3, linewidth=3)
            ax.grid(alpha=0.3)
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.set_ylabel(label, fontsize=8)
            if row == 0:
                ax.set_title(run.label, fontsize=9)
                ax.legend(fontsize=7)
            if row == len(CURVES) - 1:
                ax.set_xlabel("epoch (green: best)", fontsize=8)
    return _png(figure)


def _gender(p: float) -> str:
    return "F" if p >= 0.5 else "M"


def example_grid(runs, count: int = 12) -> bytes | None:
    """Faces from the first run's split with the true label and every run's prediction."""
    with_predictions = [run for run in runs if run.predictions is not None]
    if not with_predictions:
        return None
    base = with_predictions[0].predictions
    lookup = [{str(s.path): (a, p) for s, a, p in zip(r.predictions.arrays.samples, r.predictions.age, r.predictions.p_female)}
              for r in with_predictions]  # fmt: skip
    picks = np.linspace(0, len(base.arrays) - 1, min(count, len(base.arrays))).astype(int)
    cols = min(6, len(picks))
    rows = math.ceil(len(picks) / cols)
    figure, axes = _grid(rows, cols, (2.1, 2.0 + 0.28 * len(with_predictions)))
    for ax in axes.flat:
        ax.axis("off")
    for ax, index in zip(axes.flat, picks):
        sample = base.arrays.samples[index]
        ax.imshow(base.arrays.images[index])
        true_age = "?" if sample.age is None else f"{sample.age:.0f}"
        true_gender = "?" if sample.gender is None else "MF"[sample.gender]
        lines = [f"true {true_age} {true_gender}"]
        for run, table in zip(with_predictions, lookup):
            if str(sample.path) in table:
                age, p = table[str(sample.path)]
                lines.append(f"{run.config.model.name[:18]}: {age:.0f} {_gender(p)}")
        wrong = sample.gender is not None and _gender(base.p_female[index]) != "MF"[sample.gender]
        ax.set_title("\n".join(lines), fontsize=7, color="#b00020" if wrong else "black")
    return _png(figure)


def augmentation_grid(runs, count: int = 4, variants: int = 5) -> bytes | None:
    """Training augmentation as the first run was configured: each row one face, original first."""
    run = next((r for r in runs if r.predictions is not None), None)
    if run is None:
        return None
    images = run.predictions.arrays.images[:count]
    generator = torch.Generator().manual_seed(0)
    x = to_model_input(images, channels_last=False)  # (n, 3, S, S)
    views = [x] + [augment_batch(x, run.config.augment, generator) for _ in range(variants)]
    figure, axes = _grid(len(images), variants + 1, (1.5, 1.5))
    for row in range(len(images)):
        for col, view in enumerate(views):
            ax = axes[row, col]
            ax.imshow(view[row].permute(1, 2, 0).clamp(0, 1).numpy())
            ax.axis("off")
            if row == 0:
                ax.set_title("original" if col == 0 else f"augmented {col}", fontsize=8)
    return _png(figure)


def confusion_matrices(runs) -> bytes | None:
    with_predictions = [run for run in runs if run.predictions is not None]
    if not with_predictions:
        return None
    figure, axes = _grid(1, len(with_predictions), (3.4, 3.0))
    for ax, run in zip(axes[0], with_predictions):
        true = run.predictions.arrays.gender
        keep = ~np.isnan(true)
        predicted = (run.predictions.p_female[keep] >= 0.5).astype(int)
        matrix = np.zeros((2, 2), dtype=int)
        for t, p in zip(true[keep].astype(int), predicted):
            matrix[t, p] += 1
        shares = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
        ax.imshow(shares, cmap="Blues", vmin=0, vmax=1)
        for (t, p), n in np.ndenumerate(matrix):
            ax.text(p, t, f"{n}\n{100 * shares[t, p]:.0f}%", ha="center", va="center",
                    color="white" if shares[t, p] > 0.6 else "black", fontsize=9)  # fmt: skip
        ax.set_xticks([0, 1], [f"pred {g}" for g in GENDER_NAMES], fontsize=8)
        ax.set_yticks([0, 1], [f"true {g}" for g in GENDER_NAMES], fontsize=8)
        ax.set_title(run.label, fontsize=9)
    return _png(figure)


def age_scatter(runs, band_mae: Callable[[Any], dict[str, float]]) -> bytes | None:
    with_predictions = [run for run in runs if run.predictions is not None]
    if not with_predictions:
        return None
    figure, axes = _grid(1, len(with_predictions), (4.0, 4.0))
    for ax, run in zip(axes[0], with_predictions):
        true, predicted = run.predictions.arrays.age, run.predictions.age
        keep = ~np.isnan(true)
        ax.scatter(true[keep], predicted[keep], s=6, alpha=0.5)
        top = float(max(np.nanmax(true, initial=1), np.max(predicted, initial=1))) * 1.05
        ax.plot([0, top], [0, top], color="grey", linewidth=1)
        ax.set_xlim(0, top)
        ax.set_ylim(0, top)
        ax.set_xlabel("true age", fontsize=8)
        ax.set_ylabel("predicted age", fontsize=8)
        ax.set_title(run.label, fontsize=9)
        bands = "\n".join(f"{band:>6}: {mae:5.1f}" for band, mae in band_mae(run.predictions).items())
        ax.text(0.03, 0.97, "MAE by age band\n" + bands, transform=ax.transAxes, va="top", fontsize=7,
                family="monospace", bbox={"facecolor": "white", "alpha": 0.8, "edgecolor": "#ccc"})  # fmt: skip
        ax.grid(alpha=0.3)
    return _png(figure)


def draw_all(runs, split: str, band_mae) -> dict[str, tuple[str, bytes]]:
    """name -> (caption, PNG) for every figure that could be drawn."""
    drawn = {
        "learning_curves": ("Learning curves (train vs val, from history.csv)", learning_curves(runs)),
        "examples": (f"Example {split} faces: true vs predicted (red title: first model got the gender wrong)", example_grid(runs)),
        "augmentation": ("Training augmentation (first run's settings)", augmentation_grid(runs)),
        "confusion": (f"Gender confusion matrices ({split})", confusion_matrices(runs)),
        "age_scatter": (f"Predicted vs true age ({split}), MAE per age band", age_scatter(runs, band_mae)),
    }
    return {name: (caption, png) for name, (caption, png) in drawn.items() if png is not None}
