"""The per-backbone table of `agegender compare`: one row per model, its runs' numbers side by side.

A row joins the runs of one model name (an ensemble checkpoint with evaluations only is a row of its own): a run trained on a subset (`--limit`, the 5k protocol)
gives the "subset val" and "subset test" columns, a run on all images the "full test" column.
Photo columns come from `agegender evaluate --detect --report RUN_DIR/evaluations/NAME.json`:
the end-to-end gender accuracy on those photos (no face found counts as wrong), women / men.
Parameters come from metrics.json; faces/s is measured by compare itself (see timed_predictions).
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from agegender.config import RunConfig
from agegender.errors import UserInputError
from agegender.models.backends import FaceOutputs, predict_outputs

EVALUATIONS_DIR = "evaluations"
WARM_UP_FACES = 32
MIN_WORST_GROUP = 20  # images a race group needs to be named the worst


class Run(Protocol):
    """What this table reads of evaluation.compare's Run (which imports this module)."""

    run_dir: Path
    config: RunConfig
    metrics: dict[str, Any]
    evaluations: dict[str, dict[str, Any]]
    faces_per_second: float | None
    model_name: str


class EvaluationFileError(UserInputError):
    """A file in a run's evaluations folder that is not an `evaluate --report` JSON object."""


def load_evaluations(run_dir: Path) -> dict[str, dict[str, Any]]:
    """RUN_DIR/evaluations/*.json by file name (without .json), written by `evaluate --report`."""
    evaluations = {}
    for path in sorted((Path(run_dir) / EVALUATIONS_DIR).glob("*.json")):
        try:
            loaded = json.loads(path.read_text())
        except (OSError, ValueError) as error:
            raise EvaluationFileError(f"{path}: not a readable JSON report ({error})") from error
        if not isinstance(loaded, dict):
            raise EvaluationFileError(f"{path}: not an `evaluate --report` JSON object")
        evaluations[path.stem] = loaded
    return evaluations


def timed_predictions(model: torch.nn.Module, images: np.ndarray) -> tuple[FaceOutputs, float | None]:
    """The model's predictions for already-sized uint8 crops, and its faces per second on them (no
    decoding or detection), batched as evaluation batches them, after one warm-up batch; None for too
    few images to time."""
    if len(images) < 2 * WARM_UP_FACES:
        return predict_outputs(model, images), None
    predict_outputs(model, images[:WARM_UP_FACES])
    start = time.perf_counter()
    predicted = predict_outputs(model, images)
    return predicted, len(images) / (time.perf_counter() - start)


@dataclass
class BackboneRow:
    model: str
    runs: dict[str, Run] = field(default_factory=dict)  # "subset" / "full" -> run

    def preferred(self) -> list[Run]:
        return [self.runs[kind] for kind in ("full", "subset") if kind in self.runs]


def group_by_backbone(runs: list[Run]) -> list[BackboneRow]:
    """Runs of one model name share a row (one subset run, one full run); a second run of the same
    kind starts a row of its own."""
    rows: list[BackboneRow] = []
    for run in runs:
        kind = "subset" if run.config.data.limit else "full"
        row = next((r for r in rows if r.model == run.model_name and kind not in r.runs), None)
        if row is None:
            row = BackboneRow(run.model_name)
            rows.append(row)
        row.runs[kind] = run
    return rows


def photo_names(runs: list[Run]) -> list[str]:
    """The evaluation files with a detection summary (photos), across all runs, first seen first."""
    return list(dict.fromkeys(name for run in runs for name, e in run.evaluations.items() if "detection" in e))


def _pct(value: float | None) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{100 * value:.1f}%"


def _gender_mae(run: Run | None, split: str) -> str:
    report = (run.metrics.get(split) or {}) if run else {}
    if not report:
        return "-"
    mae = report.get("age_mae")
    return f"{_pct(report.get('gender_accuracy'))} / {'-' if mae is None else f'{mae:.2f}'}"


def _photos_cell(row: BackboneRow, name: str) -> str:
    for run in row.preferred():
        detection = run.evaluations.get(name, {}).get("detection")
        if detection:
            per_gender = detection.get("end_to_end_per_gender", {})
            women, men = _pct(per_gender.get("female")), _pct(per_gender.get("male"))
            return f"{_pct(detection.get('end_to_end_gender_accuracy'))} ({women} / {men})"
    return "-"


def _worst_race(row: BackboneRow) -> str:
    for run in row.preferred():
        races = (run.metrics.get("test") or {}).get("per_race", {})
        scored = {n: g for n, g in races.items() if g.get("gender_accuracy") is not None and g["n"] >= MIN_WORST_GROUP}
        if scored:
            name = min(scored, key=lambda n: scored[n]["gender_accuracy"])
            return f"{name} {_pct(scored[name]['gender_accuracy'])}"
    return "-"


def _first(row: BackboneRow, read) -> Any:
    return next((value for value in map(read, row.preferred()) if value is not None), None)


def backbone_table(runs: list[Run]) -> tuple[list[str], list[list[str]]]:
    """Header and rows of the per-backbone table (see the module docstring)."""
    photos = photo_names(runs)
    limits = {run.config.data.limit for run in runs if run.config.data.limit}
    subset = f"{limits.pop():,} images" if len(limits) == 1 else "subset"
    header = ["backbone (runs)", f"{subset}: val gender / MAE", f"{subset}: test gender / MAE",
              "full: test gender / MAE", *[f"{name} photos: gender (women / men)" for name in photos],
              "worst race (test gender)", "parameters", f"faces/s (torch threads: {torch.get_num_threads()})"]  # fmt: skip
    rows = []
    for row in group_by_backbone(runs):
        parameters = _first(row, lambda run: run.metrics.get("model", {}).get("parameters"))
        speed = _first(row, lambda run: run.faces_per_second)
        rows.append([
            f"{row.model} ({', '.join(run.run_dir.name for run in row.runs.values())})",
            _gender_mae(row.runs.get("subset"), "val"), _gender_mae(row.runs.get("subset"), "test"),
            _gender_mae(row.runs.get("full"), "test"), *[_photos_cell(row, name) for name in photos],
            _worst_race(row), "-" if parameters is None else f"{parameters / 1e6:.2f} M",
            "-" if speed is None else f"{speed:.0f}",
        ])  # fmt: skip
    return header, rows
