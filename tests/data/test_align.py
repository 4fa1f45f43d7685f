"""Aligned crops: the similarity fit, the warp, keypoint checks and the box fallback."""

from __future__ import annotations

import math

import numpy as np
import pytest

from agegender.data.align import (
    DEFAULT_FACE_CROP,
    KEYPOINT_NAMES,
    FaceCropSpec,
    FaceTemplate,
    UnknownTemplateError,
    align_face,
    crop_face,
    get_template,
    list_templates,
    similarity_transform,
    template_points,
    usable_keypoints,
)
from agegender.data.images import crop_with_margin

TEMPLATE = FaceTemplate("test", ((0.35, 0.4), (0.65, 0.4), (0.5, 0.55), (0.5, 0.7)), 100, "by hand")
DOT_COLOURS = ((255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0))  # one per keypoint


def similarity(scale: float, degrees: float, shift: tuple[float, float]) -> np.ndarray:
    angle = math.radians(degrees)
    c, s = scale * math.cos(angle), scale * math.sin(angle)
    return np.array([[c, -s, shift[0]], [s, c, shift[1]]])


def apply(matrix: np.ndarray, points) -> np.ndarray:
    points = np.asarray(points, dtype=np.float64)
    return points @ matrix[:, :2].T + matrix[:, 2]


def dotted_frame(points, size=(240, 320), radius=3.0) -> np.ndarray:
    """A grey frame with a coloured disc centred on each (x, y) point (pixel-edge coordinates)."""
    height, width = size
    frame = np.full((height, width, 3), 60, np.uint8)
    ys, xs = np.mgrid[0:height, 0:width] + 0.5  # pixel centres
    for (x, y), colour in zip(points, DOT_COLOURS):
        frame[(xs - x) ** 2 + (ys - y) ** 2 <= radius**2] = colour
    return frame


def dot_centres(chip: np.ndarray) -> np.ndarray:
    """Centroid (pixel-edge coordinates) of each colour's pixels in a chip, (4, 2)."""
    centres = []
    for colour in DOT_COLOURS:
        distance = np.abs(chip.astype(int) - np.array(colour)).sum(axis=2)
        ys, xs = np.nonzero(distance < 120)
        centres.append((xs.mean() + 0.5, ys.mean() + 0.5))
    return np.array(centres)


FACE = [(130.0, 100.0), (190.0, 100.0), (160.0, 130.0), (160.0, 160.0)]  # frame pixels


def test_similarity_transform_recovers_a_known_similarity_and_never_mirrors():
    truth = similarity(1.7, 25.0, (12.0, -4.0))
    np.testing.assert_allclose(similarity_transform(FACE, apply(truth, FACE)), truth, atol=1e-9)
    mirrored = np.array(FACE) * [-1, 1]
    fitted = similarity_transform(FACE, mirrored)
    assert np.linalg.det(fitted[:, :2]) > 0  # a rotation, not a reflection
    with pytest.raises(ValueError, match="degenerate"):
        similarity_transform([(5, 5)] * 4, FACE)


def test_alignment_puts_the_keypoints_on_the_template():
    chip = align_face(dotted_frame(FACE), FACE, TEMPLATE)
    assert chip.shape == (100, 100, 3) and chip.dtype == np.uint8
    np.testing.assert_allclose(dot_centres(chip), template_points(TEMPLATE), atol=0.6)


@pytest.mark.parametrize("scale, degrees", [(0.6, 30.0), (2.5, -40.0), (1.0, 90.0), (0.25, 10.0)])
def test_alignment_undoes_rotation_and_scale(scale, degrees):
    """The same face turned and resized in the frame gives the same chip."""
    centre = np.array([160.0, 120.0])
    moved = similarity(scale, degrees, (0, 0))
    moved[:, 2] = centre - moved[:, :2] @ centre  # about the frame centre
    moved_face = apply(moved, FACE)
    frame = dotted_frame(moved_face, radius=3.0 * scale, size=(480, 640) if scale > 1 else (240, 320))
    chip = align_face(frame, moved_face, TEMPLATE)
    np.testing.assert_allclose(dot_centres(chip), template_points(TEMPLATE), atol=1.0)


def test_margin_zooms_out_about_the_chip_centre():
    plain, wide = template_points(TEMPLATE), template_points(TEMPLATE, margin=0.25)
    eyes = lambda p: np.hypot(*(p[1] - p[0]))  # noqa: E731
    assert eyes(wide) == pytest.approx(eyes(plain) / 1.5)
    np.testing.assert_allclose(wide.mean(axis=0) - 50, (plain.mean(axis=0) - 50) / 1.5)
    chip = align_face(dotted_frame(FACE), FACE, TEMPLATE, margin=0.25)
    np.testing.assert_allclose(dot_centres(chip), wide, atol=0.6)


def test_shrinking_a_big_face_does_not_alias():
    """One-pixel stripes shrunk tenfold must average to grey, not sample random stripes."""
    frame = np.zeros((1200, 1200, 3), np.uint8)
    frame[:, ::2] = 255
    big_face = [(300.0, 400.0), (900.0, 400.0), (600.0, 700.0), (600.0, 1000.0)]
    chip = align_face(frame, big_face, TEMPLATE)
    assert abs(chip.mean() - 127.5) < 5 and chip.std() < 12


@pytest.mark.parametrize(
    "keypoints",
    [
        None,
        FACE[:3],  # wrong count
        [(np.nan, 1.0), *FACE[1:]],
        [(150.0, 100.0), (151.0, 100.0), *FACE[2:]],  # eyes 1 px apart
        [(130.0, 100.0), (190.0, 100.0), (160.0, 130.0), (160.0, 500.0)],  # far below a 240-high frame
    ],
)
def test_unusable_keypoints(keypoints):
    assert usable_keypoints(keypoints, 320, 240) is None
    with pytest.raises(ValueError, match="unusable"):
        align_face(dotted_frame(FACE), keypoints, TEMPLATE)


def test_keypoints_a_little_outside_the_frame_are_usable():
    near_edge = [(x, y + 120) for x, y in FACE]  # mouth at y = 280 in a 240-high frame
    assert usable_keypoints(near_edge, 320, 240) is not None


def test_crop_face_aligns_or_falls_back_to_the_box_and_says_which():
    frame = dotted_frame(FACE)
    box = (120, 80, 200, 180)
    aligned = crop_face(frame, box, FACE, FaceCropSpec("aligned", "utkface"), box_margin=0.3)
    assert aligned.method == "aligned" and aligned.image.shape == (200, 200, 3)
    for keypoints in (None, [(150.0, 100.0)] * 4):
        fallback = crop_face(frame, box, keypoints, FaceCropSpec("aligned", "utkface"), box_margin=0.3)
        assert fallback.method == "box"
        np.testing.assert_array_equal(fallback.image, crop_with_margin(frame, box, 0.3))
    boxed = crop_face(frame, box, FACE, FaceCropSpec("box", margin=0.1), box_margin=0.3)
    assert boxed.method == "box"
    np.testing.assert_array_equal(boxed.image, crop_with_margin(frame, box, 0.1))


def test_templates_by_name():
    assert {"utkface", "dlib_150"} <= set(list_templates())
    for name in list_templates():
        template = get_template(name)
        assert template.name == name and len(template.keypoints) == len(KEYPOINT_NAMES)
        (right_eye, left_eye, nose, mouth) = template.keypoints
        assert right_eye[0] < nose[0] < left_eye[0] and max(right_eye[1], left_eye[1]) < nose[1] < mouth[1]
    with pytest.raises(UnknownTemplateError, match="unknown face template 'arcface'; choose one of utkface"):
        get_template("arcface")


def test_crop_spec_checks_and_round_trips():
    spec = FaceCropSpec("aligned", "dlib_150", 0.1)
    assert FaceCropSpec.from_dict(spec.to_dict()) == spec
    assert DEFAULT_FACE_CROP.method in ("aligned", "box")
    with pytest.raises(ValueError, match="unknown crop method 'tight'"):
        FaceCropSpec("tight")
    with pytest.raises(UnknownTemplateError):
        FaceCropSpec("aligned", "nope")
    with pytest.raises(ValueError, match="margin must be >= 0"):
        FaceCropSpec("box", margin=-0.1)
    with pytest.raises(ValueError, match="unknown face_crop keys"):
        FaceCropSpec.from_dict({"method": "box", "size": 3})
