from __future__ import annotations

import math

import numpy as np
import pytest

from agegender.evaluation.metrics import (
    GroupMetrics,
    age_band,
    age_group_accuracy,
    age_mae,
    breakdown,
    compute_group_metrics,
    cumulative_score,
    gender_accuracy,
    parse_age_group,
)

NAN = math.nan


@pytest.mark.parametrize(
    ("age", "band"),
    [(0, "0-12"), (12, "0-12"), (12.9, "0-12"), (13, "13-19"), (19, "13-19"), (20, "20-39"),
     (39, "20-39"), (40, "40-59"), (59, "40-59"), (60, "60+"), (116, "60+")],
)
def test_age_band_edges(age: float, band: str) -> None:
    assert age_band(age) == band


@pytest.mark.parametrize("age", [-1, NAN])
def test_age_band_rejects_invalid(age: float) -> None:
    with pytest.raises(ValueError):
        age_band(age)


def test_gender_accuracy_thresholds_at_half_and_skips_nan() -> None:
    # p=0.5 counts as female; the NaN label is ignored -> 3 of 4 correct.
    true = np.array([1.0, 0.0, 1.0, NAN, 0.0])
    p_female = np.array([0.5, 0.49, 0.2, 0.9, 0.1])
    assert gender_accuracy(true, p_female) == pytest.approx(3 / 4)


def test_age_mae_known_values_and_nan_masking() -> None:
    assert age_mae([10, 20, 30], [12, 17, 30]) == pytest.approx(5 / 3)
    # The NaN label (with a wildly wrong prediction) must not count.
    assert age_mae([10, NAN, 30], [11, 500, 33]) == pytest.approx(2.0)


def test_cumulative_score_boundary_is_inclusive() -> None:
    true = np.array([30.0, 30.0, 30.0, 30.0, NAN])
    pred = np.array([35.0, 25.0, 35.01, 24.5, 0.0])
    assert cumulative_score(true, pred) == pytest.approx(2 / 4)
    assert cumulative_score(true, pred, within=6.0) == pytest.approx(1.0)


@pytest.mark.parametrize("metric", [gender_accuracy, age_mae, cumulative_score])
def test_metrics_return_nan_when_no_labels(metric) -> None:
    assert math.isnan(metric([NAN, NAN], [0.3, 40.0]))
    assert math.isnan(metric([], []))


def test_metrics_reject_length_mismatch() -> None:
    with pytest.raises(ValueError):
        age_mae([1, 2], [1, 2, 3])


def test_compute_group_metrics_uses_none_for_absent_labels() -> None:
    result = compute_group_metrics(
        age_true=[NAN, NAN], age_pred=[20, 30], gender_true=[1, 0], p_female=[0.8, 0.7]
    )
    assert result == GroupMetrics(n=2, gender_accuracy=0.5, age_mae=None, cs5=None)


def test_breakdown_orders_groups_and_skips_none() -> None:
    groups = ["b", None, "a", "b", "c"]
    age_true = [10, 50, 20, 30, 40]
    age_pred = [12, 0, 20, 40, 40]
    gender_true = [0, 1, 1, NAN, 1]
    p_female = [0.1, 0.0, 0.2, 0.9, 0.7]
    result = breakdown(groups, age_true, age_pred, gender_true, p_female, order=["c", "b"])
    # Listed groups first in the given order, then the unlisted "a".
    assert list(result) == ["c", "b", "a"]
    assert result["b"] == GroupMetrics(n=2, gender_accuracy=1.0, age_mae=6.0, cs5=0.5)
    assert result["a"] == GroupMetrics(n=1, gender_accuracy=0.0, age_mae=0.0, cs5=1.0)
    assert sum(m.n for m in result.values()) == 4


def test_breakdown_without_order_sorts_by_name() -> None:
    result = breakdown(["z", "y"], [1, 2], [1, 2], [0, 0], [0.0, 0.0])
    assert list(result) == ["y", "z"]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("20-29", (20, 29)),
        (" 0 - 2 ", (0, 2)),
        ("(25, 32)", (25, 32)),
        ("(0,2)", (0, 2)),
        ("70+", (70, math.inf)),
        ("more than 70", (70, math.inf)),
        ("More Than 70", (70, math.inf)),
        ("35", (35, 35)),
    ],
)
def test_parse_age_group_variants(text: str, expected: tuple[float, float]) -> None:
    assert parse_age_group(text) == expected


@pytest.mark.parametrize("text", ["adult", "", "20-", "30-20", "None"])
def test_parse_age_group_rejects_with_text_in_message(text: str) -> None:
    with pytest.raises(ValueError, match="age group"):
        parse_age_group(text)


def test_age_group_accuracy_inclusive_rounded_and_skips_none() -> None:
    groups = ["20-29", "(25, 32)", "70+", None, "0-2", "30-39"]
    # 29.4 rounds to 29 (inside), 32 is the inclusive edge, 90 is in 70+,
    # the None group is skipped, 3 is outside 0-2, 29.6 rounds to 30 (inside).
    preds = [29.4, 32.0, 90.0, 5.0, 3.0, 29.6]
    assert age_group_accuracy(groups, preds) == pytest.approx(4 / 5)


def test_age_group_accuracy_none_when_no_groups() -> None:
    assert age_group_accuracy([None, None], [1.0, 2.0]) is None
