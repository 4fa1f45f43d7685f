from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from rich.console import Console

from agegender.data.age_groups import resolve_age_groups
from agegender.data.samples import FaceSample
from agegender.evaluation.group_metrics import score_age_groups
from agegender.evaluation.metrics import GroupMetrics
from agegender.evaluation.report import build_report, print_report, report_from_dict, report_to_dict


def _samples() -> list[FaceSample]:
    return [
        FaceSample(Path("a.jpg"), age=10, gender=0, race=0),  # pred 12, p 0.2 -> right
        FaceSample(Path("b.jpg"), age=25, gender=1, race=1),  # pred 31, p 0.8 -> right
        FaceSample(Path("c.jpg"), age=45, gender=1, race=0),  # pred 44, p 0.3 -> wrong
        FaceSample(Path("d.jpg"), age=70, gender=0, race=2),  # pred 60, p 0.6 -> wrong
        FaceSample(Path("e.jpg"), age=None, gender=0, race=None, age_group="20-29"),  # pred 28
        FaceSample(Path("f.jpg"), age=15, gender=None, race=1, age_group="(8, 12)"),  # pred 15
    ]


AGE_PRED = np.array([12.0, 31.0, 44.0, 60.0, 28.0, 15.0])
P_FEMALE = np.array([0.2, 0.8, 0.3, 0.6, 0.1, 0.9])


def test_build_report_overall() -> None:
    report = build_report(_samples(), AGE_PRED, P_FEMALE)
    assert report.n == 6
    # Gender labelled for a-e: right a, b, e -> 3/5.
    assert report.gender_accuracy == pytest.approx(3 / 5)
    # Age labelled for a, b, c, d, f: errors 2, 6, 1, 10, 0.
    assert report.age_mae == pytest.approx(19 / 5)
    assert report.cs5 == pytest.approx(3 / 5)
    # e: 28 in 20-29 (hit), f: 15 not in 8-12 (miss).
    assert report.age_group_accuracy == pytest.approx(1 / 2)


def test_build_report_breakdowns_use_true_labels_in_fixed_order() -> None:
    report = build_report(_samples(), AGE_PRED, P_FEMALE)
    assert list(report.per_race) == ["White", "Black", "Asian"]
    assert report.per_race["White"] == GroupMetrics(n=2, gender_accuracy=0.5, age_mae=1.5, cs5=1.0)
    assert report.per_race["Black"] == GroupMetrics(n=2, gender_accuracy=1.0, age_mae=3.0, cs5=0.5)

    assert list(report.per_gender) == ["male", "female"]
    assert report.per_gender["male"] == GroupMetrics(n=3, gender_accuracy=2 / 3, age_mae=6.0, cs5=0.5)
    assert report.per_gender["female"].n == 2

    assert list(report.per_age_band) == ["0-12", "13-19", "20-39", "40-59", "60+"]
    assert report.per_age_band["13-19"] == GroupMetrics(n=1, gender_accuracy=None, age_mae=0.0, cs5=1.0)
    assert report.per_age_band["60+"].age_mae == pytest.approx(10.0)


def test_build_report_rejects_length_mismatch() -> None:
    with pytest.raises(ValueError, match="one prediction per sample"):
        build_report(_samples(), AGE_PRED[:3], P_FEMALE)


def test_report_to_dict_is_json_and_has_none_for_missing() -> None:
    samples = [FaceSample(Path("x.jpg"), gender=1)]
    report = build_report(samples, np.array([30.0]), np.array([0.7]))
    as_dict = report_to_dict(report)
    text = json.dumps(as_dict, allow_nan=False)  # raises if any NaN survived
    assert json.loads(text)["age_mae"] is None
    assert as_dict["gender_accuracy"] == 1.0
    assert as_dict["per_gender"]["female"] == {"n": 1, "gender_accuracy": 1.0, "age_mae": None, "cs5": None}
    assert as_dict["per_race"] == {}


def test_report_from_dict_rebuilds_the_report_from_its_json() -> None:
    groups = score_age_groups(_samples(), np.eye(8)[[0, 4, 5, 7, 4, 2]], resolve_age_groups("adience"), True)
    report = build_report(_samples(), AGE_PRED, P_FEMALE, age_groups=groups)
    rebuilt = report_from_dict(json.loads(json.dumps(report_to_dict(report))))
    assert rebuilt == report
    assert rebuilt.per_age_band["13-19"].gender_accuracy is None  # a missing value stays None
    assert isinstance(rebuilt.age_groups.confusion, tuple) and isinstance(rebuilt.age_groups.overall.accuracy, float)
    no_labels = build_report([FaceSample(Path("x.jpg"))], np.array([30.0]), np.array([0.7]))
    assert report_from_dict(report_to_dict(no_labels)) == no_labels


def test_print_report_shows_overall_and_tables() -> None:
    console = Console(record=True, width=120)
    print_report(build_report(_samples(), AGE_PRED, P_FEMALE), console)
    text = console.export_text()
    assert "n=6" in text
    assert "gender acc 60.0%" in text
    assert "age MAE 3.80" in text
    for title in ("By race", "By gender", "By age band"):
        assert title in text
    assert "CS@5 %" in text
