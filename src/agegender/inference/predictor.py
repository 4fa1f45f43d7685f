"""Predictor: a checkpoint (the bundled one by default) turned into age/gender predictions.

`predict` runs the whole pipeline on one image: detect faces, crop each as the checkpoint's
face_crop says (data.align.crop_face: aligned on the detector's keypoints, or the box crop with
the detector's margin), resize with `prepare_face` (the training resize), then one batched
forward pass. `predict_stream` does the same per video frame and smooths each face
over time. `OnnxPredictor` (agegender.export.onnx) swaps the PyTorch model for onnxruntime and
inherits everything else from here.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from importlib import resources
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
import torch

from agegender.config import Bound, ConfigError
from agegender.data.age_groups import AgeGroupScheme, group_probabilities
from agegender.data.align import FaceCrop, FaceCropSpec
from agegender.data.images import load_rgb, resize_square
from agegender.inference.detect import DEFAULT_DETECTOR, DETECTORS, Detection, FaceDetector, create_detector, crop_faces
from agegender.inference.sources import Frame
from agegender.inference.tracking import FaceTracker
from agegender.models.checkpoint import LoadedCheckpoint, load_checkpoint
from agegender.results import FacePrediction, Prediction
from agegender.training.loop import ArrayPredictions, predict_arrays, predict_outputs

BUNDLED_MODEL = "bundled_model.safetensors"  # Model B on EfficientNet-Lite0 and on dlib's face recogniser, weighted; float16
MARGIN = Bound(0, 2)  # crop margin per side, as a fraction of the face box


def bundled_model_path() -> Path:
    return Path(str(resources.files("agegender") / "assets" / BUNDLED_MODEL))


@dataclass(frozen=True)
class StreamResult:
    """One frame of `Predictor.predict_stream`."""

    frame: Frame
    prediction: Prediction  # faces smoothed over time when tracking is on
    track_ids: tuple[int, ...]  # one per face; empty when tracking is off
    seconds: float  # detection + model time for this frame
    box_fallbacks: int = 0  # faces detected in this frame that were box-cropped for want of keypoints


class Predictor:
    """Age and P(female) for face images, with the checkpoint's own preprocessing.

    `detector` is a detector name (see inference.detect.list_detectors) or a FaceDetector; it is
    built on first use, so --no-detect never loads one. `crop` overrides the checkpoint's face
    crop: a method ("aligned" or "box", see data.align.CROP_METHODS) or a whole FaceCropSpec.
    `margin` overrides that crop's margin (aligned: per side, fraction of the template chip; box:
    per side, fraction of the box, default the detector's). `tta` averages each face with its
    mirror image. With `age_groups`, each face also gets the probability of each group of that
    scheme (FacePrediction.age_groups), from the age distribution.
    """

    runtime = "torch"

    def __init__(
        self,
        checkpoint: LoadedCheckpoint,
        source: Path,
        *,
        detector: str | FaceDetector = DEFAULT_DETECTOR,
        margin: float | None = None,
        tta: bool = False,
        crop: str | FaceCropSpec | None = None,
        age_groups: AgeGroupScheme | None = None,
    ):
        self.checkpoint = checkpoint
        self.model = checkpoint.model.to(memory_format=torch.channels_last).eval()
        self.image_size = checkpoint.image_size
        self.source = source
        self._configure(detector, margin, tta, crop, age_groups)

    def _configure(
        self,
        detector: str | FaceDetector,
        margin: float | None,
        tta: bool,
        crop: str | FaceCropSpec | None = None,
        age_groups: AgeGroupScheme | None = None,
    ) -> None:
        # Checked now, not at the first face: a typo must not wait for a detector to be needed
        if isinstance(detector, str) and detector not in ("auto", *DETECTORS):
            raise ConfigError(f"unknown face detector '{detector}'; choose auto or one of {', '.join(DETECTORS)}")
        if margin is not None and not MARGIN.admits(margin):  # a huge margin would allocate a huge crop
            raise ConfigError(f"margin {margin} is outside {MARGIN} (a fraction of the face box or chip per side)")
        self._detector: FaceDetector | None = None if isinstance(detector, str) else detector
        self._detector_name = detector if isinstance(detector, str) else detector.name
        self.face_crop = resolve_face_crop(self.checkpoint.face_crop, crop, margin)
        self.tta = tta
        self.age_groups = age_groups

    @classmethod
    def from_checkpoint(cls, path: Path | str | None = None, **options) -> "Predictor":
        """Load `path`, or the model bundled with the package when None. `options`: see the class."""
        path = Path(path) if path is not None else bundled_model_path()
        return cls(load_checkpoint(path), path, **options)

    @property
    def detector(self) -> FaceDetector:
        if self._detector is None:
            self._detector = create_detector(self._detector_name)
        return self._detector

    @property
    def margin(self) -> float:
        """The box-crop margin: the box method's own if set, else the detector's (also the margin
        of an aligned crop's fallback)."""
        if self.face_crop.method == "box" and self.face_crop.margin is not None:
            return self.face_crop.margin
        return self.detector.margin

    def count_box_fallbacks(self, prediction: Prediction) -> int:
        """Faces of `prediction` box-cropped although this predictor's crop is aligned."""
        if self.face_crop.method != "aligned":
            return 0
        return sum(face.crop == "box" for face in prediction.faces)

    def crop_detections(self, rgb: np.ndarray, detections: list[Detection]) -> list[FaceCrop]:
        """One crop per detection, as `face_crop` says (inference.detect.crop_faces)."""
        return crop_faces(rgb, detections, self.margin, self.face_crop)

    def prepare_face(self, rgb: np.ndarray) -> np.ndarray:
        """An RGB face crop -> the model's uint8 input size (the same resize training used)."""
        return resize_square(rgb, self.image_size)

    def predict_faces(self, faces: np.ndarray, batch_size: int = 256) -> tuple[np.ndarray, np.ndarray]:
        """(age, P(female)) for uint8 (N, S, S, 3) faces already at the model's size."""
        return predict_arrays(self.model, faces, batch_size=batch_size)

    def predict_prepared(self, faces: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """`predict_faces`, plus the horizontal-flip average when tta is on."""
        if not self.tta:
            return self.predict_faces(faces)
        n = len(faces)
        both = np.concatenate([faces, faces[:, :, ::-1]])  # (2N, S, S, 3): originals, then mirrors
        ages, p_female = self.predict_faces(both)
        return (ages[:n] + ages[n:]) / 2, (p_female[:n] + p_female[n:]) / 2

    def predict_distributions(self, faces: np.ndarray) -> ArrayPredictions:
        """`predict_prepared` plus the age distribution over 1-year bins (None for a model without a
        bins head, and on onnx, whose exports carry age and P(female) only); tta averages all three."""
        if self.model is None:
            return ArrayPredictions(*self.predict_prepared(faces), None)
        if not self.tta:
            return predict_outputs(self.model, faces)
        n = len(faces)
        both = predict_outputs(self.model, np.concatenate([faces, faces[:, :, ::-1]]))  # originals, then mirrors
        probs = None if both.age_probs is None else (both.age_probs[:n] + both.age_probs[n:]) / 2
        return ArrayPredictions((both.age[:n] + both.age[n:]) / 2, (both.p_female[:n] + both.p_female[n:]) / 2, probs)

    def predict_crops(self, crops: list[np.ndarray]) -> list[FacePrediction]:
        if not crops:
            return []
        faces = np.stack([self.prepare_face(c) for c in crops])
        if self.age_groups is None:
            ages, p_female = self.predict_prepared(faces)
            return [FacePrediction(age=float(a), p_female=float(p)) for a, p in zip(ages, p_female)]
        predicted = self.predict_distributions(faces)
        groups = group_probabilities(self.age_groups, predicted.age, predicted.age_probs)  # (N, G)
        return [
            FacePrediction(float(a), float(p), age_groups=dict(zip(self.age_groups.names, map(float, g))))
            for a, p, g in zip(predicted.age, predicted.p_female, groups)
        ]

    def predict_cropped_file(self, path: Path) -> Prediction:
        """Treat a whole image file as one already-cropped face (--no-detect)."""
        face = load_rgb(path, target_size=self.image_size)
        return Prediction(source=str(path), faces=tuple(self.predict_crops([face])))

    def predict(self, image: np.ndarray | Path | str, source: str | None = None) -> Prediction:
        """Every face in an image (HxWx3 uint8 RGB array or file): detect, crop, one batched pass.

        Zero faces is a valid result. Faces come most confident first.
        """
        if isinstance(image, np.ndarray):
            rgb, name = image, source or "<array>"
        else:
            rgb, name = load_rgb(image), source or str(image)
        detections = self.detector.detect(rgb)
        crops = self.crop_detections(rgb, detections)
        faces = self.predict_crops([c.image for c in crops])
        boxed = (
            FacePrediction(f.age, f.p_female, box=d.box, score=d.score, age_groups=f.age_groups, crop=c.method)
            for f, d, c in zip(faces, detections, crops)
        )
        return Prediction(source=name, faces=tuple(boxed))

    def predict_stream(
        self, frames: Iterable[Frame | np.ndarray], *, tracker: FaceTracker | None = None, smooth: bool = True
    ) -> Iterator[StreamResult]:
        """Per-frame results, one at a time (nothing accumulates). With `smooth`, faces are tracked
        across frames and their age and P(female) averaged over time (a new FaceTracker unless given).
        """
        if smooth and tracker is None:
            tracker = FaceTracker()
        for index, frame in enumerate(frames):
            if not isinstance(frame, Frame):
                frame = Frame(frame, "<stream>", index)
            start = time.perf_counter()
            prediction = self.predict(frame.image, source=frame.source)
            fallbacks = self.count_box_fallbacks(prediction)  # before tracking adds held faces
            track_ids: tuple[int, ...] = ()
            if smooth:
                tracks = tracker.update(prediction.faces)
                prediction = Prediction(prediction.source, tuple(t.face for t in tracks))
                track_ids = tuple(t.track_id for t in tracks)
            yield StreamResult(frame, prediction, track_ids, time.perf_counter() - start, fallbacks)


def resolve_face_crop(stored: FaceCropSpec, crop: str | FaceCropSpec | None, margin: float | None) -> FaceCropSpec:
    """The checkpoint's crop, with a method (or whole spec) and a margin overridden."""
    spec = stored
    if isinstance(crop, FaceCropSpec):
        spec = crop
    elif crop is not None and crop != stored.method:
        spec = FaceCropSpec(crop, stored.template)  # checks the method; the stored margin meant the other method
    return spec if margin is None else replace(spec, margin=margin)


RUNTIMES = ("torch", "onnx")


def load_predictor(model: Path | str | None = None, *, runtime: str = "torch", **options) -> Predictor:
    """A Predictor on PyTorch (a .safetensors checkpoint) or onnxruntime (an exported .onnx file)."""
    if runtime == "torch":
        return Predictor.from_checkpoint(model, **options)
    if runtime == "onnx":
        from agegender.export.onnx import OnnxPredictor

        return OnnxPredictor.from_checkpoint(model, **options)
    raise ConfigError(f"unknown runtime '{runtime}'; choose one of {', '.join(RUNTIMES)}")
