"""Knowledge distillation: train a model on its labels blended with a teacher model's predictions.

With `train.teacher` (a checkpoint, an ensemble too) and `train.teacher_weight` w, a training image's
targets become (1 - w) * label + w * the teacher's (P(female), exact age); BCE is linear in its target,
so the gender part is exactly the usual distillation loss (1 - w) * BCE(label) + w * BCE(teacher). A
missing label takes the teacher's value whole, so unlabelled images (LFW's ages) teach too; age groups
keep their interval; val and test keep their true labels. The teacher sees each training image once, at
its own input size and averaged with its mirror image. Its predictions are cached per teacher file (SHA-256)
and image (path, size, modification time), so a resumed run, or another run with the same teacher and
more data, only predicts the images it has not seen.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
from rich.console import Console

from agegender.atomic_write import write_atomically
from agegender.config import RunConfig
from agegender.data.cache import decode_samples, default_cache_dir
from agegender.data.dataset import LabelledArrays, PreparedData
from agegender.data.samples import FaceSample
from agegender.errors import UserInputError
from agegender.inference.predictor import Predictor
from agegender.models.checkpoint import file_sha256

TEACHER_CACHE = "teacher"  # folder under the data cache


def with_teacher_targets(data: PreparedData, config: RunConfig, console: Console) -> PreparedData:
    """`data` with its training targets blended with the teacher's (unchanged without train.teacher)."""
    if not config.train.teacher:
        return data
    age, p_female = teacher_predictions(Path(config.train.teacher), data.train.samples, config, console)
    train = blend_targets(data.train, age, p_female, config.train.teacher_weight)
    return dataclasses.replace(data, train=train)


def cache_root(config: RunConfig) -> Path:
    return Path(config.data.cache_dir) if config.data.cache_dir else default_cache_dir()


def teacher_cache_file(teacher: Path, config: RunConfig) -> Path:
    return cache_root(config) / TEACHER_CACHE / f"{file_sha256(teacher)}.npz"


def image_key(path: Path) -> str:
    stat = Path(path).stat()
    return f"{Path(path).resolve()}|{stat.st_size}|{stat.st_mtime_ns}"


def teacher_predictions(
    teacher: Path, samples: list[FaceSample], config: RunConfig, console: Console
) -> tuple[np.ndarray, np.ndarray]:
    """(age, P(female)) of `teacher` for each sample, predicting only those its cache lacks."""
    if not teacher.is_file():
        raise UserInputError(f"{teacher}: train.teacher is not a checkpoint file")
    cache = teacher_cache_file(teacher, config)
    known = read_cache(cache)  # image key -> (age, P(female))
    keys = [image_key(s.path) for s in samples]
    missing = [i for i, key in enumerate(keys) if key not in known]
    if missing:
        console.print(f"teacher {teacher.name}: predicting {len(missing)} of {len(samples)} training images")
        age, p_female = predict_with_mirror(teacher, [samples[i] for i in missing], config)
        known.update((keys[i], (a, p)) for i, a, p in zip(missing, age, p_female))
        write_cache(cache, known)
    return (np.array([known[k][0] for k in keys], np.float32), np.array([known[k][1] for k in keys], np.float32))


def read_cache(path: Path) -> dict[str, tuple[float, float]]:
    if not path.is_file():
        return {}
    with np.load(path) as stored:
        return {str(k): (float(a), float(p)) for k, a, p in zip(stored["keys"], stored["age"], stored["p_female"])}


def write_cache(path: Path, known: dict[str, tuple[float, float]]) -> None:
    values = np.array(list(known.values()), np.float32).reshape(-1, 2)  # (N, 2) age, P(female)

    def save(temporary: str) -> None:
        with open(temporary, "wb") as file:
            np.savez(file, keys=np.array(list(known)), age=values[:, 0], p_female=values[:, 1])

    write_atomically(path, save)


def predict_with_mirror(teacher: Path, samples: list[FaceSample], config: RunConfig) -> tuple[np.ndarray, np.ndarray]:
    """The teacher's (age, P(female)) per sample, decoded at its input size, averaged with the mirror image."""
    predictor = Predictor.from_checkpoint(teacher, tta=True)
    decoded = decode_samples(samples, predictor.model.image_size, cache_root(config))
    if len(decoded.samples) != len(samples):  # the split was decoded once already, so this is a changed file
        raise UserInputError(f"{teacher}: {len(samples) - len(decoded.samples)} training images became unreadable")
    # 512 at a time: tta's mirrored copy of the images is made per chunk
    chunks = [predictor.model.forward(decoded.images[begin : begin + 512]) for begin in range(0, len(samples), 512)]
    ages, p_female = (np.concatenate(parts).astype(np.float32) for parts in ([c.age for c in chunks], [c.p_female for c in chunks]))
    return ages, p_female


def blend_targets(train: LabelledArrays, age: np.ndarray, p_female: np.ndarray, weight: float) -> LabelledArrays:
    """`train` with targets (1 - weight) * label + weight * teacher; the teacher's alone where a label is missing."""
    gender = np.where(np.isnan(train.gender), p_female, (1 - weight) * train.gender + weight * p_female)
    exact_age = np.where(np.isnan(train.age), age, (1 - weight) * train.age + weight * age).astype(np.float32)
    age_range = train.age_targets(np.arange(len(train))).copy()  # (N, 2) [low, high]
    exact_or_missing = np.isnan(age_range[:, 0]) | (age_range[:, 0] == age_range[:, 1])
    age_range[exact_or_missing] = exact_age[exact_or_missing, None]
    return dataclasses.replace(train, gender=gender.astype(np.float32), age=exact_age, age_range=age_range)
