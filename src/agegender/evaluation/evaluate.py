"""evaluate(): a checkpoint measured on a labelled folder (or one split of it)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from agegender.config import ConfigError, DataConfig
from agegender.data.age_groups import AgeGroupScheme, group_probabilities
from agegender.data.dataset import LabelledArrays, dataset_names, decode_split, make_splits
from agegender.data.readers import DataError, ReadResult, Skipped, as_folders, read_folders
from agegender.evaluation.group_metrics import score_age_groups
from agegender.evaluation.report import DetectionSummary, EvaluationReport, build_report
from agegender.inference.predictor import Predictor

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
        raise ConfigError(f"unknown split '{split}'; choose one of {', '.join(SPLITS)}")
    if split == "all":
        return read.samples
    return getattr(make_splits(read, checkpoint_data), split)


def decode_evaluation_split(
    predictor: Predictor, data_dir: Path | Sequence[Path], split: str, cache_dir: Path | None = None
) -> tuple[ReadResult, LabelledArrays, list[Skipped]]:
    """`split` of the labelled folders, recomputed with the model's own split settings and decoded at its
    input size: what evaluate() scores and calibrate() fits on."""
    read = read_folders(as_folders(data_dir))
    trained_on = predictor.model.info.config.data
    samples = select_split(read, split, trained_on)
    data_config = dataclasses.replace(
        trained_on, path=tuple(map(str, as_folders(data_dir))), cache_dir=str(cache_dir) if cache_dir else trained_on.cache_dir,
        image_size=predictor.model.image_size,
    )
    arrays, undecodable = decode_split(samples, data_config)
    return read, arrays, undecodable


def sample_split_faces(
    predictor: Predictor, data_dir: Path | Sequence[Path], n: int, split: str = "train", seed: int = 0
) -> np.ndarray:
    """`n` seeded faces of `split`, decoded at the model's size as evaluate does: what static int8
    quantisation measures activation ranges on (export.quantize; the train split, never a reported one)."""
    _, arrays, _ = decode_evaluation_split(predictor, data_dir, split)
    if len(arrays) == 0:
        raise DataError(f"{data_dir}: no readable faces in the {split} split")
    chosen = np.random.default_rng(seed).choice(len(arrays), min(n, len(arrays)), replace=False)
    return arrays.images[np.sort(chosen)]


def evaluate(
    predictor: Predictor,
    data_dir: Path | Sequence[Path],
    split: str = "all",
    cache_dir: Path | None = None,
    age_groups: AgeGroupScheme | None = None,
) -> Evaluation:
    """Score the predictor on `split` of a labelled folder, or of several read together; with
    `age_groups`, also on that scheme's groups (evaluation/group_metrics.py). Folders are split one by
    one, so `split` of one folder of a several-folder run is that folder's part of the run's split."""
    read, arrays, undecodable = decode_evaluation_split(predictor, data_dir, split, cache_dir)
    if len(arrays) == 0:
        raise DataError(f"{data_dir}: no readable images to evaluate ({len(undecodable)} unreadable skipped)")
    datasets = dataset_names(arrays.samples, read)
    predicted = predictor.model.forward(arrays.images)  # with flip averaging when tta is on
    groups = None
    if age_groups is not None:
        probs = group_probabilities(age_groups, predicted.age, predicted.age_probs)  # (N, G)
        groups = score_age_groups(arrays.samples, probs, age_groups, from_distribution=predicted.age_probs is not None)
    report = build_report(arrays.samples, predicted.age, predicted.p_female, age_groups=groups, datasets=datasets,
                          age_intervals=predictor.model.intervals(predicted))  # fmt: skip
    return Evaluation(report, read, undecodable, split)
