"""FaceModel: the model side of a Predictor, for code that already holds face crops (evaluation, training's
teacher, benchmarks). Crops in, predictions out, with the model file's own preprocessing (the training
resize) and its mirror-averaging default, through one forward path (`forward`)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Sequence

import numpy as np

from agegender.data.age_groups import AgeGroupScheme, group_probabilities
from agegender.data.align import FaceCrop, FaceCropSpec
from agegender.data.images import load_rgb, resize_square
from agegender.inference.age_interval import age_intervals
from agegender.inference.detectors.factory import Detection, FaceDetector, crop_faces
from agegender.inference.predictions import AGE_INTERVAL_LEVEL, FacePrediction
from agegender.models.backends import FaceOutputs, InferenceBackend
from agegender.models.checkpoint import CheckpointInfo


class FaceModel:
    """A model file on a runtime (`backend`), cutting faces as `face_crop` says, with mirror averaging
    when `tta` is on, and group probabilities of `age_groups` when given."""

    def __init__(self, backend: InferenceBackend, face_crop: FaceCropSpec, tta: bool,
                 age_groups: AgeGroupScheme | None = None):  # fmt: skip
        self.backend = backend
        self.face_crop = face_crop
        self.tta = tta
        self.age_groups = age_groups

    @property
    def info(self) -> CheckpointInfo:
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

    def margin_for(self, detector: FaceDetector) -> float:
        """The box-crop margin: the box method's own if set, else the detector's (also the margin of an
        aligned crop's fallback)."""
        if self.face_crop.method == "box" and self.face_crop.margin is not None:
            return self.face_crop.margin
        return detector.margin

    def crop(self, rgb: np.ndarray, detections: list[Detection], detector: FaceDetector) -> list[FaceCrop]:
        """One crop per detection of `detector`, as `face_crop` says (inference.detectors.factory.crop_faces)."""
        return crop_faces(rgb, detections, self.margin_for(detector), self.face_crop)

    def prepare(self, rgb: np.ndarray) -> np.ndarray:
        """An RGB face crop -> the model's uint8 input size (the same resize training used)."""
        return resize_square(rgb, self.image_size)

    def load_chip(self, path: Path | str) -> np.ndarray:
        """An image file meant as one already-cropped face, decoded as training decoded it."""
        return load_rgb(path, target_size=self.image_size)

    def forward(self, faces: np.ndarray) -> FaceOutputs:
        """Age, P(female) and the age distribution over 1-year bins (None for a model without a bins head,
        and on onnx, whose exports carry age and P(female) only) for uint8 (N, S, S, 3) faces at the
        model's size; with tta, each averaged with its mirror image."""
        return self.backend.predict(faces, mirrored=self.tta)

    def intervals(self, predicted: FaceOutputs) -> np.ndarray | None:
        """(N, 2) the central 80% of each face's age distribution, with the model file's temperature
        (None where the model gives no distribution: a regression head, or an ONNX file)."""
        if predicted.age_probs is None:
            return None
        return age_intervals(predicted.age_probs, AGE_INTERVAL_LEVEL, self.info.age_interval_temperature)

    def predictions(self, crops: Sequence[np.ndarray]) -> list[FacePrediction]:
        """One FacePrediction per RGB face crop of any size, in one batched pass."""
        if not crops:
            return []
        predicted = self.forward(np.stack([self.prepare(c) for c in crops]))  # (N, S, S, 3) in
        intervals = self.intervals(predicted)
        faces = [FacePrediction(float(a), float(p)) for a, p in zip(predicted.age, predicted.p_female)]
        if intervals is not None:
            faces = [replace(face, age_interval=(float(low), float(high))) for face, (low, high) in zip(faces, intervals)]
        if self.age_groups is None:
            return faces
        groups = group_probabilities(self.age_groups, predicted.age, predicted.age_probs)  # (N, G)
        return [replace(face, age_groups=dict(zip(self.age_groups.names, map(float, g)))) for face, g in zip(faces, groups)]
