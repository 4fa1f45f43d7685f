"""Face detector comparison: detection rate and milliseconds per 640x480 frame.

    python benchmarks/bench_detectors.py [--data /work/shared/data/utkface] [--n 200] [--detectors haar,mediapipe]

Frames: `--n` UTKFace crops (seeded sample; 200x200, face filling most of the crop) pasted at a
random position into a 640x480 mid-grey canvas, so every frame holds exactly one face of known
location; plus examples/astronaut.jpg. A frame counts as detected when a box's centre lies inside
the pasted crop; every other box is a false positive. Times are the median over all frames,
single process, on whatever else the machine is running (report the load with the numbers).
The mediapipe detector is measured only where its optional package is installed.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import time
from pathlib import Path

import numpy as np

from agegender.data.images import list_image_files, load_rgb
from agegender.inference.detect import DetectorUnavailableError, create_detector

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
CANVAS = (480, 640)  # (H, W)


def make_frames(data: Path, n: int, seed: int = 0):
    rng = random.Random(seed)
    files = rng.sample(list_image_files(data), n)
    for path in files:
        face = load_rgb(path)
        canvas = np.full((*CANVAS, 3), 128, np.uint8)
        y = rng.randrange(0, CANVAS[0] - face.shape[0] + 1)
        x = rng.randrange(0, CANVAS[1] - face.shape[1] + 1)
        canvas[y : y + face.shape[0], x : x + face.shape[1]] = face
        yield canvas, (x, y, x + face.shape[1], y + face.shape[0])


def measure(name: str, options: dict, frames) -> dict:
    detector = create_detector(name, **options)
    detector.detect(frames[0][0])  # warm-up (model loading, first-call allocations)
    hits = false_positives = 0
    times = []
    for frame, (x1, y1, x2, y2) in frames:
        start = time.perf_counter()
        detections = detector.detect(frame)
        times.append(time.perf_counter() - start)
        inside = [d for d in detections if x1 <= (d.box.x1 + d.box.x2) / 2 <= x2 and y1 <= (d.box.y1 + d.box.y2) / 2 <= y2]
        hits += bool(inside)
        false_positives += len(detections) - len(inside)
    astronaut = detector.detect(load_rgb(EXAMPLES / "astronaut.jpg"))
    return {
        "detector": name + (f" {options}" if options else ""),
        "rate": hits / len(frames),
        "fp_per_frame": false_positives / len(frames),
        "ms_median": 1000 * statistics.median(times),
        "ms_p90": 1000 * sorted(times)[int(0.9 * len(times))],
        "astronaut_faces": len(astronaut),
        "astronaut_box": astronaut[0].box if astronaut else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data/utkface"))
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--detectors", default="haar,haar-32,haar-24,mediapipe,mediapipe-full")
    args = parser.parse_args()
    variants = {
        "haar": ("haar", {}),
        "haar-32": ("haar", {"min_face": 32}),  # searched at 3/4 size
        "haar-24": ("haar", {"min_face": 24}),  # searched at full size
        "mediapipe": ("mediapipe", {}),
        "mediapipe-full": ("mediapipe", {"model_selection": 1}),
    }
    frames = list(make_frames(args.data, args.n))
    print(f"{len(frames)} frames {CANVAS[1]}x{CANVAS[0]}, load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")
    print(f"{'detector':42s} {'rate':>6s} {'FP/frame':>9s} {'ms med':>7s} {'ms p90':>7s}  astronaut")
    for key in args.detectors.split(","):
        name, options = variants[key]
        try:
            r = measure(name, options, frames)
        except DetectorUnavailableError as error:
            print(f"{key:42s} not installed ({error})")
            continue
        print(f"{r['detector']:42s} {r['rate']:6.1%} {r['fp_per_frame']:9.3f} {r['ms_median']:7.1f} {r['ms_p90']:7.1f}"
              f"  {r['astronaut_faces']} face(s) {r['astronaut_box']}")  # fmt: skip


if __name__ == "__main__":
    main()
