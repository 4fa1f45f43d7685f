from __future__ import annotations

import importlib.util
import math
import sys
import types
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

import agegender.inference.detectors.mtcnn as mtcnn
from agegender.data.images import load_rgb
from agegender.inference.detectors.factory import DetectorWeightsError, create_detector
from agegender.inference.detectors.mtcnn import (
    MtcnnDetector,
    MtcnnNets,
    load_mtcnn,
    nms,
    pack_levels,
    pnet_cells,
    pnet_groups,
    pooling_edges,
)

EXAMPLES = Path(__file__).resolve().parents[3] / "examples"
# Hand-placed on examples/astronaut.jpg (image x, y), as in test_blazeface.py.
RIGHT_EYE, LEFT_EYE, MOUTH = (202, 105), (246, 110), (220, 150)
needs_facenet = pytest.mark.skipif(importlib.util.find_spec("facenet_pytorch") is None,
                                   reason="facenet-pytorch not installed (requirements/parity.txt)")  # fmt: skip


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    return load_rgb(EXAMPLES / "astronaut.jpg")


@pytest.fixture(scope="module")
def detector() -> MtcnnDetector:
    return MtcnnDetector()


def _frame(astronaut: np.ndarray, places: list[tuple[int, int, int]], size=(1280, 720)) -> np.ndarray:
    face = astronaut[40:210, 140:310]  # the face with some hair and neck
    frame = np.full((size[1], size[0], 3), 128, np.uint8)
    for side, x, y in places:
        frame[y : y + side, x : x + side] = cv2.resize(face, (side, side), interpolation=cv2.INTER_AREA)
    return frame


def _centres(detections) -> list[tuple[float, float]]:
    return [((d.box.x1 + d.box.x2) / 2, (d.box.y1 + d.box.y2) / 2) for d in detections]


def test_finds_the_astronaut_with_its_keypoints(astronaut, detector):
    best = detector.detect(astronaut)[0]
    assert best.score > 0.99 and best.box.x1 <= 224 <= best.box.x2 and best.box.y1 <= 130 <= best.box.y2
    right_eye, left_eye, _, mouth = best.keypoints
    # MTCNN's points sit a few pixels above the hand-placed ones (eye distance 44 px here), and the
    # midpoint of the mouth corners above the middle of the lips.
    assert np.hypot(*np.subtract(right_eye, RIGHT_EYE)) < 9 and np.hypot(*np.subtract(left_eye, LEFT_EYE)) < 9
    assert np.hypot(*np.subtract(mouth, MOUTH)) < 14


@pytest.mark.parametrize(("side", "min_face"), [(24, 24), (32, None), (48, None), (96, None)])
def test_finds_four_small_faces_in_a_wide_frame(astronaut, detector, side, min_face):
    # `side` is the pasted crop's, hair and neck included: the face itself is about 0.6 of it.
    places = [(side, 100 + 300 * k, 200 + 60 * k) for k in range(4)]
    search = detector if min_face is None else MtcnnDetector(min_face=min_face)
    found = _centres(search.detect(_frame(astronaut, places)))
    for _, x, y in places:
        assert sum(x <= cx <= x + side and y <= cy <= y + side for cx, cy in found) == 1
    assert len(found) == 4


def test_a_face_cut_by_the_frame_edge_is_found(astronaut, detector):
    frame = _frame(astronaut, [(120, 0, 0)])[:, 30:]  # a quarter of the face outside on the left
    assert len(detector.detect(np.ascontiguousarray(frame))) == 1


@pytest.mark.parametrize("shape", [(1, 1, 3), (10, 3000, 3), (3000, 10, 3), (0, 5, 3), (11, 11, 3)])
def test_frames_too_small_for_a_face_give_none(detector, shape):
    assert detector.detect(np.zeros(shape, np.uint8)) == []
    assert create_detector("auto").detect(np.zeros(shape, np.uint8)) == []  # blazeface + mtcnn, the default


def test_a_frame_longer_than_max_side_is_shrunk_and_boxes_mapped_back(astronaut):
    frame = _frame(astronaut, [(240, 1400, 700)], size=(2000, 1200))
    small = MtcnnDetector(max_side=500)  # searched at a quarter of the size
    (found,) = small.detect(frame)
    cx, cy = _centres([found])[0]
    assert 1400 <= cx <= 1640 and 700 <= cy <= 940 and found.box.width > 100  # the face is half the pasted crop
    assert all(1380 <= x <= 1660 and 680 <= y <= 960 for x, y in found.keypoints)


def test_verify_follows_a_moved_face_and_drops_a_gone_one(astronaut, detector):
    first = detector.detect(_frame(astronaut, [(48, 400, 300)]))
    moved = detector.verify(_frame(astronaut, [(48, 406, 303)]), first)
    assert len(moved) == 1 and moved[0].box.x1 > first[0].box.x1
    assert detector.verify(_frame(astronaut, []), first) == []
    assert detector.verify(_frame(astronaut, []), []) == []


def _pyramid(image: np.ndarray, sides: list[tuple[int, int]]) -> list[np.ndarray]:
    return [cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA) for height, width in sides]


@pytest.mark.parametrize("sides", [
    [(125, 125), (75, 75), (45, 45), (27, 27), (17, 17)],  # a 250x250 photo's pyramid, odd sides
    [(360, 640), (216, 384), (130, 231), (78, 139), (47, 83), (28, 50), (17, 30)],  # 1280x720
    [(300, 40), (180, 24), (108, 14)],  # a tall, narrow frame
])  # fmt: skip
def test_packed_levels_keep_their_pixels_apart_on_even_corners(astronaut, sides):
    levels = _pyramid(astronaut, sides)
    corners, canvas = pack_levels(levels)
    rooms = []
    for (x, y), level in zip(corners, levels):
        assert x % 2 == 0 and y % 2 == 0
        assert np.array_equal(canvas[y : y + level.shape[0], x : x + level.shape[1]], level)
        height, width = level.shape[:2]
        rooms.append((x, y, x + width + width % 2, y + height + height % 2))  # with an odd side's pooling edge
    for i, a in enumerate(rooms):
        for b in rooms[i + 1 :]:
            assert a[2] <= b[0] or b[2] <= a[0] or a[3] <= b[1] or b[3] <= a[1], (a, b)
    assert max(r[2] for r in rooms) <= canvas.shape[1] and max(r[3] for r in rooms) <= canvas.shape[0]
    assert canvas.shape[0] * canvas.shape[1] < 1.15 * sum((h + 1) * (w + 1) for h, w in sides)


def test_pnet_on_the_packed_canvas_gives_every_cell_of_each_level_as_alone(astronaut):
    pnet = load_mtcnn(mtcnn.bundled_weights_path()).pnet
    levels = _pyramid(astronaut, [(125, 125), (75, 76), (46, 45), (27, 28), (17, 17)])  # odd and even sides
    corners, canvas = pack_levels(levels)
    with torch.inference_mode():
        packed_offsets, packed_probs = pnet(mtcnn.to_tensor(canvas), pooling_edges(corners, levels))
        for (x, y), level in zip(corners, levels):
            offsets, probs = pnet(mtcnn.to_tensor(level))
            rows, cols = pnet_cells(level.shape[0]), pnet_cells(level.shape[1])
            assert probs.shape[1:] == (rows, cols)
            cells = np.s_[y // 2 : y // 2 + rows, x // 2 : x // 2 + cols]
            assert torch.allclose(packed_probs[0][cells], probs[0], atol=1e-5)
            assert torch.allclose(packed_offsets[0][(slice(None), *cells)], offsets[0], atol=1e-5)


def test_large_levels_get_a_pnet_call_each_and_small_ones_share_one():
    sides = [(720, 1280), (432, 768), (259, 461), (155, 276), (93, 166), (56, 100), (34, 60)]
    levels = [np.zeros((height, width, 3), np.uint8) for height, width in sides]
    groups = pnet_groups(levels)
    assert sorted(i for group in groups for i in group) == list(range(len(levels)))
    for group in groups:
        pixels = [levels[i].shape[0] * levels[i].shape[1] for i in group]
        assert len(group) == 1 or max(pixels) < mtcnn.PACK_BELOW_PIXELS
    assert len(groups) == 1 + sum(h * w >= mtcnn.PACK_BELOW_PIXELS for h, w in sides)


@pytest.mark.parametrize("pack_below", [0, math.inf])  # every level alone; all on one canvas
def test_faces_do_not_depend_on_how_the_levels_are_grouped(astronaut, detector, monkeypatch, pack_below):
    frame = _frame(astronaut, [(side, 100 + 300 * k, 200 + 60 * k) for k, side in enumerate([24, 48, 96, 200])])
    expected = detector.detect(frame)
    monkeypatch.setattr(mtcnn, "PACK_BELOW_PIXELS", pack_below)
    found = detector.detect(frame)
    assert len(found) == len(expected) == 4
    for a, b in zip(found, expected):
        assert np.allclose([a.box.x1, a.box.y1, a.box.x2, a.box.y2], [b.box.x1, b.box.y1, b.box.x2, b.box.y2], atol=1e-3)


def test_nms_keeps_the_best_of_overlapping_boxes():
    boxes = np.array([[0, 0, 9, 9], [1, 1, 10, 10], [50, 50, 59, 59], [0, 0, 19, 19]], np.float64)
    scores = np.array([0.8, 0.9, 0.7, 0.6])
    assert nms(boxes, scores, 0.5).tolist() == [1, 2, 3]
    # Intersection over the smaller box: the 10x10 box inside the 20x20 one goes.
    assert nms(boxes, scores, 0.7, by_min_area=True).tolist() == [1, 2]
    assert nms(np.zeros((0, 4)), np.zeros(0), 0.5).tolist() == []


def test_bundled_weights_ship_with_their_licence():
    path = mtcnn.bundled_weights_path()
    assert path.is_file() and "MIT License" in (path.parent / "mtcnn_NOTICE.txt").read_text()


def test_broken_weights_are_one_error_line(tmp_path):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a safetensors file")
    mtcnn.load_mtcnn.cache_clear()
    with pytest.raises(DetectorWeightsError, match="bad.safetensors: not usable MTCNN weights") as error:
        MtcnnDetector(weights=bad)
    assert "\n" not in str(error.value)
    with pytest.raises(DetectorWeightsError, match="MTCNN weights file not found"):
        create_detector("mtcnn", weights=tmp_path / "missing.safetensors")


def test_rejects_a_min_face_below_the_window():
    with pytest.raises(ValueError, match="min_face"):
        MtcnnDetector(min_face=8)


def _import_facenet_networks(monkeypatch):
    """facenet_pytorch's PNet/RNet/ONet with the imports it needs only elsewhere stubbed: torchvision
    (NMS in its cascade, not called here), requests and tqdm (weight downloads for its other network)."""
    for name in ("torchvision", "torchvision.transforms", "torchvision.transforms.functional", "torchvision.ops",
                 "torchvision.ops.boxes", "requests", "requests.adapters", "tqdm", "tqdm.auto"):  # fmt: skip
        stub = types.ModuleType(name)
        stub.batched_nms = stub.HTTPAdapter = stub.tqdm = None
        monkeypatch.setitem(sys.modules, name, stub)
    for name in [m for m in sys.modules if m.startswith("facenet_pytorch")]:
        monkeypatch.delitem(sys.modules, name)
    from facenet_pytorch.models.mtcnn import ONet, PNet, RNet

    return PNet(), RNet(), ONet()


@needs_facenet
def test_networks_match_facenet_pytorch(monkeypatch):
    theirs = _import_facenet_networks(monkeypatch)
    ours = MtcnnNets()
    ours.load_state_dict({k: v for k, v in mtcnn.load_mtcnn(mtcnn.bundled_weights_path()).state_dict().items()})
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for net, reference, size in zip((ours.pnet, ours.rnet, ours.onet), theirs, (61, 24, 48)):
            x = torch.rand(3, 3, size, size + (7 if size == 61 else 0), generator=generator) * 2 - 1
            mine, expected = net.eval()(x), reference.eval()(x)
            expected = (*expected[:-1], expected[-1][:, 1])  # their last output: both classes' probabilities
            for a, b in zip(mine, expected):
                assert torch.allclose(a, b, atol=1e-5), (type(net).__name__, (a - b).abs().max())
