"""What a finished run reports: typed metrics (metrics.json is their JSON), measured on val and test
with the best weights, and the learning curves drawn from history.csv."""

from __future__ import annotations

import json
import statistics
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from torch import nn

from agegender.data.dataset import LabelledArrays, dataset_names
from agegender.data.readers import ReadResult
from agegender.evaluation.plots import plot_learning_curves
from agegender.evaluation.report import EvaluationReport, build_report, report_from_dict, report_to_dict
from agegender.models.backends import predict_arrays
from agegender.models.summary import ModelSummary
from agegender.training.rundir import CURVES, HISTORY, METRICS


@dataclass(frozen=True)
class PhaseSummary:
    """One phase of a two-phase run; a phase finished before a --resume keeps its first three fields only."""

    name: str
    lr: float
    first_trained_block: int | None
    trainable_parameters: int | None = None
    cache_seconds: float | None = None  # absent when an earlier phase cached this phase's activations
    stopped_epoch: int | None = None
    early_stopped: bool | None = None
    best_epoch_in_phase: int | None = None


@dataclass(frozen=True)
class FitMetrics:
    model: ModelSummary
    best_epoch: int
    stopped_epoch: int
    early_stopped: bool
    split_sizes: dict[str, int]
    data_summary: str
    train_at_best: dict[str, float]  # history.csv's train_* columns at the best epoch
    val: EvaluationReport | None  # of the best weights; None: an empty split
    test: EvaluationReport | None
    timing: dict[str, Any]  # timing_summary
    phases: tuple[PhaseSummary, ...] | None = None  # two-phase (pretrained) runs only
    feature_cache_seconds: float | None = None  # two-phase runs: caching, all sessions

    def to_dict(self) -> dict[str, Any]:
        """metrics.json: the fields of two-phase runs only appear in theirs, and a phase lists what it has."""
        result = {f.name: getattr(self, f.name) for f in fields(self)}
        result["model"] = {**asdict(self.model), "feature_map": list(self.model.feature_map)}
        for split in ("val", "test"):
            result[split] = None if result[split] is None else report_to_dict(result[split])
        if self.phases is None:
            del result["phases"], result["feature_cache_seconds"]
        else:
            result["phases"] = [{k: v for k, v in asdict(p).items() if v is not None} for p in self.phases]
        return result

    @classmethod
    def from_dict(cls, saved: dict[str, Any]) -> FitMetrics:
        phases, model = saved.get("phases"), saved["model"]
        reports = {split: None if saved[split] is None else report_from_dict(saved[split]) for split in ("val", "test")}
        typed = {"model": ModelSummary(**{**model, "feature_map": tuple(model["feature_map"])}),
                 "phases": None if phases is None else tuple(PhaseSummary(**p) for p in phases)}  # fmt: skip
        return cls(**{**saved, **reports, **typed})


@dataclass(frozen=True)
class FitResult:
    run_dir: Path
    best_epoch: int
    stopped_epoch: int
    metrics: FitMetrics


def timing_summary(rows: list[dict[str, str]], best_epoch: int, n_train: int, batch_size: int) -> dict[str, Any]:
    seconds = [float(r["seconds"]) for r in rows]
    if not seconds:
        return {}
    median = statistics.median(seconds)
    steps = max(1, -(-n_train // batch_size))
    summary: dict[str, Any] = {
        "median_epoch_seconds": median,
        "ms_per_step": 1000 * median / steps,
        "train_images_per_second": n_train / median if median else float("nan"),
        "total_seconds": sum(seconds),
        "seconds_to_best_epoch": sum(seconds[:best_epoch]),
    }
    seconds_by_phase: dict[str, list[float]] = {}
    for row, row_seconds in zip(rows, seconds):
        seconds_by_phase.setdefault(row.get("phase", "train"), []).append(row_seconds)
    if len(seconds_by_phase) > 1:  # two-phase runs: heads-only steps and backbone steps differ by 100x
        summary["ms_per_step_by_phase"] = {p: 1000 * statistics.median(t) / steps for p, t in seconds_by_phase.items()}
    return summary


def split_report(model: nn.Module, arrays: LabelledArrays, channels_last: bool,
                 read: ReadResult | None = None) -> EvaluationReport | None:  # fmt: skip
    """The split's report; `read` (the run's folders) adds a breakdown per dataset when there are several."""
    if len(arrays) == 0:
        return None
    age, p_female = predict_arrays(model, arrays.images, channels_last=channels_last)
    datasets = None if read is None else dataset_names(arrays.samples, read)
    return build_report(arrays.samples, age, p_female, datasets=datasets)


def final_val_line(val: EvaluationReport) -> str:
    """Val gender accuracy and MAE; age-group accuracy instead of a MAE when val has groups only."""
    parts = [f"val gender acc {val.gender_accuracy:.4f}" if val.gender_accuracy is not None else "no val gender labels"]
    if val.age_mae is not None:
        parts.append(f"age MAE {val.age_mae:.2f}")
    if val.age_group_accuracy is not None:
        parts.append(f"age-group acc {val.age_group_accuracy:.4f}")
    return ", ".join(parts)


def train_at_best(rows: list[dict[str, str]], best_epoch: int) -> dict[str, float]:
    best_row = next(r for r in rows if int(r["epoch"]) == best_epoch)
    return {k: float(v) for k, v in best_row.items() if k.startswith("train_")}


def write_metrics(metrics: FitMetrics, run_dir: Path, model_name: str) -> None:
    """metrics.json, and the learning curves drawn from history.csv."""
    (run_dir / METRICS).write_text(json.dumps(metrics.to_dict(), indent=2))
    plot_learning_curves(run_dir / HISTORY, run_dir / CURVES, title=f"{model_name} ({run_dir.name})")
