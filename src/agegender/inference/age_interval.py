"""An age interval per face from the model's age distribution: the central `level` of its probability mass,
e.g. "27 (22-33)" for 80%. A temperature, chosen on a val split (evaluation/intervals.py) and stored in the
model file, widens a distribution that is sharper than the model's errors (DLDL trains on a 2-year Gaussian)."""

from __future__ import annotations

import numpy as np

from agegender.inference.predictions import AGE_INTERVAL_LEVEL


def tempered(age_probs: np.ndarray, temperature: float) -> np.ndarray:
    """(N, K) the distributions with their log-probabilities divided by `temperature` (> 1 flattens)."""
    if temperature == 1.0:
        return age_probs
    logs = np.log(np.clip(age_probs, 1e-12, None)) / temperature
    logs -= logs.max(axis=1, keepdims=True)
    weights = np.exp(logs)
    return weights / weights.sum(axis=1, keepdims=True)


def age_intervals(age_probs: np.ndarray, level: float = AGE_INTERVAL_LEVEL, temperature: float = 1.0) -> np.ndarray:
    """(N, 2) [low, high] whole years holding the central `level` of each 1-year-bin distribution (bin k is
    age k): low is the first age whose cumulative mass reaches (1 - level) / 2, high the first to reach
    (1 + level) / 2."""
    if not 0 < level < 1:
        raise ValueError(f"interval level must be in (0, 1), got {level}")
    cumulative = np.cumsum(tempered(np.asarray(age_probs, dtype=np.float64), temperature), axis=1)
    cumulative /= cumulative[:, -1:]
    low = (cumulative < (1 - level) / 2).sum(axis=1)
    high = (cumulative < (1 + level) / 2).sum(axis=1)
    return np.stack([low, high], axis=1).astype(np.float64)


def coverage(intervals: np.ndarray, true_age: np.ndarray) -> float:
    """Share of exactly labelled ages inside their interval (NaN ages left out)."""
    known = np.isfinite(true_age)
    inside = (true_age[known] >= intervals[known, 0]) & (true_age[known] <= intervals[known, 1])
    return float(inside.mean()) if known.any() else float("nan")
