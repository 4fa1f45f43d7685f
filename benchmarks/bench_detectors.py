"""Face detector comparison: detection rate and milliseconds per 640x480 frame.

    python benchmarks/bench_detectors.py [--data /work/shared/data/utkface] [--n 200] [--detectors haar,mediapipe]
        [--lfw /work/shared/data/lfw_dev]

Frames: `--n` UTKFace crops (seeded sample; 200x200, face filling most of the crop) pasted at a
random position into a 640x480 mid-grey canvas, so every frame holds exactly one face of known
location; plus examples/astronaut.jpg. A frame counts as detected when a box's centre lies inside
the pasted crop; every other box is a false positive. Times are the median over all frames,
single process, on whatever else the machine is running (report the load with the numbers);
`cpu ms` is the median CPU time the process spent per frame (all its threads), which a busy
machine inflates far less than the wall-clock times.
The mediapipe detector is measured only where its optional package is installed.

With `--lfw DIR`, each detector also runs on every photo of that folder (LFW: one centred face per
photo, other people sometimes behind): a photo counts as found when a box contains the image
centre; the milliseconds are the median per photo (250x250). `batch ms` is a detector's
`detect_batch` over 16 of the 640x480 frames at once, per frame. `crop ms` is the median time of
what the predictor does next with a frame's detections: the default aligned crop (data.align).
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from agegender.data.align import DEFAULT_FACE_CROP
from agegender.data.images import list_image_files, load_rgb
from agegender.inference.detect import DetectorUnavailableError, create_detector, crop_faces

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
    batch = [frame for frame, _ in frames[:16]]
    detector.detect_batch(batch)  # warm-up
    start = time.perf_counter()
    detector.detect_batch(batch)
    batch_ms = 1000 * (time.perf_counter() - start) / len(batch)
    detector.detect(frames[0][0])  # warm-up (model loading, first-call allocations)
    hits = false_positives = 0
    times, cpu_times, align_times = [], [], []
    for frame, (x1, y1, x2, y2) in frames:
        start, cpu_start = time.perf_counter(), time.process_time()
        detections = detector.detect(frame)
        times.append(time.perf_counter() - start)
        cpu_times.append(time.process_time() - cpu_start)
        start = time.perf_counter()
        crop_faces(frame, detections, detector.margin, DEFAULT_FACE_CROP)  # what the predictor does next
        align_times.append(time.perf_counter() - start)
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
        "cpu_ms_median": 1000 * statistics.median(cpu_times),
        "batch_ms": batch_ms,
        "align_ms_median": 1000 * statistics.median(align_times),
        "detector_object": detector,
        "astronaut_faces": len(astronaut),
        "astronaut_box": astronaut[0].box if astronaut else None,
    }


def measure_lfw(detector, photos: list[np.ndarray]) -> tuple[float, float]:
    """(share of photos with a box over the image centre, median ms per photo)."""
    found, times = 0, []
    for rgb in photos:
        start = time.perf_counter()
        detections = detector.detect(rgb)
        times.append(time.perf_counter() - start)
        cx, cy = rgb.shape[1] / 2, rgb.shape[0] / 2
        found += any(d.box.x1 <= cx <= d.box.x2 and d.box.y1 <= cy <= d.box.y2 for d in detections)
    return found / len(photos), 1000 * statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data/utkface"))
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--detectors", default="blazeface,haar,haar-32,haar-24,mediapipe,mediapipe-full")
    parser.add_argument("--lfw", type=Path, help="also measure the found rate on this folder of LFW photos")
    args = parser.parse_args()
    torch.set_num_threads(1)  # blazeface: one thread, like the others' single-image calls
    variants = {
        "blazeface": ("blazeface", {}),
        "haar": ("haar", {}),
        "haar-32": ("haar", {"min_face": 32}),  # searched at 3/4 size
        "haar-24": ("haar", {"min_face": 24}),  # searched at full size
        "mediapipe": ("mediapipe", {}),
        "mediapipe-full": ("mediapipe", {"model_selection": 1}),
    }
    frames = list(make_frames(args.data, args.n))
    photos = [load_rgb(path) for path in list_image_files(args.lfw)] if args.lfw else []
    print(f"{len(frames)} frames {CANVAS[1]}x{CANVAS[0]}, load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs")
    lfw_header = f" {'LFW found':>10s} {'LFW ms':>7s}" if photos else ""
    columns = f"{'rate':>6s} {'FP/frame':>9s} {'ms med':>7s} {'ms p90':>7s} {'cpu ms':>7s} {'batch ms':>9s} {'crop ms':>8s}"
    print(f"{'detector':42s} {columns}{lfw_header}  astronaut")
    for key in args.detectors.split(","):
        name, options = variants[key]
        try:
            r = measure(name, options, frames)
        except DetectorUnavailableError as error:
            print(f"{key:42s} not installed ({error})")
            continue
        lfw = ""
        if photos:
            rate, ms = measure_lfw(r["detector_object"], photos)
            lfw = f" {rate:10.2%} {ms:7.1f}"
        print(f"{r['detector']:42s} {r['rate']:6.1%} {r['fp_per_frame']:9.3f} {r['ms_median']:7.1f} {r['ms_p90']:7.1f}"
              f" {r['cpu_ms_median']:7.1f} {r['batch_ms']:9.1f} {r['align_ms_median']:8.2f}{lfw}  {r['astronaut_faces']} face(s) {r['astronaut_box']}")  # fmt: skip
    print(f"load average at the end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
