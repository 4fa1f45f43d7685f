"""Predictor: a model (the bundled one by default) turned into age/gender predictions.

The model runs behind an `inference.backends.InferenceBackend` (PyTorch or onnxruntime); everything
else is the same for both. `predict` runs the whole pipeline on one image: detect faces, crop each
as the model's face_crop says (data.align.crop_face: aligned on the detector's keypoints, or the box
crop with the detector's margin), resize with `prepare_face` (the training resize), then one batched
forward pass. `predict_many` does the same for a list of images with one detector call and one
model call for all their faces; `predict_cropped` takes images that are already face crops.
`predict_stream` runs per video frame and smooths each face over time.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import numpy as np

from agegender.config import Bound, ConfigError
from agegender.data.age_groups import AgeGroupScheme, group_probabilities
from agegender.data.align import FaceCrop, FaceCropSpec
from agegender.data.images import load_rgb, resize_square
from agegender.inference.age_interval import age_intervals
from agegender.inference.detectors.factory import (
    DEFAULT_DETECTOR,
    DETECTORS,
    Detection,
    FaceDetector,
    create_detector,
    create_video_detector,
    crop_faces,
)
from agegender.inference.predictions import AGE_INTERVAL_LEVEL, FacePrediction, Prediction
from agegender.inference.runtime import RUNTIMES, load_backend  # noqa: F401  (RUNTIMES: re-exported)
from agegender.inference.streams.frames import Frame
from agegender.inference.streams.tracking import FaceTracker
from agegender.models.backends import (  # noqa: F401  (bundled_model_path: re-exported for callers)
    FaceOutputs,
    InferenceBackend,
    bundled_model_path,
)
from agegender.models.checkpoint import CheckpointInfo

MARGIN = Bound(0, 2)  # crop margin per side, as a fraction of the face box


@dataclass(frozen=True)
class StreamResult:
    """One frame of `Predictor.predict_stream`."""

    frame: Frame
    prediction: Prediction  # faces smoothed over time when tracking is on
    track_ids: tuple[int, ...]  # one per face; empty when tracking is off
    seconds: float  # detection + model time for this frame
    box_fallbacks: int = 0  # faces detected in this frame that were box-cropped for want of keypoints


class Predictor:
    """Age and P(female) for face images, with the model's own preprocessing, on any backend.

    `backend` runs the model (inference.backends: TorchBackend, OnnxBackend). `detector` is a
    detector name (see inference.detectors.factory.list_detectors) or a FaceDetector; it is built on first use,
    so --no-detect never loads one. `crop` overrides the model's face crop: a method ("aligned" or
    "box", see data.align.CROP_METHODS) or a whole FaceCropSpec. `margin` overrides that crop's
    margin (aligned: per side, fraction of the template chip; box: per side, fraction of the box,
    default the detector's). `tta` averages each face with its mirror image (None: as the model
    file says, `export --tta`; off for files that say nothing). With `age_groups`,
    each face also gets the probability of each group of that scheme (FacePrediction.age_groups),
    from the age distribution.
    """

    def __init__(
        self,
        backend: InferenceBackend,
        *,
        detector: str | FaceDetector = DEFAULT_DETECTOR,
        margin: float | None = None,
        tta: bool | None = None,
        crop: str | FaceCropSpec | None = None,
        age_groups: AgeGroupScheme | None = None,
    ):
        # Checked now, not at the first face: a typo must not wait for a detector to be needed
        if isinstance(detector, str) and detector not in ("auto", *DETECTORS):
            raise ConfigError(f"unknown face detector '{detector}'; choose auto or one of {', '.join(DETECTORS)}")
        if margin is not None and not MARGIN.admits(margin):  # a huge margin would allocate a huge crop
            raise ConfigError(f"margin {margin} is outside {MARGIN} (a fraction of the face box or chip per side)")
        self.backend = backend
        self._detector: FaceDetector | None = None if isinstance(detector, str) else detector
        self._detector_given = not isinstance(detector, str)  # used as it is, for stills and streams alike
        self._detector_name = detector if isinstance(detector, str) else detector.name
        self.face_crop = resolve_face_crop(backend.info.face_crop, crop, margin)
        self.tta = backend.info.default_tta if tta is None else tta
        self.age_groups = age_groups

    @classmethod
    def from_checkpoint(cls, path: Path | str | None = None, *, runtime: str = "auto", **options) -> "Predictor":
        """Load `path` (a .safetensors checkpoint or an exported .onnx file), or the model bundled with
        the package when None, on `runtime` (inference.runtime: "auto" is onnxruntime where installed).
        `options`: see the class."""
        return cls(load_backend(path, runtime), **options)

    @property
    def checkpoint(self) -> CheckpointInfo:
        """What the model file says about itself: config, meta, image_size, face_crop."""
        return self.backend.info

    @property
    def source(self) -> Path:
        return self.backend.source

    @property
    def runtime(self) -> str:
        return self.backend.runtime

    @property
    def image_size(self) -> int:
        return self.backend.info.image_size

    @property
    def detector(self) -> FaceDetector:
        if self._detector is None:
            self._detector = create_detector(self._detector_name)
        return self._detector

    @property
    def margin(self) -> float:
        """The box-crop margin: the box method's own if set, else the detector's (also the margin
        of an aligned crop's fallback)."""
        return self._margin_for(self.detector)

    def _margin_for(self, detector: FaceDetector) -> float:
        if self.face_crop.method == "box" and self.face_crop.margin is not None:
            return self.face_crop.margin
        return detector.margin

    def count_box_fallbacks(self, prediction: Prediction) -> int:
        """Faces of `prediction` box-cropped although this predictor's crop is aligned."""
        if self.face_crop.method != "aligned":
            return 0
        return sum(face.crop == "box" for face in prediction.faces)

    def crop_detections(self, rgb: np.ndarray, detections: list[Detection]) -> list[FaceCrop]:
        """One crop per detection, as `face_crop` says (inference.detectors.factory.crop_faces)."""
        return crop_faces(rgb, detections, self.margin, self.face_crop)

    def prepare_face(self, rgb: np.ndarray) -> np.ndarray:
        """An RGB face crop -> the model's uint8 input size (the same resize training used)."""
        return resize_square(rgb, self.image_size)

    def predict_faces(self, faces: np.ndarray, batch_size: int = 256) -> tuple[np.ndarray, np.ndarray]:
        """(age, P(female)) for uint8 (N, S, S, 3) faces already at the model's size."""
        outputs = self.backend.predict(faces, batch_size)
        return outputs.age, outputs.p_female

    def predict_prepared(self, faces: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """`predict_faces`, plus the horizontal-flip average when tta is on."""
        outputs = self.predict_distributions(faces)
        return outputs.age, outputs.p_female

    def predict_distributions(self, faces: np.ndarray) -> FaceOutputs:
        """Age, P(female) and the age distribution over 1-year bins (None for a model without a
        bins head, and on onnx, whose exports carry age and P(female) only); tta averages all three."""
        if not self.tta:
            return self.backend.predict(faces)
        n = len(faces)
        both = self.backend.predict(np.concatenate([faces, faces[:, :, ::-1]]))  # originals, then mirrors
        probs = None if both.age_probs is None else (both.age_probs[:n] + both.age_probs[n:]) / 2
        return FaceOutputs((both.age[:n] + both.age[n:]) / 2, (both.p_female[:n] + both.p_female[n:]) / 2, probs)

    def predict_crops(self, crops: Sequence[np.ndarray]) -> list[FacePrediction]:
        """One FacePrediction per RGB face crop of any size, in one batched pass."""
        if not crops:
            return []
        predicted = self.predict_distributions(np.stack([self.prepare_face(c) for c in crops]))  # (N, S, S, 3) in
        intervals = self.age_intervals(predicted)
        faces = [FacePrediction(float(a), float(p)) for a, p in zip(predicted.age, predicted.p_female)]
        if intervals is not None:
            faces = [replace(face, age_interval=(float(low), float(high))) for face, (low, high) in zip(faces, intervals)]
        if self.age_groups is None:
            return faces
        groups = group_probabilities(self.age_groups, predicted.age, predicted.age_probs)  # (N, G)
        return [replace(face, age_groups=dict(zip(self.age_groups.names, map(float, g)))) for face, g in zip(faces, groups)]

    def age_intervals(self, predicted: FaceOutputs) -> np.ndarray | None:
        """(N, 2) the central 80% of each face's age distribution, with the model file's temperature
        (None where the model gives no distribution: a regression head, or an ONNX file)."""
        if predicted.age_probs is None:
            return None
        return age_intervals(predicted.age_probs, AGE_INTERVAL_LEVEL, self.checkpoint.age_interval_temperature)

    def load_cropped(self, path: Path | str) -> np.ndarray:
        """An image file meant as one already-cropped face, decoded as training decoded it."""
        return load_rgb(path, target_size=self.image_size)

    def predict_cropped(self, faces: Sequence[np.ndarray], sources: Sequence[str]) -> list[Prediction]:
        """Whole images as one already-cropped face each (--no-detect), in one batched pass."""
        return [Prediction(source, (face,)) for source, face in zip(sources, self.predict_crops(faces))]

    def predict_cropped_file(self, path: Path | str) -> Prediction:
        """Treat a whole image file as one already-cropped face (--no-detect)."""
        return self.predict_cropped([self.load_cropped(path)], [str(path)])[0]

    def predict(self, image: np.ndarray | Path | str, source: str | None = None) -> Prediction:
        """Every face in an image (HxWx3 uint8 RGB array or file): detect, crop, one batched pass.

        Zero faces is a valid result. Faces come most confident first.
        """
        if isinstance(image, np.ndarray):
            rgb, name = image, source or "<array>"
        else:
            rgb, name = load_rgb(image), source or str(image)
        return self.predict_many([rgb], [name])[0]

    def predict_many(
        self, images: Sequence[np.ndarray], sources: Sequence[str], *, detector: FaceDetector | None = None
    ) -> list[Prediction]:
        """`predict` for several HxWx3 uint8 RGB images: one detector call, one model pass for all their faces."""
        detector = detector or self.detector
        detections = detector.detect_batch(list(images))
        margin = self._margin_for(detector)
        crops = [crop_faces(rgb, found, margin, self.face_crop) for rgb, found in zip(images, detections)]
        faces = self.predict_crops([crop.image for per_image in crops for crop in per_image])  # image by image
        predictions, start = [], 0
        for source, found, cropped in zip(sources, detections, crops):
            mine, start = faces[start : start + len(found)], start + len(found)
            boxed = (replace(f, box=d.box, score=d.score, crop=c.method) for f, d, c in zip(mine, found, cropped))
            predictions.append(Prediction(source, tuple(boxed)))
        return predictions

    def predict_stream(
        self, frames: Iterable[Frame | np.ndarray], *, tracker: FaceTracker | None = None, smooth: bool = True
    ) -> Iterator[StreamResult]:
        """Per-frame results, one at a time (nothing accumulates). With `smooth`, faces are tracked
        across frames and their age and P(female) averaged over time (a new FaceTracker unless given).
        """
        if smooth and tracker is None:
            tracker = FaceTracker()
        # A detector given as an object is used as it is; a name gets its video form (create_video_detector).
        detector = self.detector if self._detector_given else create_video_detector(self._detector_name)
        for index, frame in enumerate(frames):
            if not isinstance(frame, Frame):
                frame = Frame(frame, "<stream>", index)
            start = time.perf_counter()
            prediction = self.predict_many([frame.image], [frame.source], detector=detector)[0]
            fallbacks = self.count_box_fallbacks(prediction)  # before tracking adds held faces
            track_ids: tuple[int, ...] = ()
            if smooth:
                tracks = tracker.update(prediction.faces)
                prediction = Prediction(prediction.source, tuple(t.face for t in tracks))
                track_ids = tuple(t.track_id for t in tracks)
            yield StreamResult(frame, prediction, track_ids, time.perf_counter() - start, fallbacks)


def resolve_face_crop(stored: FaceCropSpec, crop: str | FaceCropSpec | None, margin: float | None) -> FaceCropSpec:
    """The model's crop, with a method (or whole spec) and a margin overridden."""
    spec = stored
    if isinstance(crop, FaceCropSpec):
        spec = crop
    elif crop is not None and crop != stored.method:
        spec = FaceCropSpec(crop, stored.template)  # checks the method; the stored margin meant the other method
    return spec if margin is None else replace(spec, margin=margin)


def load_predictor(model: Path | str | None = None, *, runtime: str = "auto", **options) -> Predictor:
    """A Predictor for a .safetensors checkpoint or an .onnx file (None: the bundled model) on `runtime`."""
    return Predictor.from_checkpoint(model, runtime=runtime, **options)
