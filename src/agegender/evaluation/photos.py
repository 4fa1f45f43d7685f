"""evaluate_photos(): a checkpoint measured on labelled PHOTOS (faces not cropped), end to end.

Each image is searched with the predictor's detector; its LARGEST face is cropped the way the
predictor crops (data.align.crop_face through Predictor.crop_detections) and scored against the
image's labels. Images are searched a chunk at a time and crops go through the model in batches. An image where no face is
found is counted apart and, in the end-to-end accuracy, as an error: a user who gives that photo
gets no answer.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np
from rich.console import Console

from agegender.data.align import FaceCrop
from agegender.data.images import ImageLoadError, load_rgb
from agegender.data.readers import DataError, Skipped, as_folders, read_folders
from agegender.data.samples import GENDER_NAMES, FaceSample
from agegender.evaluation.evaluate import Evaluation, select_split
from agegender.evaluation.metrics import GENDER_THRESHOLD
from agegender.evaluation.report import DetectionSummary, build_report
from agegender.inference.detectors.base import largest_detection  # noqa: F401  (re-exported: tests and callers)
from agegender.inference.predictor import Predictor
from agegender.inference.streams.frames import CHUNK_IMAGES, Frame, chunk_frames

BATCH_FACES = 256  # crops per forward pass
SHOWN_FILES = 20  # no-face file names kept in the summary


@dataclass(frozen=True)
class _Found:
    sample: FaceSample
    crop_method: str | None  # how its largest face was cropped ("aligned" or "box"); None: no face found
    faces: int


def _detect_each(
    predictor: Predictor,
    samples: list[FaceSample],
    undecodable: list[Skipped],
    progress: Callable[[int, int], None] | None,
) -> Iterator[tuple[_Found, FaceCrop | None]]:
    """Per readable image: what was found and the crop of its largest face (unreadable images go to
    `undecodable`). Images are searched in chunks, one detector call each (as `predict DIR` does),
    so only a chunk of images and the crops waiting for the model are in memory."""
    for chunk in chunk_frames(_decoded(samples, undecodable, progress), CHUNK_IMAGES):
        detections = predictor.detector.detect_batch([frame.image for frame in chunk])
        for frame, found in zip(chunk, detections):
            largest = largest_detection(found)
            crop = None if largest is None else predictor.model.crop(frame.image, [largest], predictor.detector)[0]
            yield _Found(samples[frame.index], crop and crop.method, len(found)), crop


def _decoded(samples: list[FaceSample], undecodable: list[Skipped],
             progress: Callable[[int, int], None] | None) -> Iterator[Frame]:  # fmt: skip
    """Each readable image as a Frame whose index is its place in `samples`."""
    for index, sample in enumerate(samples):
        try:
            yield Frame(load_rgb(sample.path), str(sample.path), index)
        except ImageLoadError as error:
            undecodable.append(Skipped(str(sample.path), error.reason))
        finally:
            if progress:
                progress(1, len(samples))


def _predict_batched(predictor: Predictor, crops: Iterator[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """(age, P(female)) for crops arriving one by one, run through the model BATCH_FACES at a time."""
    ages, p_female, pending = [], [], []

    def flush() -> None:
        outputs = predictor.model.forward(np.stack(pending))  # (B, S, S, 3) uint8 in
        ages.append(outputs.age)
        p_female.append(outputs.p_female)
        pending.clear()

    for crop in crops:
        pending.append(predictor.model.prepare(crop))
        if len(pending) == BATCH_FACES:
            flush()
    if pending:
        flush()
    empty = np.zeros(0, np.float32)
    return (np.concatenate(ages), np.concatenate(p_female)) if ages else (empty, empty)


def end_to_end_accuracy(genders: list[int | None], p_female: np.ndarray) -> float | None:
    """Share of gender-labelled images predicted right; NaN in `p_female` (no face) counts as wrong."""
    hits = [
        not math.isnan(p) and int(p >= GENDER_THRESHOLD) == gender
        for gender, p in zip(genders, p_female)
        if gender is not None
    ]
    return float(np.mean(hits)) if hits else None


def evaluate_photos(
    predictor: Predictor,
    data_dir: Path | Sequence[Path],
    split: str = "all",
    progress: Callable[[int, int], None] | None = None,
) -> Evaluation:
    """Detect, crop the largest face, predict in batches, score; see the module docstring.

    `progress(images_done, images_in_all)` is called after each image is read.
    """
    read = read_folders(as_folders(data_dir))
    samples = select_split(read, split, predictor.model.info.config.data)
    undecodable: list[Skipped] = []
    found: list[_Found] = []

    def crops() -> Iterator[np.ndarray]:  # streamed into the model's batches as the images are searched
        for image_found, crop in _detect_each(predictor, samples, undecodable, progress):
            found.append(image_found)
            if crop is not None:
                yield crop.image

    ages, p_female = _predict_batched(predictor, crops())
    if not found:
        raise DataError(f"{data_dir}: no readable images to evaluate")
    with_face = [f for f in found if f.crop_method is not None]
    report = build_report([f.sample for f in with_face], ages, p_female)
    return Evaluation(report, read, undecodable, split, _summarise(predictor, found, p_female))


def _summarise(predictor: Predictor, found: list[_Found], p_female: np.ndarray) -> DetectionSummary:
    per_image = np.full(len(found), math.nan)  # P(female) per readable image, NaN where no face
    per_image[[i for i, f in enumerate(found) if f.crop_method is not None]] = p_female
    genders = [f.sample.gender for f in found]
    per_gender = {
        name: end_to_end_accuracy([g if g == label else None for g in genders], per_image)
        for label, name in enumerate(GENDER_NAMES)
    }
    missed = [str(f.sample.path) for f in found if f.crop_method is None]
    return DetectionSummary(
        detector=predictor.detector.name,
        crop=predictor.model.face_crop.to_dict(),
        images=len(found),
        no_face=len(missed),
        several_faces=sum(f.faces > 1 for f in found),
        box_fallbacks=sum(f.crop_method not in (None, predictor.model.face_crop.method) for f in found),
        end_to_end_gender_accuracy=end_to_end_accuracy(genders, per_image),
        end_to_end_per_gender={k: v for k, v in per_gender.items() if v is not None},
        no_face_files=tuple(Path(m).name for m in missed[:SHOWN_FILES]),
    )


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def _crop_words(crop: dict) -> str:
    if crop["method"] == "box":
        return "box crop (" + ("the detector's margin" if crop["margin"] is None else f"margin {crop['margin']}") + ")"
    return f"aligned crop ({crop['template']} template, margin {crop['margin'] or 0})"


def print_detection_summary(summary: DetectionSummary, console: Console) -> None:
    """Detection counts and the end-to-end gender accuracy, before the report on the faces found."""
    found = summary.images - summary.no_face
    console.print(
        f"Detector {summary.detector}, {_crop_words(summary.crop)}: a face in {found} of {summary.images} images; "
        f"no face in {summary.no_face}; several faces in {summary.several_faces} (largest scored); "
        f"{summary.box_fallbacks} box-cropped for want of usable keypoints"
    )
    if summary.no_face_files:
        more = " ..." if summary.no_face > SHOWN_FILES else ""
        console.print("No face: " + ", ".join(summary.no_face_files) + more)
    genders = ", ".join(f"{name} {_percent(value)}" for name, value in summary.end_to_end_per_gender.items())
    overall = _percent(summary.end_to_end_gender_accuracy)
    console.print(f"End to end (no face = wrong): gender acc {overall} ({genders})")
    console.print("On the images with a face:")
