"""An evaluation report: overall metrics plus per-race, per-gender and per-age-band breakdowns."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

from agegender.data.samples import GENDER_NAMES, RACE_NAMES, FaceSample
from agegender.evaluation.group_metrics import AgeGroupReport, GroupAccuracy
from agegender.evaluation.metrics import (
    AGE_BAND_NAMES,
    GroupMetrics,
    age_band,
    age_group_accuracy,
    breakdown,
    compute_group_metrics,
)
from agegender.inference.age_interval import coverage


@dataclass(frozen=True)
class DetectionSummary:
    """What detection did to a photo evaluation; `report` of the Evaluation covers the faces found."""

    detector: str
    crop: dict  # the FaceCropSpec used (method, template, margin)
    images: int  # readable images searched
    no_face: int  # images without a detected face: errors end to end
    several_faces: int  # images with more than one face (the largest was scored)
    box_fallbacks: int  # scored faces box-cropped because an aligned crop had no usable keypoints
    end_to_end_gender_accuracy: float | None  # correct / labelled images, a missed face counting as wrong
    end_to_end_per_gender: dict[str, float | None]  # the same per true gender
    no_face_files: tuple[str, ...]  # the first SHOWN_FILES of them


@dataclass(frozen=True)
class EvaluationReport:
    """Metrics over a whole evaluation set; None where no sample carried the label."""

    n: int
    gender_accuracy: float | None
    age_mae: float | None
    cs5: float | None
    age_group_accuracy: float | None
    per_race: dict[str, GroupMetrics]
    per_gender: dict[str, GroupMetrics]
    per_age_band: dict[str, GroupMetrics]
    age_groups: AgeGroupReport | None = None  # with --age-groups: group accuracy, 1-off, confusion
    per_dataset: dict[str, GroupMetrics] = field(default_factory=dict)  # several folders: each one's part
    # Share of exact ages inside their predicted 80% interval, and its mean width in years (None: no distribution)
    age_interval_coverage: float | None = None
    age_interval_width: float | None = None


def _label_array(values: list[float | int | None]) -> np.ndarray:
    """Float array with NaN standing for a missing label, as the metrics expect."""
    return np.array([math.nan if v is None else float(v) for v in values], dtype=np.float64)


def build_report(
    samples: list[FaceSample], age_pred: np.ndarray, p_female: np.ndarray, age_groups: AgeGroupReport | None = None,
    datasets: list[str] | None = None, age_intervals: np.ndarray | None = None,
) -> EvaluationReport:
    """Score predictions (one per sample, same order) against the samples' labels; `datasets` (the folder
    name of each sample, for several folders) adds a breakdown per dataset; `age_intervals` ((N, 2) years)
    their coverage of the true ages.

    Breakdown groups come from the TRUE labels, so e.g. "female" means samples
    labelled female, whatever the model predicted.
    """
    age_pred = np.asarray(age_pred, dtype=np.float64).reshape(-1)
    p_female = np.asarray(p_female, dtype=np.float64).reshape(-1)
    if not len(samples) == age_pred.size == p_female.size:
        raise ValueError(
            f"need one prediction per sample: {len(samples)} samples, "
            f"{age_pred.size} ages, {p_female.size} gender probabilities"
        )
    age_true = _label_array([s.age for s in samples])
    gender_true = _label_array([s.gender for s in samples])
    metric_arrays = (age_true, age_pred, gender_true, p_female)

    race_groups = [None if s.race is None else RACE_NAMES[s.race] for s in samples]
    gender_groups = [None if s.gender is None else GENDER_NAMES[s.gender] for s in samples]
    band_groups = [None if s.age is None else age_band(s.age) for s in samples]

    overall = compute_group_metrics(*metric_arrays)
    interval_coverage = interval_width = None
    if age_intervals is not None and np.isfinite(age_true).any():
        interval_coverage = coverage(age_intervals, age_true)
        interval_width = float(np.mean(age_intervals[:, 1] - age_intervals[:, 0]))
    return EvaluationReport(
        n=overall.n,
        gender_accuracy=overall.gender_accuracy,
        age_mae=overall.age_mae,
        cs5=overall.cs5,
        age_group_accuracy=age_group_accuracy([s.age_group for s in samples], age_pred),
        per_race=breakdown(race_groups, *metric_arrays, order=RACE_NAMES),
        per_gender=breakdown(gender_groups, *metric_arrays, order=GENDER_NAMES),
        per_age_band=breakdown(band_groups, *metric_arrays, order=AGE_BAND_NAMES),
        age_groups=age_groups,
        per_dataset={} if datasets is None else breakdown(list(datasets), *metric_arrays, order=tuple(dict.fromkeys(datasets))),
        age_interval_coverage=interval_coverage,
        age_interval_width=interval_width,
    )


def _json_safe(value: Any) -> Any:
    """Replace NaN/inf with None and numpy scalars with Python ones, recursively."""
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    return value


def report_to_dict(report: EvaluationReport) -> dict[str, Any]:
    """JSON-serialisable dict of the report (NaN becomes None)."""
    return _json_safe(asdict(report))


def report_from_dict(saved: dict[str, Any]) -> EvaluationReport:
    """The inverse of report_to_dict (e.g. metrics.json's val and test): a None stays the report's None."""
    breakdowns = {
        key: {name: GroupMetrics(**metrics) for name, metrics in saved[key].items()}
        for key in ("per_race", "per_gender", "per_age_band", "per_dataset")
        if key in saved  # per_dataset: absent from reports written before it
    }
    age_groups = saved.get("age_groups")
    age_groups = None if age_groups is None else _age_groups_from_dict(age_groups)
    return EvaluationReport(**{**saved, **breakdowns, "age_groups": age_groups})


def _age_groups_from_dict(saved: dict[str, Any]) -> AgeGroupReport:
    def accuracies(rows: dict[str, dict]) -> dict[str, GroupAccuracy]:
        return {name: GroupAccuracy(**row) for name, row in rows.items()}

    typed = {
        "groups": tuple(saved["groups"]),
        "overall": GroupAccuracy(**saved["overall"]),
        "per_gender": accuracies(saved["per_gender"]),
        "per_group": accuracies(saved["per_group"]),
        "confusion": tuple(tuple(row) for row in saved["confusion"]),
    }
    return AgeGroupReport(**{**saved, **typed})


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}"


def _years(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def format_breakdown_table(title: str, groups: dict[str, GroupMetrics]) -> Table:
    """One row per group: n, gender accuracy %, age MAE, CS@5 %."""
    table = Table(title=title)
    table.add_column("group")
    for column in ("n", "gender acc %", "age MAE", "CS@5 %"):
        table.add_column(column, justify="right")
    for name, metrics in groups.items():
        table.add_row(
            name,
            str(metrics.n),
            _percent(metrics.gender_accuracy),
            _years(metrics.age_mae),
            _percent(metrics.cs5),
        )
    return table


def format_overall_line(report: EvaluationReport) -> str:
    parts = [
        f"n={report.n}",
        f"gender acc {_percent(report.gender_accuracy)}%",
        f"age MAE {_years(report.age_mae)}",
        f"CS@5 {_percent(report.cs5)}%",
    ]
    if report.age_group_accuracy is not None:
        parts.append(f"age-group acc {_percent(report.age_group_accuracy)}%")
    if report.age_interval_coverage is not None:
        parts.append(f"80% age interval covers {_percent(report.age_interval_coverage)}% "
                     f"(mean width {report.age_interval_width:.1f} years)")  # fmt: skip
    return "Overall: " + ", ".join(parts)


def print_report(report: EvaluationReport, console: Console) -> None:
    """Overall line, then one table per non-empty breakdown."""
    console.print(format_overall_line(report))
    breakdowns = (
        ("By dataset", report.per_dataset),
        ("By race", report.per_race),
        ("By gender", report.per_gender),
        ("By age band", report.per_age_band),
    )
    for title, groups in breakdowns:
        if groups:
            console.print(format_breakdown_table(title, groups))
    if report.age_groups is not None:
        print_age_group_report(report.age_groups, console)


def format_age_group_line(groups: AgeGroupReport) -> str:
    source = "most probable group of the age distribution" if groups.from_distribution else "group of the predicted age"
    overall = groups.overall
    return (
        f"Age groups ({groups.scheme}; {source}): n={overall.n}, exact {_percent(overall.accuracy)}%, "
        f"1-off {_percent(overall.one_off)}%" + (f"; {groups.unscored} without a scoreable label" if groups.unscored else "")
    )


def format_group_accuracy_table(title: str, rows: dict[str, GroupAccuracy]) -> Table:
    table = Table(title=title)
    table.add_column("group")
    for column in ("n", "exact %", "1-off %"):
        table.add_column(column, justify="right")
    for name, accuracy in rows.items():
        table.add_row(name, str(accuracy.n), _percent(accuracy.accuracy), _percent(accuracy.one_off))
    return table


def format_confusion_table(groups: AgeGroupReport) -> Table:
    table = Table(title="Age-group confusion (rows: true group, columns: predicted)")
    table.add_column("true")
    for name in groups.groups:
        table.add_column(name, justify="right")
    for name, row in zip(groups.groups, groups.confusion):
        table.add_row(name, *(str(count) for count in row))
    return table


def print_age_group_report(groups: AgeGroupReport, console: Console) -> None:
    console.print(format_age_group_line(groups))
    for title, rows in (("Age groups by gender", groups.per_gender), ("Age groups by true group", groups.per_group)):
        if rows:
            console.print(format_group_accuracy_table(title, rows))
    console.print(format_confusion_table(groups))
