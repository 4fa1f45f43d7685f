"""Aligned face crops: a similarity transform (rotation, uniform scale, translation) from a
detector's facial keypoints to a named face template, then one warp.

`crop_face` is the one function that turns a detected face into pixels for a model; it either
aligns (`align_face`, this module) or cuts the square box crop (`images.crop_with_margin`), as a
`FaceCropSpec` says. Prediction, streaming, serving and `evaluate --detect` all call it through
`inference.detectors.factory.crop_faces`, so a face is cropped the same way everywhere.

Why a closed-form Umeyama fit rather than cv2.estimateAffinePartial2D: with four keypoints
OpenCV's robust estimators (RANSAC, LMedS) fit two-point minimal samples and drop points beyond
a threshold in PIXELS, so which points count depends on the face size; Umeyama (1991) is the
least-squares similarity over all points, deterministic, exact on exact data, and says when the
points have no spread (degenerate). The warp itself is OpenCV's warpAffine.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np

from agegender.data.images import check_rgb, crop_with_margin
from agegender.errors import UserInputError

# Facial keypoints, in this order (the subject's right eye appears on the image's left).
KEYPOINT_NAMES = ("right_eye", "left_eye", "nose_tip", "mouth_centre")
CROP_METHODS = ("aligned", "box")
# Keypoints may sit outside the frame (a face cut by the edge), but not by more than this fraction
# of the frame's side: further out they are a detector's extrapolation, not a face.
MAX_OUTSIDE_FRAME = 0.5
MIN_EYE_DISTANCE = 2.0  # pixels: closer eyes give no usable scale or rotation

Points = Sequence[tuple[float, float]]


class UnknownTemplateError(UserInputError):
    """A face template name or crop setting that is not one of the known ones."""


@dataclass(frozen=True)
class FaceTemplate:
    """Where the keypoints land in an aligned chip."""

    name: str
    keypoints: tuple[tuple[float, float], ...]  # (x, y) / size, one per KEYPOINT_NAMES entry
    size: int  # output side in pixels
    measured: str  # how the positions were obtained


# Medians of MediaPipe keypoints, measured with tools/measure_face_templates.py (see its
# docstring for the commands and the spread).
TEMPLATES: dict[str, FaceTemplate] = {
    "utkface": FaceTemplate(
        name="utkface",
        keypoints=((0.3039, 0.3156), (0.6945, 0.3073), (0.5032, 0.5371), (0.5050, 0.7286)),
        size=200,
        measured="medians of MediaPipe keypoints on 1,998 of 2,000 random UTKFace aligned chips (200x200)",
    ),
    "dlib_150": FaceTemplate(
        name="dlib_150",
        keypoints=((0.3112, 0.3150), (0.6877, 0.3127), (0.4991, 0.5052), (0.4999, 0.7080)),
        size=150,
        measured="medians of MediaPipe keypoints on dlib.get_face_chip(size=150, padding=0.25) chips "
        "of 1,985 LFW photos",
    ),
}


def list_templates() -> list[str]:
    return list(TEMPLATES)


def get_template(name: str) -> FaceTemplate:
    if name not in TEMPLATES:
        raise UnknownTemplateError(f"unknown face template '{name}'; choose one of {', '.join(TEMPLATES)}")
    return TEMPLATES[name]


def template_points(template: FaceTemplate, margin: float = 0.0, size: int | None = None) -> np.ndarray:
    """The template's keypoints in output pixels (continuous, 0 at the chip's left/top edge), (K, 2).

    `margin` zooms out: the chip then shows (1 + 2 * margin) times the template's field of view,
    i.e. `margin` of it added on every side, like crop_with_margin's box margin.
    """
    if margin <= -0.5:
        raise ValueError(f"margin must be > -0.5, got {margin}")
    side = template.size if size is None else size
    normalised = np.asarray(template.keypoints, dtype=np.float64)  # (K, 2) in [0, 1]
    return (0.5 + (normalised - 0.5) / (1 + 2 * margin)) * side


def similarity_transform(source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """The least-squares similarity mapping source points onto target points (Umeyama 1991), as a
    2x3 matrix for cv2.warpAffine. No reflection. Raises ValueError when the source has no spread.
    """
    source = np.asarray(source, dtype=np.float64)  # (K, 2)
    target = np.asarray(target, dtype=np.float64)  # (K, 2)
    if source.shape != target.shape or source.ndim != 2 or source.shape[1] != 2 or len(source) < 2:
        raise ValueError(f"need two matching (K >= 2, 2) point arrays, got {source.shape} and {target.shape}")
    source_mean, target_mean = source.mean(axis=0), target.mean(axis=0)
    source_centred, target_centred = source - source_mean, target - target_mean
    source_variance = (source_centred**2).sum() / len(source)
    if source_variance < 1e-12:
        raise ValueError("degenerate keypoints: all at one place")
    covariance = target_centred.T @ source_centred / len(source)  # (2, 2)
    u, singular, vt = np.linalg.svd(covariance)
    signs = np.array([1.0, -1.0 if np.linalg.det(u) * np.linalg.det(vt) < 0 else 1.0])  # forbid a mirror
    rotation = u @ np.diag(signs) @ vt
    scale = float((singular * signs).sum() / source_variance)
    translation = target_mean - scale * rotation @ source_mean
    return np.hstack([scale * rotation, translation[:, None]])  # (2, 3)


def usable_keypoints(keypoints: Points | None, width: int, height: int) -> np.ndarray | None:
    """The keypoints as a (K, 2) array, or None when alignment cannot trust them: missing, the
    wrong count, not finite, eyes (nearly) on top of each other, or far outside the frame.
    """
    if keypoints is None:
        return None
    points = np.asarray(keypoints, dtype=np.float64)
    if points.shape != (len(KEYPOINT_NAMES), 2) or not np.isfinite(points).all():
        return None
    if np.hypot(*(points[1] - points[0])) < MIN_EYE_DISTANCE:
        return None
    low = -MAX_OUTSIDE_FRAME * np.array([width, height])
    high = (1 + MAX_OUTSIDE_FRAME) * np.array([width, height])
    if (points < low).any() or (points > high).any():
        return None
    return points


def align_face(rgb: np.ndarray, keypoints: Points, template: FaceTemplate, margin: float = 0.0) -> np.ndarray:
    """Warp the face whose keypoints (frame pixels, KEYPOINT_NAMES order) are given onto
    `template`: a template.size x template.size x 3 uint8 chip. Outside the frame, border pixels
    are replicated (as crop_with_margin does). Raises ValueError for keypoints it cannot use.
    """
    import cv2

    check_rgb(rgb)
    height, width = rgb.shape[:2]
    points = usable_keypoints(keypoints, width, height)
    if points is None:
        raise ValueError(f"keypoints unusable for alignment: {keypoints}")
    target = template_points(template, margin)
    scale = math.sqrt(abs(np.linalg.det(similarity_transform(points, target)[:, :2])))  # chip px per frame px
    # Bilinear warping skips pixels when it shrinks more than 2x (aliasing): area-average the face's
    # region down to twice the chip's scale first, warp at twice the chip's side, then halve by area.
    factor = 2 if scale < 1 else 1
    if factor * scale < 1:
        rgb, points = _shrink_region(rgb, points, target, template.size, factor * scale)
    side = template.size * factor
    # OpenCV puts pixel centres at integer coordinates; keypoints and templates count from pixel edges.
    matrix = similarity_transform(points - 0.5, template_points(template, margin, side) - 0.5)
    chip = cv2.warpAffine(rgb, matrix, (side, side), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    if factor > 1:
        chip = cv2.resize(chip, (template.size, template.size), interpolation=cv2.INTER_AREA)
    return chip


def _shrink_region(
    rgb: np.ndarray, points: np.ndarray, target: np.ndarray, size: int, ratio: float
) -> tuple[np.ndarray, np.ndarray]:
    """The part of the frame a size x size chip shows (plus a little), area-resized by `ratio`,
    and the keypoints in its pixels."""
    import cv2

    to_frame = cv2.invertAffineTransform(similarity_transform(points, target))  # chip -> frame, (2, 3)
    corners = np.array([(0, 0), (size, 0), (0, size), (size, size)], np.float64) @ to_frame[:, :2].T + to_frame[:, 2]
    height, width = rgb.shape[:2]
    pad = 4 / ratio  # a few chip pixels of context for the interpolation at the chip's edge
    x0, y0 = (int(v) for v in np.clip(np.floor(corners.min(axis=0) - pad), 0, [width, height]))
    x1, y1 = (int(v) for v in np.clip(np.ceil(corners.max(axis=0) + pad), 0, [width, height]))
    if x1 - x0 < 2 or y1 - y0 < 2:  # the chip shows (almost) nothing of the frame: nothing to shrink
        return rgb, points
    new_size = (max(1, round((x1 - x0) * ratio)), max(1, round((y1 - y0) * ratio)))  # (w, h)
    shrunk = cv2.resize(rgb[y0:y1, x0:x1], new_size, interpolation=cv2.INTER_AREA)
    return shrunk, (points - [x0, y0]) * [new_size[0] / (x1 - x0), new_size[1] / (y1 - y0)]


@dataclass(frozen=True)
class FaceCropSpec:
    """How a model wants its faces cut from a frame; checkpoints carry it (preprocessing.face_crop).

    method "aligned": warp the keypoints onto `template`; "box": the square box crop. `margin`:
    aligned, extra field of view per side as a fraction of the template chip (default 0); box,
    per side as a fraction of the box (default: the detector's own). None: that default.
    """

    method: str = "aligned"
    template: str = "utkface"
    margin: float | None = None

    def __post_init__(self) -> None:
        if self.method not in CROP_METHODS:
            raise UnknownTemplateError(f"unknown crop method '{self.method}'; choose one of {', '.join(CROP_METHODS)}")
        get_template(self.template)
        if self.margin is not None and self.margin < 0:
            raise UnknownTemplateError(f"crop margin must be >= 0, got {self.margin}")

    def to_dict(self) -> dict[str, Any]:
        return {"method": self.method, "template": self.template, "margin": self.margin}

    @classmethod
    def from_dict(cls, mapping: dict[str, Any]) -> "FaceCropSpec":
        unknown = set(mapping) - {"method", "template", "margin"}
        if unknown:
            raise UnknownTemplateError(f"unknown face_crop keys {sorted(unknown)}")
        return cls(**mapping)


# The crop for checkpoints that do not say (the bundled model among them) and for new UTKFace-trained
# ones: on lfw_dev's photos the aligned crop at margin 0 beat the box crop, margins 0.05 / 0.1 and the
# dlib_150 template for a UTKFace-trained model (benchmarks/bench_photo_crops.py; the numbers are in
# docs/aligned_crops.md).
DEFAULT_FACE_CROP = FaceCropSpec("aligned", "utkface")


@dataclass(frozen=True)
class FaceCrop:
    image: np.ndarray  # HxWx3 uint8
    method: str  # the crop actually made: "box" where "aligned" was asked for means a fallback


def crop_face(
    rgb: np.ndarray, box: tuple[int, int, int, int], keypoints: Points | None, spec: FaceCropSpec, box_margin: float
) -> FaceCrop:
    """The crop `spec` asks for. An aligned crop whose keypoints are unusable (None, degenerate,
    far outside the frame) falls back to the box crop with `box_margin`; the result says so.
    """
    if spec.method == "aligned" and usable_keypoints(keypoints, rgb.shape[1], rgb.shape[0]) is not None:
        margin = 0.0 if spec.margin is None else spec.margin
        return FaceCrop(align_face(rgb, keypoints, get_template(spec.template), margin), "aligned")
    margin = box_margin if spec.method == "aligned" or spec.margin is None else spec.margin
    return FaceCrop(crop_with_margin(rgb, box, margin), "box")


def largest_detection(detections: Sequence[Any]) -> Any | None:
    """The face with the largest box (a detector's Detection): the one a photo of one person is about."""
    return max(detections, key=lambda d: d.box.width * d.box.height, default=None)
