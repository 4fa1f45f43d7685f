"""`agegender calibrate`: the temperature that makes a model's 80% age intervals cover 80% of the true ages
of a val split, written into a copy of its model file (inference.age_interval_temperature)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Sequence

import numpy as np

from agegender.data.readers import DataError
from agegender.evaluation.evaluate import decode_evaluation_split
from agegender.inference.age_interval import age_intervals, coverage
from agegender.inference.predictions import AGE_INTERVAL_LEVEL
from agegender.inference.predictor import Predictor

TEMPERATURES = (0.1, 20.0)  # the range searched; coverage grows with the temperature


@dataclasses.dataclass(frozen=True)
class Calibration:
    temperature: float
    coverage_before: float  # at the model file's temperature
    coverage_after: float
    n: int

    def line(self, level: float = AGE_INTERVAL_LEVEL) -> str:
        return (f"{100 * level:.0f}% age interval on {self.n} faces: coverage {100 * self.coverage_before:.1f}% -> "
                f"{100 * self.coverage_after:.1f}% at temperature {self.temperature:.3f}")  # fmt: skip


def choose_temperature(age_probs: np.ndarray, true_age: np.ndarray, level: float = AGE_INTERVAL_LEVEL,
                       steps: int = 40) -> float:  # fmt: skip
    """The temperature whose `level` intervals cover `level` of `true_age`, by bisection on a log scale."""
    low, high = np.log(TEMPERATURES[0]), np.log(TEMPERATURES[1])
    for _ in range(steps):
        middle = (low + high) / 2
        if coverage(age_intervals(age_probs, level, float(np.exp(middle))), true_age) < level:
            low = middle
        else:
            high = middle
    return float(np.exp(high))


def calibrate(predictor: Predictor, data_dir: Path | Sequence[Path], split: str = "val") -> Calibration:
    """The temperature for `predictor`'s age intervals, measured on `split` of the labelled folders."""
    _, arrays, _ = decode_evaluation_split(predictor, data_dir, split)
    aged = np.isfinite(arrays.age)
    if not aged.any():
        raise DataError(f"{data_dir}: no readable images with an exact age in split '{split}' to calibrate on")
    predicted = predictor.model.forward(arrays.images[aged])
    if predicted.age_probs is None:
        raise DataError(f"{predictor.model.source}: the model gives no age distribution (a regression head or an ONNX file)")
    ages = arrays.age[aged]
    temperature = choose_temperature(predicted.age_probs, ages)
    before = coverage(predictor.model.intervals(predicted), ages)
    after = coverage(age_intervals(predicted.age_probs, AGE_INTERVAL_LEVEL, temperature), ages)
    return Calibration(temperature, before, after, int(aged.sum()))
