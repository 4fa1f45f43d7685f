"""MTCNN (Zhang et al. 2016) in PyTorch: the three networks and the cascade, for faces down to 20 pixels.

The default still-image detector, because BlazeFace's short-range model sees a face only when it
fills about a quarter of the frame (docs/small_faces.md). The weights are the ones facenet-pytorch
2.6.0 ships (``facenet_pytorch/data/{pnet,rnet,onet}.pt``, MIT; converted from the original Caffe
models), turned into safetensors once by `tools/convert_mtcnn.py` (see
``assets/mtcnn_NOTICE.txt``). The package itself cannot be a dependency: it pins torch < 2.3 and
needs torchvision, whose only build for our torch fails to import on the CPU; the networks are 3
small layer stacks, and the cascade around them is written here from the paper's description:

1. **P-Net** runs fully convolutionally on an image pyramid (scale 12 / `min_face`, then x `factor`
   per level down to 12 pixels): every 12x12 window (stride 2) scoring >= thresholds[0] is a
   candidate; NMS at IoU 0.5 per level, then 0.7 over all levels; each box is moved by its
   regression and made square.
2. **R-Net** rescores each candidate on a 24x24 crop (zeros outside the frame, so a face cut by
   the edge is not stretched); NMS 0.7, regression, square.
3. **O-Net** on 48x48 crops gives the final score, box and 5 landmarks; NMS on the smaller box's
   area ("Min") at 0.7 drops boxes nested in a larger one.

Landmarks become KEYPOINT_NAMES: the two eyes and the nose as given, the mouth centre as the
midpoint of the mouth corners. Frames longer than `max_side` are shrunk for the pass and the
boxes mapped back, so a huge photo costs a bounded time (its smallest findable face grows by the
same factor).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import lru_cache
from importlib import resources
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from agegender.inference.detectors.base import Detection, DetectorWeightsError, check_frame, clip_box

NETWORKS = ("pnet", "rnet", "onet")
PNET_CELL, PNET_STRIDE = 12, 2  # P-Net's window and its output stride, in pyramid pixels
RNET_SIZE, ONET_SIZE = 24, 48


def bundled_weights_path() -> Path:
    return Path(str(resources.files("agegender") / "assets" / "mtcnn.safetensors"))


class PNet(nn.Module):
    """(B, 3, H, W) in [-1, 1] -> box regression (B, 4, H', W') and face probability (B, H', W')."""

    def __init__(self):
        super().__init__()
        self.conv1, self.prelu1 = nn.Conv2d(3, 10, 3), nn.PReLU(10)
        self.conv2, self.prelu2 = nn.Conv2d(10, 16, 3), nn.PReLU(16)
        self.conv3, self.prelu3 = nn.Conv2d(16, 32, 3), nn.PReLU(32)
        self.conv4_1 = nn.Conv2d(32, 2, 1)  # face / not-face logits
        self.conv4_2 = nn.Conv2d(32, 4, 1)  # box offsets, fractions of the window

    def forward(self, x: torch.Tensor, edges: Sequence[tuple] = ()) -> tuple[torch.Tensor, torch.Tensor]:
        """`edges`: indices into conv1's output set to -inf before the pooling, where it would pad an
        image of its own (`pooling_edges`, for several images packed on one canvas)."""
        x = self.prelu1(self.conv1(x))
        for index in edges:  # in place: a broadcast add over channels_last took longer than conv1 itself
            x[index] = -math.inf
        x = max_pool_2x2(x)
        x = self.prelu3(self.conv3(self.prelu2(self.conv2(x))))
        return self.conv4_2(x), self.conv4_1(x).softmax(1)[:, 1]


def max_pool_2x2(x: torch.Tensor) -> torch.Tensor:
    """nn.MaxPool2d(2, 2, ceil_mode=True) as the maximum of four strided views: the same values, and
    several times faster on large pyramid levels (measured: torch's ceil-mode pooling is slow on the CPU)."""
    height, width = x.shape[2:]
    if height % 2 or width % 2:
        x = F.pad(x, (0, width % 2, 0, height % 2), value=float("-inf"))
    return torch.maximum(torch.maximum(x[:, :, ::2, ::2], x[:, :, 1::2, ::2]),
                         torch.maximum(x[:, :, ::2, 1::2], x[:, :, 1::2, 1::2]))  # fmt: skip


class RNet(nn.Module):
    """(B, 3, 24, 24) -> box regression (B, 4) and face probability (B,)."""

    def __init__(self):
        super().__init__()
        self.conv1, self.prelu1 = nn.Conv2d(3, 28, 3), nn.PReLU(28)
        self.pool1 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv2, self.prelu2 = nn.Conv2d(28, 48, 3), nn.PReLU(48)
        self.pool2 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv3, self.prelu3 = nn.Conv2d(48, 64, 2), nn.PReLU(64)
        self.dense4, self.prelu4 = nn.Linear(576, 128), nn.PReLU(128)
        self.dense5_1 = nn.Linear(128, 2)
        self.dense5_2 = nn.Linear(128, 4)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.pool1(self.prelu1(self.conv1(x)))
        x = self.pool2(self.prelu2(self.conv2(x)))
        x = self.prelu3(self.conv3(x))  # (B, 64, 3, 3)
        # The dense weights came from Caffe, which flattens (W, H, C) in that order: transpose first.
        x = self.prelu4(self.dense4(x.permute(0, 3, 2, 1).flatten(1)))
        return self.dense5_2(x), self.dense5_1(x).softmax(1)[:, 1]


class ONet(nn.Module):
    """(B, 3, 48, 48) -> box regression (B, 4), landmarks (B, 10: 5 x then 5 y, fractions of the
    box) and face probability (B,)."""

    def __init__(self):
        super().__init__()
        self.conv1, self.prelu1 = nn.Conv2d(3, 32, 3), nn.PReLU(32)
        self.pool1 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv2, self.prelu2 = nn.Conv2d(32, 64, 3), nn.PReLU(64)
        self.pool2 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv3, self.prelu3 = nn.Conv2d(64, 64, 3), nn.PReLU(64)
        self.pool3 = nn.MaxPool2d(2, 2, ceil_mode=True)
        self.conv4, self.prelu4 = nn.Conv2d(64, 128, 2), nn.PReLU(128)
        self.dense5, self.prelu5 = nn.Linear(1152, 256), nn.PReLU(256)
        self.dense6_1 = nn.Linear(256, 2)
        self.dense6_2 = nn.Linear(256, 4)
        self.dense6_3 = nn.Linear(256, 10)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = self.pool1(self.prelu1(self.conv1(x)))
        x = self.pool2(self.prelu2(self.conv2(x)))
        x = self.pool3(self.prelu3(self.conv3(x)))
        x = self.prelu4(self.conv4(x))  # (B, 128, 3, 3)
        x = self.prelu5(self.dense5(x.permute(0, 3, 2, 1).flatten(1)))  # Caffe's flattening order, as in RNet
        return self.dense6_2(x), self.dense6_3(x), self.dense6_1(x).softmax(1)[:, 1]


class MtcnnNets(nn.Module):
    def __init__(self):
        super().__init__()
        self.pnet, self.rnet, self.onet = PNet(), RNet(), ONet()


@lru_cache(maxsize=2)
def load_mtcnn(path: Path) -> MtcnnNets:
    """The three networks with the converted weights at `path` (shared: read-only at inference);
    one DetectorWeightsError line if the file is unusable."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    nets = MtcnnNets()
    try:
        nets.load_state_dict(load_file(path))
    except FileNotFoundError:
        hint = " (it ships with agegender: reinstall the package)" if path == bundled_weights_path() else ""
        raise DetectorWeightsError(f"{path}: MTCNN weights file not found{hint}") from None
    except (SafetensorError, OSError, RuntimeError, ValueError) as error:
        raise DetectorWeightsError(f"{path}: not usable MTCNN weights ({str(error).splitlines()[0]})") from None
    # channels_last: the whole cascade ran faster in NHWC than in NCHW on the CPU (measured on 1280x720 frames).
    return nets.eval().to(memory_format=torch.channels_last)


def to_tensor(images: np.ndarray) -> torch.Tensor:
    """uint8 (B, H, W, 3) or (H, W, 3) -> float (B, 3, H, W) in [-1, 1], MTCNN's normalisation."""
    batch = torch.from_numpy(np.ascontiguousarray(images)).float()
    if batch.ndim == 3:
        batch = batch[None]
    return (batch.permute(0, 3, 1, 2) - 127.5) * 0.0078125  # a channels_last view of the NHWC pixels


def nms(boxes: np.ndarray, scores: np.ndarray, threshold: float, by_min_area: bool = False) -> np.ndarray:
    """Indices kept by greedy NMS, best score first. Boxes (N, 4) x1, y1, x2, y2 with inclusive
    corners (the models' convention: width = x2 - x1 + 1). Overlap is IoU (OpenCV's NMS: thousands
    of P-Net candidates per frame), or the intersection over the smaller box with `by_min_area`."""
    if not len(boxes):
        return np.zeros(0, np.int64)
    if not by_min_area:
        rects = np.concatenate([boxes[:, :2], boxes[:, 2:4] - boxes[:, :2] + 1], axis=1)
        return np.asarray(cv2.dnn.NMSBoxes(rects.tolist(), scores.tolist(), 0.0, threshold), np.int64).reshape(-1)
    order = np.argsort(-scores, kind="stable")
    area = areas(boxes)
    keep = []
    while order.size:
        best, rest = order[0], order[1:]
        keep.append(best)
        overlap = intersections(boxes[best : best + 1], boxes[rest])[0]
        order = rest[overlap / np.minimum(area[best], area[rest]) <= threshold]
    return np.asarray(keep, dtype=np.int64)


def areas(boxes: np.ndarray) -> np.ndarray:
    """(N,) areas of inclusive-corner boxes (N, 4+)."""
    return (boxes[:, 2] - boxes[:, 0] + 1) * (boxes[:, 3] - boxes[:, 1] + 1)


def intersections(boxes: np.ndarray, others: np.ndarray) -> np.ndarray:
    """(N, K) intersection areas of inclusive-corner boxes (N, 4+) with others (K, 4+)."""
    width = np.minimum(boxes[:, None, 2], others[None, :, 2]) - np.maximum(boxes[:, None, 0], others[None, :, 0]) + 1
    height = np.minimum(boxes[:, None, 3], others[None, :, 3]) - np.maximum(boxes[:, None, 1], others[None, :, 1]) + 1
    return np.clip(width, 0, None) * np.clip(height, 0, None)


def inclusive_boxes(detections: list[Detection]) -> np.ndarray:
    """(N, 4) x1, y1, x2, y2 with inclusive corners, the networks' convention, of Detections' boxes."""
    return np.array([[d.box.x1, d.box.y1, d.box.x2 - 1, d.box.y2 - 1] for d in detections], np.float64).reshape(-1, 4)


def square(boxes: np.ndarray) -> np.ndarray:
    """Each box grown to a square on its longer side, about the same centre."""
    out = boxes.copy()
    width, height = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    side = np.maximum(width, height)
    out[:, 0] = boxes[:, 0] + (width - side) / 2
    out[:, 1] = boxes[:, 1] + (height - side) / 2
    out[:, 2:4] = out[:, :2] + side[:, None]
    return out


def regress(boxes: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Boxes moved by the networks' offsets (fractions of the inclusive width and height)."""
    size = np.stack([boxes[:, 2] - boxes[:, 0] + 1, boxes[:, 3] - boxes[:, 1] + 1] * 2, axis=1)
    return boxes + offsets * size


def crop_patches(rgb: np.ndarray, boxes: np.ndarray, size: int) -> np.ndarray:
    """(N, size, size, 3) uint8: each box (inclusive integer corners) resized to size x size, the part
    outside the frame left black."""
    height, width = rgb.shape[:2]
    patches = np.zeros((len(boxes), size, size, 3), np.uint8)
    for patch, (x1, y1, x2, y2) in zip(patches, np.trunc(boxes).astype(np.int64)):
        box_w, box_h = x2 - x1 + 1, y2 - y1 + 1
        ix1, iy1, ix2, iy2 = max(x1, 0), max(y1, 0), min(x2 + 1, width), min(y2 + 1, height)
        if ix2 <= ix1 or iy2 <= iy1:
            continue
        tx1, ty1 = round((ix1 - x1) * size / box_w), round((iy1 - y1) * size / box_h)
        tx2, ty2 = round((ix2 - x1) * size / box_w), round((iy2 - y1) * size / box_h)
        if tx2 > tx1 and ty2 > ty1:
            patch[ty1:ty2, tx1:tx2] = cv2.resize(rgb[iy1:iy2, ix1:ix2], (tx2 - tx1, ty2 - ty1), interpolation=cv2.INTER_AREA)
    return patches


class MtcnnDetector:
    """MTCNN on one frame at a time; faces come with KEYPOINT_NAMES keypoints.

    `min_face`: the smallest face side searched for, in pixels of the frame (after the `max_side`
    shrink); the cost grows as 1 / min_face^2. `thresholds`: P-, R- and O-Net's minimum scores.
    """

    name = "mtcnn"

    def __init__(
        self,
        *,
        margin: float = 0.16,  # measured: the box crop on examples/astronaut.jpg then matches blazeface's
        min_face: int = 24,
        # The paper's P-Net 0.6 and O-Net 0.7 let through face parts (an eye and a nose) as faces and
        # more candidates; 0.7 and 0.8 lost no face of bench_detectors.py (docs/small_faces.md).
        thresholds: tuple[float, float, float] = (0.7, 0.7, 0.8),
        factor: float = 0.6,  # pyramid step; the paper's 0.709 costs more for no recall measured here (docs/small_faces.md)
        max_side: int = 2048,
        known_iou: float = 0.3,  # inference.detectors.factory.SAME_FACE_IOU: a candidate this close to a known face is that face
        weights: Path | str | None = None,
    ):
        if min_face < PNET_CELL:
            raise ValueError(f"min_face must be at least {PNET_CELL} pixels (P-Net's window), got {min_face}")
        if not 0.1 <= factor < 1:
            raise ValueError(f"factor must be in [0.1, 1), got {factor}")
        self.margin = margin
        self.min_face = min_face
        self.thresholds = thresholds
        self.factor = factor
        self.max_side = max_side
        self.known_iou = known_iou
        self._nets = load_mtcnn(Path(weights) if weights is not None else bundled_weights_path())

    def detect(self, rgb: np.ndarray, known: list[Detection] = ()) -> list[Detection]:
        """Faces in an HxWx3 uint8 RGB frame, most confident first. `known`: faces another detector
        found already; candidates overlapping one (IoU >= `known_iou`) are dropped after each stage,
        which spares R- and O-Net most of their work on a photo of one large face."""
        check_frame(rgb)
        height, width = rgb.shape[:2]
        shrink = min(1.0, self.max_side / max(height, width, 1))
        image = rgb if shrink == 1.0 else cv2.resize(
            rgb, (max(1, round(width * shrink)), max(1, round(height * shrink))), interpolation=cv2.INTER_AREA
        )  # fmt: skip
        if min(image.shape[:2]) < PNET_CELL:
            return []
        known_boxes = inclusive_boxes(known) * shrink
        with torch.inference_mode():
            boxes = _unknown(self._propose(image), known_boxes, self.known_iou)
            boxes = _unknown(self._refine(image, boxes), known_boxes, self.known_iou)
            boxes, points = self._output(image, boxes)
        boxes[:, :4] /= shrink  # back to the frame's pixels
        return _to_detections(boxes, points / shrink, width, height)

    def detect_batch(self, frames: list[np.ndarray]) -> list[list[Detection]]:
        return [self.detect(rgb) for rgb in frames]  # the pyramid differs per frame size

    def verify(self, rgb: np.ndarray, detections: list[Detection]) -> list[Detection]:
        """O-Net alone on the given faces' boxes (e.g. last frame's): the faces still there, with
        their boxes and keypoints updated. A tracker's cheap re-detection, not a search."""
        check_frame(rgb)
        if not detections or min(rgb.shape[:2]) == 0:
            return []
        height, width = rgb.shape[:2]
        boxes = np.concatenate([square(inclusive_boxes(detections)), [[d.score] for d in detections]], axis=1)
        with torch.inference_mode():
            boxes, points = self._output(rgb, boxes)
        return _to_detections(boxes, points, width, height)

    def _scales(self, height: int, width: int) -> list[float]:
        scale, shortest, scales = PNET_CELL / self.min_face, min(height, width), []
        while shortest * scale >= PNET_CELL:
            scales.append(scale)
            scale *= self.factor
        return scales

    def _propose(self, image: np.ndarray) -> np.ndarray:
        """Stage 1: (N, 5) candidate boxes, squared: x1, y1, x2, y2, score.

        P-Net runs once on the small pyramid levels packed side by side (`pnet_groups`, `pack_levels`):
        on one thread a call on a small level costs mostly PyTorch's per-operator overhead and its
        slower kernel for small inputs (docs/small_faces.md). Every cell of a level gives what it gives
        on that level alone.
        """
        height, width = image.shape[:2]
        scales, levels, level = self._scales(height, width), [], image
        for scale in scales:
            # Each level shrunk from the one before: the same area average at a fraction of the cost.
            level = cv2.resize(level, (math.ceil(width * scale), math.ceil(height * scale)), interpolation=cv2.INTER_AREA)
            levels.append(level)
        if not levels:
            return np.zeros((0, 5))
        found = []
        for group in pnet_groups(levels):
            packed = [levels[i] for i in group]
            corners, canvas = pack_levels(packed)
            offsets, probs = self._nets.pnet(to_tensor(canvas), pooling_edges(corners, packed))
            offsets, probs = offsets[0].numpy(), probs[0].numpy()  # (4, H', W'), (H', W')
            for i, (x, y) in zip(group, corners):
                rows = slice(y // PNET_STRIDE, y // PNET_STRIDE + pnet_cells(levels[i].shape[0]))
                cols = slice(x // PNET_STRIDE, x // PNET_STRIDE + pnet_cells(levels[i].shape[1]))
                candidates = self._level_candidates(probs[rows, cols], offsets[:, rows, cols], scales[i])
                if len(candidates):
                    found.append(candidates)
        if not found:
            return np.zeros((0, 5))
        candidates = np.concatenate(found)
        candidates = candidates[nms(candidates[:, :4], candidates[:, 4], 0.7)]
        boxes = square(regress(candidates[:, :4], candidates[:, 5:9]))
        return np.concatenate([boxes, candidates[:, 4:5]], axis=1)

    def _level_candidates(self, probs: np.ndarray, offsets: np.ndarray, scale: float) -> np.ndarray:
        """(N, 9) one level's candidates in image pixels: x1, y1, x2, y2, score, then 4 offsets."""
        ys, xs = np.nonzero(probs >= self.thresholds[0])
        cells = np.stack([xs, ys], axis=1).astype(np.float64)
        corners = np.concatenate([np.floor((PNET_STRIDE * cells + 1) / scale),
                                  np.floor((PNET_STRIDE * cells + PNET_CELL) / scale)], axis=1)  # fmt: skip
        candidates = np.concatenate([corners, probs[ys, xs, None], offsets[:, ys, xs].T], axis=1)
        return candidates[nms(candidates[:, :4], candidates[:, 4], 0.5)]

    def _refine(self, image: np.ndarray, boxes: np.ndarray) -> np.ndarray:
        """Stage 2: (M, 5) boxes R-Net keeps, regressed and squared."""
        if not len(boxes):
            return boxes
        offsets, scores = self._nets.rnet(to_tensor(crop_patches(image, boxes[:, :4], RNET_SIZE)))
        keep = scores.numpy() > self.thresholds[1]
        boxes, scores, offsets = boxes[keep, :4], scores.numpy()[keep], offsets.numpy()[keep]
        chosen = nms(boxes, scores, 0.7)
        boxes = square(regress(boxes[chosen], offsets[chosen]))
        return np.concatenate([boxes, scores[chosen, None]], axis=1)

    def _output(self, image: np.ndarray, boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Stage 3: (K, 5) final boxes with scores and (K, 5, 2) landmarks, frame pixels."""
        if not len(boxes):
            return np.zeros((0, 5)), np.zeros((0, 5, 2))
        offsets, marks, scores = self._nets.onet(to_tensor(crop_patches(image, boxes[:, :4], ONET_SIZE)))
        keep = scores.numpy() > self.thresholds[2]
        boxes, scores, offsets, marks = boxes[keep, :4], scores.numpy()[keep], offsets.numpy()[keep], marks.numpy()[keep]
        size = np.stack([boxes[:, 2] - boxes[:, 0] + 1, boxes[:, 3] - boxes[:, 1] + 1], axis=1)  # (K, 2)
        points = marks.reshape(-1, 2, 5).transpose(0, 2, 1) * size[:, None] + boxes[:, None, :2] - 1  # (K, 5, 2)
        boxes = regress(boxes, offsets)
        chosen = nms(boxes, scores, 0.7, by_min_area=True)
        return np.concatenate([boxes[chosen], scores[chosen, None]], axis=1), points[chosen]


def pnet_cells(side: int) -> int:
    """P-Net's output cells along a side of `side` pixels: three valid 3x3 convolutions around a
    2x2 ceil-mode pooling."""
    return max(0, math.ceil((side - 2) / 2) - 4)


# Levels of fewer pixels share one P-Net call; larger ones run alone, where a wide canvas ran slower
# than its levels one by one (measured on 1920x1080 frames: docs/small_faces.md).
PACK_BELOW_PIXELS = 40_000


def pnet_groups(levels: list[np.ndarray]) -> list[list[int]]:
    """The levels' indices in P-Net calls: each level of PACK_BELOW_PIXELS or more alone, the rest together."""
    large = [i for i, level in enumerate(levels) if level.shape[0] * level.shape[1] >= PACK_BELOW_PIXELS]
    small = [i for i in range(len(levels)) if i not in large]
    return [[i] for i in large] + ([small] if small else [])


def pack_levels(levels: list[np.ndarray]) -> tuple[list[tuple[int, int]], np.ndarray]:
    """The pyramid's levels (largest first) on one uint8 canvas, and each one's top-left corner (x, y).

    Corners are even, so P-Net's stride-2 cells line up with each level's own, and a level of odd
    width (height) has one free column (row) after it, where its ceil-mode pooling pads (`pooling_edges`). Levels go
    where the first free rectangle fits (guillotine packing): the first two side by side, the smaller
    ones spiralling into the corner the second leaves, so the canvas is barely larger than the levels.
    """
    rooms = [(_even(level.shape[0]), _even(level.shape[1])) for level in levels]
    width = sum(room_width for _, room_width in rooms[:2])
    free, corners = [(0, 0, width, math.inf)], []
    for room_height, room_width in rooms:
        x, y, free_width, free_height = min(
            (r for r in free if r[2] >= room_width and r[3] >= room_height), key=lambda r: (r[1], r[0])
        )
        free.remove((x, y, free_width, free_height))
        free += [(x + room_width, y, free_width - room_width, room_height),
                 (x, y + room_height, free_width, free_height - room_height)]  # fmt: skip
        corners.append((x, y))
    height = max(y + room_height for (_, y), (room_height, _) in zip(corners, rooms))
    canvas = np.zeros((height, width, 3), np.uint8)
    for (x, y), level in zip(corners, levels):
        canvas[y : y + level.shape[0], x : x + level.shape[1]] = level
    return corners, canvas


def pooling_edges(corners: list[tuple[int, int]], levels: list[np.ndarray]) -> list[tuple]:
    """PNet's `edges` for `pack_levels`' canvas: the column (row) of conv1's output after a level of odd
    width (height), which P-Net's pooling reads there where, on the level alone, it padded with -inf;
    so every cell of a level gives on the canvas what it gives alone."""
    edges = []
    for (x, y), level in zip(corners, levels):
        height, width = level.shape[:2]
        if width % 2:
            edges.append((..., slice(y, y + height - 1), x + width - 2))
        if height % 2:
            edges.append((..., y + height - 2, slice(x, x + width - 1)))
    return edges


def _even(n: int) -> int:
    return n + n % 2


def _unknown(boxes: np.ndarray, known: np.ndarray, threshold: float) -> np.ndarray:
    """The candidate rows of `boxes` (x1, y1, x2, y2, ...) whose IoU with every `known` box is below `threshold`."""
    if not len(boxes) or not len(known):
        return boxes
    inter = intersections(boxes, known)  # (N, K)
    iou = inter / (areas(boxes)[:, None] + areas(known)[None, :] - inter)
    return boxes[(iou < threshold).all(axis=1)]


def _to_detections(boxes: np.ndarray, points: np.ndarray, width: int, height: int) -> list[Detection]:
    """Inclusive-corner boxes and 5 landmarks -> Detections (exclusive corners, clipped), best first."""
    detections = []
    for (x1, y1, x2, y2, score), marks in zip(boxes, points):
        box = clip_box(x1, y1, x2 + 1, y2 + 1, width, height)
        if box is None:
            continue
        right_eye, left_eye, nose = (tuple(map(float, p)) for p in marks[:3])  # image left = the person's right
        mouth = tuple(map(float, marks[3:5].mean(axis=0)))
        detections.append(Detection(box, float(score), (right_eye, left_eye, nose, mouth)))
    return sorted(detections, key=lambda d: -d.score)
