from __future__ import annotations

import importlib.util
from pathlib import Path

import cv2
import numpy as np
import pytest

from agegender.data.align import FaceCropSpec, get_template, template_points
from agegender.data.images import load_rgb
from agegender.inference.detectors.factory import (
    VIDEO_SMALL_FACE_EVERY,
    CombinedDetector,
    Detection,
    DetectorUnavailableError,
    FaceDetector,
    HaarDetector,
    create_detector,
    create_video_detector,
    crop_faces,
    list_detectors,
)
from agegender.inference.predictions import Box

EXAMPLES = Path(__file__).resolve().parents[3] / "examples"
FACE_CENTRE = (226, 123)  # centre of the face crop box documented in examples/README.md


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    return load_rgb(EXAMPLES / "astronaut.jpg")


def _available(name: str) -> bool:
    return name in ("haar", "blazeface", "mtcnn") or importlib.util.find_spec("mediapipe") is not None


@pytest.mark.parametrize("name", list_detectors())
def test_every_detector_finds_the_astronaut_and_nothing_in_grey(name, astronaut):
    if not _available(name):
        pytest.skip(f"{name} detector package not installed")
    detector = create_detector(name)
    assert isinstance(detector, FaceDetector)
    detections = detector.detect(astronaut)
    assert len(detections) == 1
    box = detections[0].box
    assert abs((box.x1 + box.x2) / 2 - FACE_CENTRE[0]) < 25 and abs((box.y1 + box.y2) / 2 - FACE_CENTRE[1]) < 30
    assert 70 < box.width < 160 and 0 <= detections[0].score <= 1
    assert detector.detect(np.full((480, 640, 3), 128, np.uint8)) == []
    assert detector.detect(np.zeros((10, 10, 3), np.uint8)) == []  # smaller than any face


@pytest.mark.parametrize("name", list_detectors())
def test_every_detector_batches_frames_of_different_sizes_like_one_by_one(name, astronaut):
    if not _available(name):
        pytest.skip(f"{name} detector package not installed")
    detector = create_detector(name)
    grey, dot = np.full((480, 640, 3), 128, np.uint8), np.zeros((1, 1, 3), np.uint8)
    frames = [astronaut, grey, astronaut[:300, :200].copy(), dot]
    batched = detector.detect_batch(frames)
    assert [[d.box for d in found] for found in batched] == [[d.box for d in detector.detect(f)] for f in frames]
    assert len(batched[0]) == 1 and batched[1] == [] and batched[3] == []


def test_haar_margin_reproduces_the_training_style_crop(astronaut):
    """The default margin turns the cascade box into about the UTKFace-style crop of examples/README.md."""
    detector = HaarDetector()
    (detection,) = detector.detect(astronaut)
    crop = crop_faces(astronaut, [detection], detector.margin, FaceCropSpec("box"))[0].image
    assert crop.shape[0] == crop.shape[1] and abs(crop.shape[0] - 150) < 25


def test_many_faces_are_all_returned(astronaut):
    face = astronaut[40:210, 140:310]  # (170, 170, 3)
    canvas = np.full((480, 640, 3), 120, np.uint8)
    for x in (20, 230, 440):
        canvas[150:320, x : x + 170] = face
    detections = HaarDetector().detect(canvas)
    assert len(detections) == 3
    assert sorted(d.box.x1 // 200 for d in detections) == [0, 1, 2]
    crops = [c.image for c in crop_faces(canvas, detections, 0.3, FaceCropSpec("box"))]
    assert all(c.shape[:2] == (round(d.box.width * 1.6), round(d.box.width * 1.6)) for c, d in zip(crops, detections))


def test_bad_inputs_and_names_raise_clear_errors():
    with pytest.raises(ValueError, match="unknown face detector 'yolo'"):
        create_detector("yolo")
    with pytest.raises(ValueError, match="HxWx3 uint8"):
        HaarDetector().detect(np.zeros((10, 10), np.uint8))
    with pytest.raises(ValueError, match="HxWx3 uint8"):
        HaarDetector().detect(np.zeros((10, 10, 3), np.float32))


@pytest.mark.skipif(importlib.util.find_spec("mediapipe") is not None, reason="mediapipe is installed")
def test_missing_mediapipe_says_how_to_install_it():
    with pytest.raises(DetectorUnavailableError, match="pip install --no-deps mediapipe"):
        create_detector("mediapipe")


def test_detection_is_a_frozen_value():
    detection = Detection(Box(1, 2, 3, 4), 0.5)
    with pytest.raises(AttributeError):
        detection.score = 1.0  # type: ignore[misc]


def test_auto_finds_small_faces_in_stills_and_keeps_video_fast():
    # Both detectors' weights ship inside the package, so a plain install gets them.
    stills, video = create_detector("auto"), create_video_detector("auto")
    assert isinstance(stills, CombinedDetector) and stills.every == 1
    assert isinstance(video, CombinedDetector) and video.every == VIDEO_SMALL_FACE_EVERY > 1
    assert video.fast.name == "blazeface" and video.small.name == "mtcnn"
    assert create_video_detector("haar").name == "haar"  # a named detector runs on every frame


def _paste_face(astronaut: np.ndarray, places: list[tuple[int, int, int]], size=(640, 480)) -> np.ndarray:
    """The astronaut's face resized to each (side, x, y) in a mid-grey frame."""
    face = astronaut[40:210, 140:310]
    frame = np.full((size[1], size[0], 3), 128, np.uint8)
    for side, x, y in places:
        frame[y : y + side, x : x + side] = cv2.resize(face, (side, side), interpolation=cv2.INTER_AREA)
    return frame


def test_on_video_a_small_face_is_found_within_the_period_and_followed(astronaut):
    video = CombinedDetector(create_detector("blazeface"), create_detector("mtcnn"), every=4)
    big = (300, 320, 40)  # blazeface's face, every frame
    frames = [_paste_face(astronaut, [big])] * 2 + [_paste_face(astronaut, [big, (48, 40 + 2 * i, 300)]) for i in range(8)]
    counts = [len(video.detect(frame)) for frame in frames]
    # The 48 px face appears at frame 2; the small-face pass runs at frames 0, 4 and 8 and O-Net follows it between.
    assert counts[:4] == [1, 1, 1, 1] and counts[4:] == [2] * 6
    small = [d for d in video.detect(frames[-1]) if d.box.width < 100]
    assert len(small) == 1 and 40 + 14 <= (small[0].box.x1 + small[0].box.x2) / 2 <= 40 + 14 + 48


def test_auto_on_stills_adds_the_small_faces_to_blazeface_s(astronaut):
    frame = _paste_face(astronaut, [(300, 320, 40), (40, 60, 60), (32, 100, 400)])
    stills = create_detector("auto")
    (big,) = create_detector("blazeface").detect(frame)
    found = stills.detect(frame)
    assert len(found) == 3 and big in found  # the face both see keeps blazeface's box and keypoints
    assert stills.detect_batch([frame, frame[:10]]) == [found, []]


@pytest.mark.skipif(importlib.util.find_spec("mediapipe") is None, reason="mediapipe not installed")
def test_mediapipe_keypoints_align_the_astronaut_onto_the_template(astronaut):
    detector = create_detector("mediapipe")
    (detection,) = detector.detect(astronaut)
    (crop,) = crop_faces(astronaut, [detection], detector.margin, FaceCropSpec("aligned", "utkface"))
    assert crop.method == "aligned" and crop.image.shape == (200, 200, 3)
    padded = np.pad(crop.image, ((50, 50), (50, 50), (0, 0)), constant_values=128)  # as the template was measured
    (again,) = detector.detect(padded)
    eyes = np.array(again.keypoints[:2]) - 50
    np.testing.assert_allclose(eyes, template_points(get_template("utkface"))[:2], atol=8)
