"""Pure age/gender metrics over numpy arrays.

Missing labels arrive as NaN in float arrays; every metric drops those entries
and returns NaN (or None, for the dataclass/group-level helpers) when nothing is left.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from agegender.data.age_groups import parse_age_group

# (name, inclusive low, inclusive high or None for open-ended); integer years.
AGE_BANDS: tuple[tuple[str, int, int | None], ...] = (
    ("0-12", 0, 12),
    ("13-19", 13, 19),
    ("20-39", 20, 39),
    ("40-59", 40, 59),
    ("60+", 60, None),
)
AGE_BAND_NAMES: tuple[str, ...] = tuple(name for name, _, _ in AGE_BANDS)

GENDER_THRESHOLD = 0.5  # p_female >= threshold means "female" (label 1)
CS_WITHIN_YEARS = 5.0


def age_band(age: float) -> str:
    """Name of the AGE_BANDS entry holding `age`.

    Bands are bounded by whole years, so a fractional age belongs to the band of
    its completed years (12.7 is still "0-12").
    """
    if math.isnan(age) or age < 0:
        raise ValueError(f"age must be a non-negative number, got {age!r}")
    whole_years = math.floor(age)
    for name, low, high in AGE_BANDS:
        if whole_years >= low and (high is None or whole_years <= high):
            return name
    raise AssertionError("AGE_BANDS must cover every non-negative age")


def _floats(values: Sequence[float] | np.ndarray) -> np.ndarray:
    return np.asarray(values, dtype=np.float64).reshape(-1)


def _labelled(true: np.ndarray, pred: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Keep the entries whose label is present (not NaN)."""
    if true.shape != pred.shape:
        raise ValueError(f"label and prediction lengths differ: {true.shape} vs {pred.shape}")
    keep = ~np.isnan(true)
    return true[keep], pred[keep]


def gender_accuracy(true: Sequence[float] | np.ndarray, p_female: Sequence[float] | np.ndarray) -> float:
    """Share of labelled samples whose thresholded p_female matches the 0/1 label."""
    labels, probs = _labelled(_floats(true), _floats(p_female))
    if labels.size == 0:
        return math.nan
    predicted = (probs >= GENDER_THRESHOLD).astype(np.float64)
    return float(np.mean(predicted == labels))


def age_mae(true: Sequence[float] | np.ndarray, pred: Sequence[float] | np.ndarray) -> float:
    """Mean absolute age error in years over labelled samples."""
    labels, preds = _labelled(_floats(true), _floats(pred))
    if labels.size == 0:
        return math.nan
    return float(np.mean(np.abs(preds - labels)))


def cumulative_score(
    true: Sequence[float] | np.ndarray,
    pred: Sequence[float] | np.ndarray,
    within: float = CS_WITHIN_YEARS,
) -> float:
    """CS@within: share of labelled samples with |age error| <= `within` years."""
    labels, preds = _labelled(_floats(true), _floats(pred))
    if labels.size == 0:
        return math.nan
    return float(np.mean(np.abs(preds - labels) <= within))


def _none_if_nan(value: float) -> float | None:
    return None if math.isnan(value) else value


@dataclass(frozen=True)
class GroupMetrics:
    """Metrics for one group of samples; None where no sample had that label."""

    n: int
    gender_accuracy: float | None
    age_mae: float | None
    cs5: float | None


def compute_group_metrics(
    age_true: Sequence[float] | np.ndarray,
    age_pred: Sequence[float] | np.ndarray,
    gender_true: Sequence[float] | np.ndarray,
    p_female: Sequence[float] | np.ndarray,
) -> GroupMetrics:
    """All metrics for one group; `n` counts every sample, labelled or not."""
    age_true = _floats(age_true)
    return GroupMetrics(
        n=int(age_true.size),
        gender_accuracy=_none_if_nan(gender_accuracy(gender_true, p_female)),
        age_mae=_none_if_nan(age_mae(age_true, age_pred)),
        cs5=_none_if_nan(cumulative_score(age_true, age_pred, within=CS_WITHIN_YEARS)),
    )


def _group_order(present: set[str], order: Sequence[str] | None) -> list[str]:
    """Names from `order` first (as given), then any unlisted groups alphabetically."""
    listed = [name for name in (order or ()) if name in present]
    unlisted = sorted(present - set(listed))
    return listed + unlisted


def breakdown(
    groups: Sequence[str | None],
    age_true: Sequence[float] | np.ndarray,
    age_pred: Sequence[float] | np.ndarray,
    gender_true: Sequence[float] | np.ndarray,
    p_female: Sequence[float] | np.ndarray,
    order: Sequence[str] | None = None,
) -> dict[str, GroupMetrics]:
    """GroupMetrics per group name; samples whose group is None are left out.

    Only groups with at least one sample appear. Keys follow `order` where given,
    any other groups come after it sorted by name.
    """
    arrays = [_floats(a) for a in (age_true, age_pred, gender_true, p_female)]
    if any(a.size != len(groups) for a in arrays):
        raise ValueError("groups and every metric array must have the same length")
    group_array = np.array(groups, dtype=object)
    present = {g for g in groups if g is not None}
    result: dict[str, GroupMetrics] = {}
    for name in _group_order(present, order):
        members = group_array == name
        result[name] = compute_group_metrics(*(a[members] for a in arrays))
    return result


def age_group_accuracy(
    true_groups: Sequence[str | None],
    age_pred: Sequence[float] | np.ndarray,
) -> float | None:
    """Share of samples with a group label whose predicted age falls inside it.

    Predictions are rounded to whole years first: the group bounds are inclusive
    integers, so a raw 29.6 would otherwise fall between "20-29" and "30-39".
    """
    preds = _floats(age_pred)
    if preds.size != len(true_groups):
        raise ValueError("true_groups and age_pred must have the same length")
    hits = []
    for group, pred in zip(true_groups, preds):
        if group is None:
            continue
        low, high = parse_age_group(group)
        whole_years = math.floor(pred + 0.5)
        hits.append(low <= whole_years <= high)
    if not hits:
        return None
    return float(np.mean(hits))
