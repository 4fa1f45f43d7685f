"""evaluate(): a checkpoint measured on a labelled folder (or one split of it)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from agegender.config import DataConfig
from agegender.data.dataset import decode_split, make_splits
from agegender.data.readers import ReadResult, Skipped, read_folder
from agegender.evaluation.report import EvaluationReport, build_report
from agegender.inference.predictor import Predictor

if TYPE_CHECKING:
    from agegender.evaluation.photos import DetectionSummary

SPLITS = ("all", "train", "val", "test")


@dataclass(frozen=True)
class Evaluation:
    report: EvaluationReport
    read: ReadResult
    undecodable: list[Skipped]
    split: str
    detection: DetectionSummary | None = None  # photos (evaluate --detect): what the detector found


def select_split(read: ReadResult, split: str, checkpoint_data: DataConfig):
    """The samples of `split`, recomputed with the seed and fractions the model was trained with."""
    if split not in SPLITS:
        raise ValueError(f"unknown split '{split}'; choose one of {', '.join(SPLITS)}")
    if split == "all":
        return read.samples
    return getattr(make_splits(read, checkpoint_data), split)


def evaluate(predictor: Predictor, data_dir: Path, split: str = "all", cache_dir: Path | None = None) -> Evaluation:
    read = read_folder(data_dir)
    trained_on = predictor.checkpoint.config.data
    samples = select_split(read, split, trained_on)
    data_config = dataclasses.replace(
        trained_on, path=str(data_dir), cache_dir=str(cache_dir) if cache_dir else trained_on.cache_dir,
        image_size=predictor.image_size,
    )
    arrays, undecodable = decode_split(samples, data_config)
    if len(arrays) == 0:
        raise ValueError(f"{data_dir}: no readable images to evaluate")
    age, p_female = predictor.predict_prepared(arrays.images)  # with flip averaging when tta is on
    return Evaluation(build_report(arrays.samples, age, p_female), read, undecodable, split)
