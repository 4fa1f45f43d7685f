"""Predictor: a model (the bundled one by default) turned into age/gender predictions.

Five names are the whole surface: `Predictor.from_checkpoint(path)`, `predict(source, detect=True)` for
an image, an array, a frame, a folder or a list of them (detect faces, crop each as the model's face_crop
says, one batched forward pass through `FaceModel.forward`, which applies the file's mirror-averaging
default), `predict_stream(frames)` for video (per frame, faces smoothed over time), and the two parts it
is made of: `model` (inference.face_model.FaceModel, for code that already holds face crops) and
`detector`. The model runs behind a backend (models.backends: PyTorch or onnxruntime) picked from the file.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Iterable, Iterator, Sequence, Union

import numpy as np

from agegender.config import Bound, ConfigError
from agegender.data.age_groups import AgeGroupScheme
from agegender.data.align import FaceCropSpec
from agegender.data.images import load_rgb
from agegender.inference.detectors.factory import (
    DEFAULT_DETECTOR,
    DETECTORS,
    FaceDetector,
    create_detector,
    create_video_detector,
)
from agegender.inference.face_model import FaceModel
from agegender.inference.predictions import Prediction
from agegender.inference.runtime import RUNTIMES, load_backend  # noqa: F401  (RUNTIMES: re-exported)
from agegender.inference.streams.frames import CHUNK_IMAGES, Frame, ImageSource, chunk_frames
from agegender.inference.streams.tracking import FaceTracker
from agegender.models.backends import (  # noqa: F401  (bundled_model_path: re-exported for callers)
    InferenceBackend,
    bundled_model_path,
)

PredictSource = Union[np.ndarray, Frame, Path, str]  # an image (array or file), a frame, or a folder

MARGIN = Bound(0, 2)  # crop margin per side, as a fraction of the face box


@dataclass(frozen=True)
class StreamResult:
    """One frame of `Predictor.predict_stream`."""

    frame: Frame
    prediction: Prediction  # faces smoothed over time when tracking is on
    track_ids: tuple[int, ...]  # one per face; empty when tracking is off
    seconds: float  # detection + model time for this frame
    box_fallbacks: int = 0  # faces detected in this frame that were box-cropped for want of keypoints


def check_options(detector: str | FaceDetector, margin: float | None) -> None:
    """Checked at once, not at the first face: a typo must not wait for a detector to be needed."""
    if isinstance(detector, str) and detector not in ("auto", *DETECTORS):
        raise ConfigError(f"unknown face detector '{detector}'; choose auto or one of {', '.join(DETECTORS)}")
    if margin is not None and not MARGIN.admits(margin):  # a huge margin would allocate a huge crop
        raise ConfigError(f"margin {margin} is outside {MARGIN} (a fraction of the face box or chip per side)")


class Predictor:
    """Age and P(female) for every face in images, with the model's own preprocessing, on any backend.

    `backend` runs the model (models.backends: TorchBackend, OnnxBackend). `detector` is a detector name
    (see inference.detectors.factory.list_detectors) or a FaceDetector; it is built on first use, so
    --no-detect never loads one. `crop` overrides the model's face crop: a method ("aligned" or "box",
    see data.align.CROP_METHODS) or a whole FaceCropSpec. `margin` overrides that crop's margin (aligned:
    per side, fraction of the template chip; box: per side, fraction of the box, default the detector's).
    `tta` averages each face with its mirror image (None: as the model file says, `export --tta`; off for
    files that say nothing). With `age_groups`, each face also gets the probability of each group of that
    scheme (FacePrediction.age_groups), from the age distribution.
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
        check_options(detector, margin)
        face_crop = resolve_face_crop(backend.info.face_crop, crop, margin)
        self._model = FaceModel(backend, face_crop, backend.info.default_tta if tta is None else tta, age_groups)
        self._detector: FaceDetector | None = None if isinstance(detector, str) else detector
        self._detector_given = not isinstance(detector, str)  # used as it is, for stills and streams alike
        self._detector_name = detector if isinstance(detector, str) else detector.name

    @classmethod
    def from_checkpoint(cls, path: Path | str | None = None, *, runtime: str = "auto", **options) -> "Predictor":
        """Load `path` (a .safetensors checkpoint or an exported .onnx file), or the model bundled with
        the package when None. The runtime follows the file (inference.runtime: "auto" runs a .onnx file
        on onnxruntime, a checkpoint on its int8 companion or cached ONNX where onnxruntime is installed);
        `runtime` forces "torch", "torch-bf16" or "onnx". `options`: see the class."""
        check_options(options.get("detector", DEFAULT_DETECTOR), options.get("margin"))  # before a model export
        return cls(load_backend(path, runtime), **options)

    @property
    def model(self) -> FaceModel:
        """The model side: face crops in, predictions out (`model.info` says what the file says of itself)."""
        return self._model

    @property
    def detector(self) -> FaceDetector:
        if self._detector is None:
            self._detector = create_detector(self._detector_name)
        return self._detector

    def predict(self, source: PredictSource | Sequence[PredictSource], *, detect: bool = True) -> Prediction | list[Prediction]:
        """Every face of one image (an HxWx3 uint8 RGB array, a Frame, or an image file) -> its Prediction,
        which keeps the image to draw and save itself; a folder or a list of images -> one Prediction per
        image (one detector call and one model pass per chunk of images; a folder's predictions keep no
        image, so memory stays bounded). Faces come most confident first; zero faces is a valid result.
        With detect=False each image is one already-cropped face (--no-detect)."""
        if isinstance(source, (str, Path)) and Path(source).is_dir():
            return [p.without_image() for chunk in chunk_frames(self._frames([source], detect), CHUNK_IMAGES)
                    for p in self._predict_frames(chunk, detect)]  # fmt: skip
        if isinstance(source, (np.ndarray, Frame, str, Path)):
            return self._predict_frames(list(self._frames([source], detect)), detect)[0]
        return [p for chunk in chunk_frames(self._frames(source, detect), CHUNK_IMAGES) for p in self._predict_frames(chunk, detect)]

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
            prediction = self._detect_and_predict([frame], detector)[0]
            fallbacks = count_box_fallbacks(prediction, self._model.face_crop)  # before tracking adds held faces
            track_ids: tuple[int, ...] = ()
            if smooth:
                tracks = tracker.update(prediction.faces)
                prediction = Prediction(prediction.source, tuple(t.face for t in tracks), frame.image)
                track_ids = tuple(t.track_id for t in tracks)
            yield StreamResult(frame, prediction, track_ids, time.perf_counter() - start, fallbacks)

    def _frames(self, sources: Iterable[PredictSource], detect: bool) -> Iterator[Frame]:
        """Each source as a Frame: arrays and frames as they are, files (and folders' files) decoded."""
        load = load_rgb if detect else self._model.load_chip
        for index, source in enumerate(sources):
            if isinstance(source, Frame):
                yield source
            elif isinstance(source, np.ndarray):
                yield Frame(source, "<array>", index)
            else:
                yield from ImageSource([source], load=load)

    def _predict_frames(self, frames: list[Frame], detect: bool) -> list[Prediction]:
        if detect:
            return self._detect_and_predict(frames, self.detector)
        faces = self._model.predictions([frame.image for frame in frames])
        return [Prediction(frame.source, (face,), frame.image) for frame, face in zip(frames, faces)]

    def _detect_and_predict(self, frames: list[Frame], detector: FaceDetector) -> list[Prediction]:
        """One detector call for all `frames`, one model pass for all their faces."""
        images = [frame.image for frame in frames]
        detections = detector.detect_batch(images)
        crops = [self._model.crop(rgb, found, detector) for rgb, found in zip(images, detections)]
        faces = self._model.predictions([crop.image for per_image in crops for crop in per_image])  # image by image
        predictions, start = [], 0
        for frame, found, cropped in zip(frames, detections, crops):
            mine, start = faces[start : start + len(found)], start + len(found)
            boxed = (replace(f, box=d.box, score=d.score, crop=c.method) for f, d, c in zip(mine, found, cropped))
            predictions.append(Prediction(frame.source, tuple(boxed), frame.image))
        return predictions


def count_box_fallbacks(prediction: Prediction, face_crop: FaceCropSpec) -> int:
    """Faces of `prediction` box-cropped although `face_crop` is aligned (their detector gave no keypoints)."""
    if face_crop.method != "aligned":
        return 0
    return sum(face.crop == "box" for face in prediction.faces)


def resolve_face_crop(stored: FaceCropSpec, crop: str | FaceCropSpec | None, margin: float | None) -> FaceCropSpec:
    """The model's crop, with a method (or whole spec) and a margin overridden."""
    spec = stored
    if isinstance(crop, FaceCropSpec):
        spec = crop
    elif crop is not None and crop != stored.method:
        spec = FaceCropSpec(crop, stored.template)  # checks the method; the stored margin meant the other method
    return spec if margin is None else replace(spec, margin=margin)
