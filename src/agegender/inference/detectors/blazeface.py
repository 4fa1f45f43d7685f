"""MediaPipe BlazeFace (short-range model) in PyTorch: network, SSD anchors, decoding and weighted NMS.

A port of the face detector MediaPipe 0.10.21 runs as `FaceDetection(model_selection=0)`, so that
the default install detects faces without mediapipe or a TFLite runtime. The weights were
converted once from the wheel's ``face_detection_short_range.tflite`` by
`tools/convert_blazeface.py` (Apache-2.0, see ``assets/blazeface_NOTICE.txt``). Every step
follows MediaPipe's face_detection graph:

1. ImageToTensorCalculator: the frame is letterboxed (centred, zero border) into 128x128 by one
   bilinear warp of the uint8 image, then scaled to [-1, 1].
2. The network: 896 anchors (16x16 cells x 2 at stride 8, 8x8 x 6 at stride 16), 16 numbers each:
   box centre offset, box size, then 6 keypoints (x, y), in tensor pixels relative to the anchor.
3. TensorsToDetectionsCalculator: logits clipped to +-100, sigmoid, kept from `min_confidence`.
4. NonMaxSuppressionCalculator: weighted NMS at IoU 0.3 (overlapping boxes are averaged by score,
   the top score is kept).
5. DetectionProjectionCalculator: back through the letterbox into frame pixels.

The full-range model is not ported: measured with MediaPipe itself on lfw_dev it found fewer
faces at several times the cost (docs/blazeface.md has the numbers).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from agegender.data.align import KEYPOINT_NAMES
from agegender.inference.detectors.base import Detection, DetectorWeightsError, check_frame, clip_box

INPUT_SIZE = 128  # the tensor side the short-range model takes
STRIDE_LAYERS = ((8, 1), (16, 3))  # (stride, SSD layers sharing it): 2 anchors per layer and cell
NUM_COORDS = 16  # per anchor: x, y, w, h, then 6 keypoints (x, y)
SCORE_CLIP = 100.0  # TensorsToDetectionsCalculator.score_clipping_thresh
NMS_IOU = 0.3  # NonMaxSuppressionCalculator.min_suppression_threshold
# (in, out, stride) of the 16 BlazeBlocks; the stride-8 heads read block 11's output (88 channels).
BLOCKS = (
    (24, 24, 1), (24, 28, 1), (28, 32, 2), (32, 36, 1), (36, 42, 1), (42, 48, 2), (48, 56, 1), (56, 64, 1),
    (64, 72, 1), (72, 80, 1), (80, 88, 1), (88, 96, 2), (96, 96, 1), (96, 96, 1), (96, 96, 1), (96, 96, 1),
)  # fmt: skip
STRIDE8_BLOCKS = 11


def bundled_weights_path() -> Path:
    return Path(str(resources.files("agegender") / "assets" / "blazeface_short_range.safetensors"))


class BlazeBlock(nn.Module):
    """Depthwise 3x3 + pointwise 1x1, added to the input (max-pooled when strided, zero channels
    appended when widening), then ReLU. TFLite's SAME padding: (1, 1) at stride 1, (0, 1) at stride 2.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int):
        super().__init__()
        self.stride = stride
        self.depthwise = nn.Conv2d(in_channels, in_channels, 3, stride, padding=1 if stride == 1 else 0,
                                   groups=in_channels)  # fmt: skip
        self.pointwise = nn.Conv2d(in_channels, out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C_in, H, W) -> (B, C_out, H/s, W/s)
        shortcut = x
        if self.stride == 2:
            x = F.pad(x, (0, 1, 0, 1))
            shortcut = F.max_pool2d(shortcut, 2)
        out = self.pointwise(self.depthwise(x))
        # The shortcut's appended channels are zeros: adding into the first C_in channels is the same
        # sum without building the padded copy.
        out[:, : shortcut.shape[1]] += shortcut
        return out.relu_()


class BlazeFaceNet(nn.Module):
    """(B, 3, 128, 128) in [-1, 1] -> (B, 896) score logits and (B, 896, 16) regressions.

    Parameters are registered in the order the TFLite graph runs its convolutions, which is the
    order the converter fills them in.
    """

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 24, 5, stride=2)  # SAME padding at stride 2 for 5x5: (1, 2)
        self.blocks = nn.ModuleList(BlazeBlock(*spec) for spec in BLOCKS)
        self.classifier_8 = nn.Conv2d(88, 2, 1)  # 2 anchors per 16x16 cell
        self.classifier_16 = nn.Conv2d(96, 6, 1)  # 6 anchors per 8x8 cell
        self.regressor_8 = nn.Conv2d(88, 2 * NUM_COORDS, 1)
        self.regressor_16 = nn.Conv2d(96, 6 * NUM_COORDS, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.stem(F.pad(x, (1, 2, 1, 2))).relu_()  # (B, 24, 64, 64)
        for i, block in enumerate(self.blocks):  # (slicing a ModuleList would build a new one per call)
            x = block(x)
            if i == STRIDE8_BLOCKS - 1:
                fine = x  # (B, 88, 16, 16)
        # x: (B, 96, 8, 8)
        scores = torch.cat([_per_anchor(self.classifier_8(fine), 1), _per_anchor(self.classifier_16(x), 1)], 1)
        boxes = torch.cat(
            [_per_anchor(self.regressor_8(fine), NUM_COORDS), _per_anchor(self.regressor_16(x), NUM_COORDS)], 1
        )
        return scores.squeeze(-1), boxes  # (B, 896), (B, 896, 16)


def _per_anchor(head: torch.Tensor, values: int) -> torch.Tensor:
    """(B, A*values, H, W) -> (B, H*W*A, values): TFLite's NHWC reshape, anchors fastest."""
    return head.permute(0, 2, 3, 1).reshape(head.shape[0], -1, values)


@lru_cache(maxsize=1)
def ssd_anchor_centres() -> np.ndarray:
    """(896, 2) anchor centres (x, y) in [0, 1], SsdAnchorsCalculator's order: cell row, column, anchor.

    With fixed_anchor_size every anchor is 1x1, so only the centres matter.
    """
    centres = []
    for stride, layers in STRIDE_LAYERS:
        cells = INPUT_SIZE // stride
        y, x = np.meshgrid((np.arange(cells) + 0.5) / cells, (np.arange(cells) + 0.5) / cells, indexing="ij")
        grid = np.stack([x.ravel(), y.ravel()], 1)  # (cells^2, 2)
        centres.append(np.repeat(grid, 2 * layers, axis=0))
    return np.concatenate(centres).astype(np.float32)


@dataclass(frozen=True)
class Letterbox:
    """Where the 128x128 tensor lies in the frame: frame pixel = origin + tensor fraction * side."""

    x0: float
    y0: float
    side: float  # the longer frame side: the square the tensor covers

    @classmethod
    def of(cls, width: int, height: int) -> "Letterbox":
        side = float(max(width, height))
        return cls((width - side) / 2, (height - side) / 2, side)

    def warp(self, rgb: np.ndarray) -> np.ndarray:
        """HxWx3 uint8 -> (128, 128, 3) uint8, as MediaPipe's OpenCV converter samples it."""
        import cv2

        k = INPUT_SIZE / self.side
        matrix = np.array([[k, 0, -self.x0 * k], [0, k, -self.y0 * k], [0, 0, 1]], np.float64)
        # warpPerspective, not warpAffine: the two round sub-pixel positions differently, and
        # MediaPipe's converter uses this one (measured: exact scores on LFW only with it).
        return cv2.warpPerspective(rgb, matrix, (INPUT_SIZE, INPUT_SIZE), flags=cv2.INTER_LINEAR,
                                   borderMode=cv2.BORDER_CONSTANT, borderValue=0)  # fmt: skip


def to_input_tensor(tensors: list[np.ndarray]) -> torch.Tensor:
    """N (128, 128, 3) uint8 -> (N, 3, 128, 128) float in [-1, 1], channels_last in memory."""
    batch = torch.from_numpy(np.stack(tensors)).permute(0, 3, 1, 2).float()  # the permute keeps NHWC strides
    return batch * (2 / 255) - 1


def decode(scores: np.ndarray, raw: np.ndarray, min_score: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One image's (896,) scores and (896, 16) regressions -> kept scores (K,), boxes (K, 4) as
    x1, y1, x2, y2 and keypoints (K, 6, 2), all in tensor fractions [0, 1].
    """
    keep = np.flatnonzero(scores >= min_score)
    centres = ssd_anchor_centres()[keep]  # (K, 2)
    values = raw[keep] / INPUT_SIZE  # (K, 16)
    box_centre, box_size = values[:, 0:2] + centres, values[:, 2:4]
    boxes = np.concatenate([box_centre - box_size / 2, box_centre + box_size / 2], 1)
    keypoints = values[:, 4:].reshape(-1, 6, 2) + centres[:, None, :]
    valid = (box_size > 0).all(1)
    return scores[keep][valid], boxes[valid], keypoints[valid]


def _iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """IoU of one (4,) box with (K, 4) boxes, x1, y1, x2, y2."""
    top_left, bottom_right = np.maximum(box[:2], boxes[:, :2]), np.minimum(box[2:], boxes[:, 2:])
    intersection = np.prod(np.clip(bottom_right - top_left, 0, None), 1)
    areas = np.prod(boxes[:, 2:] - boxes[:, :2], 1)
    union = np.prod(box[2:] - box[:2]) + areas - intersection
    return np.where(union > 0, intersection / np.where(union > 0, union, 1), 0.0)


def weighted_nms(
    scores: np.ndarray, boxes: np.ndarray, keypoints: np.ndarray
) -> list[tuple[float, np.ndarray, np.ndarray]]:
    """MediaPipe's WEIGHTED non-max suppression: the best remaining box takes every box overlapping
    it by IoU > 0.3 (itself included) and becomes their score-weighted average, keeping its own score.
    """
    order = np.argsort(-scores, kind="stable")
    faces = []
    while order.size:
        overlapping = _iou(boxes[order[0]], boxes[order]) > NMS_IOU
        group = order[overlapping]
        weights = scores[group] / scores[group].sum()
        faces.append((
            float(scores[order[0]]),
            (boxes[group] * weights[:, None]).sum(0),
            (keypoints[group] * weights[:, None, None]).sum(0),
        ))  # fmt: skip
        order = order[~overlapping]
    return faces


class BlazeFaceDetector:
    """MediaPipe's short-range BlazeFace in PyTorch with the bundled weights; one forward pass per batch.

    Faces come with KEYPOINT_NAMES keypoints (the model's first four of six; the ear points are dropped).
    """

    name = "blazeface"

    def __init__(self, *, margin: float = 0.28, min_confidence: float = 0.5, weights: Path | str | None = None):
        # margin: MediaPipeDetector's, which was measured on examples/astronaut.jpg; same model, same boxes.
        self.margin = margin
        self.min_confidence = min_confidence
        self.weights = Path(weights) if weights is not None else bundled_weights_path()
        self._net = load_blazeface(self.weights)

    def detect(self, rgb: np.ndarray) -> list[Detection]:
        return self.detect_batch([rgb])[0]

    def detect_batch(self, frames: list[np.ndarray]) -> list[list[Detection]]:
        for rgb in frames:
            check_frame(rgb)
        usable = [i for i, rgb in enumerate(frames) if rgb.shape[0] > 0 and rgb.shape[1] > 0]
        if not usable:
            return [[] for _ in frames]
        letterboxes = [Letterbox.of(frames[i].shape[1], frames[i].shape[0]) for i in usable]
        batch = to_input_tensor([box.warp(frames[i]) for box, i in zip(letterboxes, usable)])
        with torch.inference_mode():
            logits, raw = self._net(batch)  # (N, 896), (N, 896, 16)
            scores = torch.sigmoid(logits.clamp(-SCORE_CLIP, SCORE_CLIP))
        results: list[list[Detection]] = [[] for _ in frames]
        for n, (i, letterbox) in enumerate(zip(usable, letterboxes)):
            found = decode(scores[n].numpy(), raw[n].numpy(), self.min_confidence)
            results[i] = _to_detections(weighted_nms(*found), letterbox, frames[i].shape)
        return results


def _to_detections(faces, letterbox: Letterbox, shape: tuple[int, ...]) -> list[Detection]:
    """Tensor-fraction faces -> frame-pixel Detections, boxes clipped to the frame, best first."""
    height, width = shape[:2]
    detections = []
    for score, box, keypoints in faces:
        x1, y1, x2, y2 = (letterbox.side * box + [letterbox.x0, letterbox.y0] * 2).tolist()
        clipped = clip_box(x1, y1, x2, y2, width, height)
        if clipped is not None:
            points = letterbox.side * keypoints[: len(KEYPOINT_NAMES)] + [letterbox.x0, letterbox.y0]
            detections.append(Detection(clipped, score, tuple((float(x), float(y)) for x, y in points)))
    return sorted(detections, key=lambda d: -d.score)


def load_blazeface(path: Path) -> BlazeFaceNet:
    """The network with the converted weights at `path`; one DetectorWeightsError line if unusable."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    net = BlazeFaceNet()
    try:
        state = load_file(path)
        net.load_state_dict({k: v.float() for k, v in state.items()})
    except FileNotFoundError:
        hint = " (it ships with agegender: reinstall the package)" if path == bundled_weights_path() else ""
        raise DetectorWeightsError(f"{path}: BlazeFace weights file not found{hint}") from None
    except (SafetensorError, OSError, RuntimeError, ValueError) as error:
        reason = str(error).splitlines()[0]
        raise DetectorWeightsError(f"{path}: not usable BlazeFace weights ({reason})") from None
    # channels_last: PyTorch's CPU depthwise convolutions are several times faster in NHWC (measured at 128x128).
    return net.eval().to(memory_format=torch.channels_last)
