from __future__ import annotations

import importlib.util
from pathlib import Path

import cv2
import numpy as np
import pytest
from safetensors.torch import save_file

import agegender.inference.detectors.blazeface as blazeface
from agegender.data.images import load_rgb
from agegender.inference.detectors.blazeface import BlazeFaceDetector, BlazeFaceNet, ssd_anchor_centres, weighted_nms
from agegender.inference.detectors.factory import KEYPOINT_NAMES, DetectorWeightsError, FaceDetector, create_detector

EXAMPLES = Path(__file__).resolve().parents[3] / "examples"
# Hand-placed on examples/astronaut.jpg (image x, y): the eye centres and the middle of the lips.
RIGHT_EYE, LEFT_EYE, MOUTH = (202, 105), (246, 110), (220, 150)
needs_mediapipe = pytest.mark.skipif(importlib.util.find_spec("mediapipe") is None, reason="mediapipe not installed")


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    return load_rgb(EXAMPLES / "astronaut.jpg")


@pytest.fixture(scope="module")
def detector() -> BlazeFaceDetector:
    return BlazeFaceDetector()


def _paste(canvas_hw: tuple[int, int], face: np.ndarray, places: list[tuple[int, int, int]]) -> np.ndarray:
    """The face resized to each (side, x, y) and pasted into a mid-grey canvas."""
    canvas = np.full((*canvas_hw, 3), 128, np.uint8)
    for side, x, y in places:
        canvas[y : y + side, x : x + side] = cv2.resize(face, (side, side), interpolation=cv2.INTER_AREA)
    return canvas


def _frames(astronaut: np.ndarray) -> dict[str, np.ndarray]:
    face = astronaut[40:210, 140:310]  # (170, 170, 3), the face with some hair and neck
    return {
        "astronaut": astronaut,
        "landscape": _paste((480, 640), face, [(220, 30, 200)]),
        "portrait": _paste((640, 480), face, [(260, 200, 10)]),
        "two_faces": _paste((480, 640), face, [(200, 20, 40), (240, 380, 220)]),
        "wide_strip": _paste((300, 1000), face, [(290, 600, 5)]),
        "cut_at_bottom": astronaut[:140],
        "small_frame": cv2.resize(astronaut, (96, 96), interpolation=cv2.INTER_AREA),
    }


@needs_mediapipe
@pytest.mark.parametrize("frame_name", ["astronaut", "landscape", "portrait", "two_faces", "wide_strip",
                                        "cut_at_bottom", "small_frame"])  # fmt: skip
def test_matches_mediapipe(frame_name, astronaut, detector):
    from agegender.inference.detectors.factory import MediaPipeDetector

    frame = _frames(astronaut)[frame_name]
    reference = MediaPipeDetector().detect(frame)
    ours = detector.detect(frame)
    assert len(reference) >= 1 and len(ours) == len(reference)
    # Measured: identical to 1e-4 pixel (tools/check_blazeface_parity.py); the margins are for
    # other OpenCV and XNNPACK builds.
    for mine, theirs in zip(ours, reference):
        assert _iou(mine.box, theirs.box) > 0.95
        assert np.abs(np.subtract(_corners(mine.box), _corners(theirs.box))).max() <= 1
        assert abs(mine.score - theirs.score) < 0.005
        assert np.abs(np.subtract(mine.keypoints, theirs.keypoints)).max() < 1


def _corners(box) -> tuple[int, int, int, int]:
    return box.x1, box.y1, box.x2, box.y2


def _iou(a, b) -> float:
    width = max(0, min(a.x2, b.x2) - max(a.x1, b.x1))
    height = max(0, min(a.y2, b.y2) - max(a.y1, b.y1))
    intersection = width * height
    return intersection / (a.width * a.height + b.width * b.height - intersection)


def test_keypoints_land_on_the_eyes_nose_and_mouth(astronaut, detector):
    (face,) = detector.detect(astronaut)
    assert isinstance(detector, FaceDetector) and len(face.keypoints) == len(KEYPOINT_NAMES)
    right_eye, left_eye, nose, mouth = np.array(face.keypoints)
    for found, expected in ((right_eye, RIGHT_EYE), (left_eye, LEFT_EYE), (mouth, MOUTH)):
        assert np.hypot(*(found - expected)) < 6
    assert right_eye[1] < nose[1] < mouth[1] and right_eye[0] < nose[0] < left_eye[0]


def test_margin_turns_the_box_into_the_training_style_crop(astronaut, detector):
    (face,) = detector.detect(astronaut)
    assert abs(face.box.width * (1 + 2 * detector.margin) - 150) < 25  # examples/README.md's 150-pixel crop


def test_batch_equals_one_by_one_for_frames_of_different_sizes(astronaut, detector):
    frames = list(_frames(astronaut).values()) + [np.zeros((1, 1, 3), np.uint8)]
    batched = detector.detect_batch(frames)
    assert len(batched) == len(frames)
    for frame, together in zip(frames, batched):
        alone = detector.detect(frame)
        assert [d.box for d in together] == [d.box for d in alone]
        assert np.allclose([d.score for d in together], [d.score for d in alone], atol=1e-5)
        assert np.allclose([d.keypoints for d in together], [d.keypoints for d in alone], atol=1e-3)
    assert detector.detect_batch([]) == []


def test_frames_without_faces_give_nothing(detector):
    gradient = np.broadcast_to(np.linspace(0, 255, 640).astype(np.uint8)[None, :, None], (480, 640, 3)).copy()
    frames = [
        np.full((480, 640, 3), 128, np.uint8),
        gradient,
        np.zeros((1, 1, 3), np.uint8),
        np.zeros((0, 5, 3), np.uint8),
    ]
    assert detector.detect_batch(frames) == [[], [], [], []]


def test_twenty_faces_are_found_inside_the_frame(astronaut, detector):
    tile = astronaut[73:189, 167:283]  # the face box plus 10 pixels
    frame = np.tile(tile, (4, 5, 1))  # 20 faces, (464, 580, 3)
    detections = detector.detect(frame)
    assert 15 <= len(detections) <= 20  # measured: 18 (MediaPipe finds the same 18)
    assert all(0 <= d.box.x1 < d.box.x2 <= 580 and 0 <= d.box.y1 < d.box.y2 <= 464 for d in detections)
    assert [d.score for d in detections] == sorted((d.score for d in detections), reverse=True)
    centres = {((d.box.x1 + d.box.x2) // 2 // 116, (d.box.y1 + d.box.y2) // 2 // 116) for d in detections}
    assert len(centres) == len(detections)  # one box per tile, no duplicates left by the NMS


def test_face_cut_by_the_frame_keeps_keypoints_outside_and_clips_the_box(astronaut, detector):
    (top_cut,) = detector.detect(astronaut[100:])  # the eyes are at the top edge
    (bottom_cut,) = detector.detect(astronaut[:140])  # the mouth is below the bottom edge
    assert top_cut.box.y1 == 0 and min(y for _, y in top_cut.keypoints) < 0
    assert bottom_cut.box.y2 == 140 and bottom_cut.keypoints[3][1] > 140


def test_bad_frames_raise_value_errors(detector):
    with pytest.raises(ValueError, match="HxWx3 uint8"):
        detector.detect_batch([np.zeros((10, 10, 3), np.uint8), np.zeros((10, 10), np.uint8)])


def test_anchors_follow_the_ssd_layout():
    centres = ssd_anchor_centres()
    assert centres.shape == (896, 2)
    assert np.allclose(centres[:2], 0.5 / 16) and np.allclose(centres[2], [1.5 / 16, 0.5 / 16])
    assert np.allclose(centres[512:518], 0.5 / 8) and np.allclose(centres[-1], 7.5 / 8)


def test_weighted_nms_averages_overlapping_boxes_by_score():
    scores = np.array([0.6, 0.9, 0.8])
    boxes = np.array([[0.0, 0.0, 0.2, 0.2], [0.5, 0.5, 0.7, 0.7], [0.52, 0.5, 0.72, 0.7]])
    keypoints = np.zeros((3, 6, 2))
    (best, best_box, _), (other, other_box, _) = weighted_nms(scores, boxes, keypoints)
    assert best == 0.9 and np.allclose(best_box[0], (0.5 * 0.9 + 0.52 * 0.8) / 1.7)
    assert other == 0.6 and np.allclose(other_box, boxes[0])


def test_missing_weights_file_is_one_clear_error(tmp_path):
    path = tmp_path / "gone.safetensors"
    with pytest.raises(DetectorWeightsError, match="gone.safetensors: BlazeFace weights file not found") as error:
        BlazeFaceDetector(weights=path)
    assert "\n" not in str(error.value)


@pytest.mark.parametrize("content", ["garbage", "wrong_tensors"])
def test_corrupt_weights_file_is_one_clear_error(tmp_path, content):
    path = tmp_path / "bad.safetensors"
    if content == "garbage":
        path.write_bytes(b"\x00\x01 not a safetensors file")
    else:
        state = {k: v.half() for k, v in BlazeFaceNet().state_dict().items()}
        state["stem.weight"] = state["stem.weight"][:3]  # a file for some other network
        save_file(state, path)
    with pytest.raises(DetectorWeightsError, match="bad.safetensors: not usable BlazeFace weights") as error:
        BlazeFaceDetector(weights=path)
    assert "\n" not in str(error.value)


def test_auto_reports_broken_bundled_weights_instead_of_falling_back(tmp_path, monkeypatch):
    monkeypatch.setattr(blazeface, "bundled_weights_path", lambda: tmp_path / "missing.safetensors")
    with pytest.raises(DetectorWeightsError, match="missing.safetensors"):
        create_detector("auto")


def test_bundled_weights_ship_with_the_package():
    path = blazeface.bundled_weights_path()
    assert path.is_file() and (path.parent / "blazeface_NOTICE.txt").is_file()
