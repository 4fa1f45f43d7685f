"""What every face detector shares: the protocol, its result type, its errors and two frame helpers.

Kept apart from inference.detectors.factory (the detectors and their registry) so that a detector written in its
own module (inference.detectors.blazeface) imports these without importing the factory that lists it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np

from agegender.data.align import largest_detection  # noqa: F401  (re-exported: detectors' callers pick with it)
from agegender.data.images import check_rgb
from agegender.inference.predictions import Box


class DetectorUnavailableError(RuntimeError):
    """A detector whose optional package is not installed."""


class DetectorWeightsError(DetectorUnavailableError):
    """A detector whose bundled weights file is missing or unreadable: a broken install, which
    "auto" reports instead of quietly falling back to a weaker detector."""


@dataclass(frozen=True)
class Detection:
    box: Box  # pixel coordinates of the frame the detector saw
    score: float  # detector confidence in [0, 1]; not a calibrated probability for haar
    # (x, y) pixel coordinates of the frame, one per KEYPOINT_NAMES entry, possibly outside the
    # frame; None when the detector gives no keypoints (haar).
    keypoints: tuple[tuple[float, float], ...] | None = None


@runtime_checkable
class FaceDetector(Protocol):
    name: str
    margin: float  # crop margin per side, as a fraction of the box size (see crop_with_margin)

    def detect(self, rgb: np.ndarray) -> list[Detection]:
        """Faces in an HxWx3 uint8 RGB image, most confident first."""
        ...

    def detect_batch(self, frames: list[np.ndarray]) -> list[list[Detection]]:
        """`detect` for each frame (sizes may differ); one model call where the detector batches."""
        ...


def check_frame(rgb: np.ndarray) -> None:
    check_rgb(rgb, "detectors take")


def clip_box(x1: float, y1: float, x2: float, y2: float, width: int, height: int) -> Box | None:
    box = Box(
        max(0, int(round(x1))), max(0, int(round(y1))), min(width, int(round(x2))), min(height, int(round(y2)))
    )
    return box if box.width > 0 and box.height > 0 else None
