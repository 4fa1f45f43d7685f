"""Knowledge distillation: train a model on its labels blended with a teacher model's predictions.

With `train.teacher` (a checkpoint, an ensemble too) and `train.teacher_weight` w, a training image's
targets become (1 - w) * label + w * the teacher's (P(female), exact age); BCE is linear in its target,
so the gender part is exactly the usual distillation loss (1 - w) * BCE(label) + w * BCE(teacher). A
missing label takes the teacher's value whole, so unlabelled images (LFW's ages) teach too; age groups
keep their interval; val and test keep their true labels. The teacher sees each training image once, at
its own input size and averaged with its mirror image; its predictions are kept in the run folder for --resume.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
from rich.console import Console

from agegender.config import RunConfig
from agegender.data.cache import decode_samples
from agegender.data.dataset import LabelledArrays, PreparedData
from agegender.errors import UserInputError
from agegender.inference.backends import predict_outputs
from agegender.models.checkpoint import file_sha256, load_checkpoint

TEACHER_TARGETS = "teacher_targets.npz"


def with_teacher_targets(data: PreparedData, config: RunConfig, run_dir: Path, console: Console) -> PreparedData:
    """`data` with its training targets blended with the teacher's (unchanged without train.teacher)."""
    if not config.train.teacher:
        return data
    age, p_female = teacher_predictions(Path(config.train.teacher), data.train, config, run_dir, console)
    train = blend_targets(data.train, age, p_female, config.train.teacher_weight)
    return dataclasses.replace(data, train=train)


def teacher_predictions(
    teacher: Path, train: LabelledArrays, config: RunConfig, run_dir: Path, console: Console
) -> tuple[np.ndarray, np.ndarray]:
    """(age, P(female)) of `teacher` for each training image, read back from the run folder when there."""
    if not teacher.is_file():
        raise UserInputError(f"{teacher}: train.teacher is not a checkpoint file")
    digest, saved = file_sha256(teacher), run_dir / TEACHER_TARGETS
    paths = np.array([str(s.path) for s in train.samples])
    if saved.is_file():
        with np.load(saved) as stored:
            if str(stored["teacher_sha256"]) == digest and np.array_equal(stored["paths"], paths):
                return stored["age"], stored["p_female"]
    console.print(f"teacher {teacher.name}: predicting {len(train)} training images")
    age, p_female = predict_with_mirror(teacher, train, config)
    run_dir.mkdir(parents=True, exist_ok=True)
    np.savez(saved, teacher_sha256=digest, paths=paths, age=age, p_female=p_female)
    return age, p_female


def predict_with_mirror(teacher: Path, train: LabelledArrays, config: RunConfig) -> tuple[np.ndarray, np.ndarray]:
    loaded = load_checkpoint(teacher)
    cache = Path(config.data.cache_dir) if config.data.cache_dir else None
    decoded = decode_samples(train.samples, loaded.image_size, cache)
    if len(decoded.samples) != len(train):  # the split was decoded once already, so this is a changed file
        raise UserInputError(f"{teacher}: {len(train) - len(decoded.samples)} training images became unreadable")
    ages, p_female = [], []
    for begin in range(0, len(train), 512):  # bounded memory: the mirrored copy is made per chunk
        faces = decoded.images[begin : begin + 512]
        both = predict_outputs(loaded.model, np.concatenate([faces, faces[:, :, ::-1]]))
        n = len(faces)
        ages.append((both.age[:n] + both.age[n:]) / 2)
        p_female.append((both.p_female[:n] + both.p_female[n:]) / 2)
    return np.concatenate(ages).astype(np.float32), np.concatenate(p_female).astype(np.float32)


def blend_targets(train: LabelledArrays, age: np.ndarray, p_female: np.ndarray, weight: float) -> LabelledArrays:
    """`train` with targets (1 - weight) * label + weight * teacher; the teacher's alone where a label is missing."""
    gender = np.where(np.isnan(train.gender), p_female, (1 - weight) * train.gender + weight * p_female)
    exact_age = np.where(np.isnan(train.age), age, (1 - weight) * train.age + weight * age).astype(np.float32)
    age_range = train.age_targets(np.arange(len(train))).copy()  # (N, 2) [low, high]
    exact_or_missing = np.isnan(age_range[:, 0]) | (age_range[:, 0] == age_range[:, 1])
    age_range[exact_or_missing] = exact_age[exact_or_missing, None]
    return dataclasses.replace(train, gender=gender.astype(np.float32), age=exact_age, age_range=age_range)
