"""MTCNN as it is against its version at an earlier commit: the same faces and boxes, and the time.

    python benchmarks/compare_mtcnn_versions.py --against 9663b4a --photos runs/lfw_select

One thread; each version on the same decoded images, in turns, the best of `--repeats` runs. Photos
are timed twice: with BlazeFace's faces known (as `auto` calls MTCNN) and without; then grey frames
of 640x480, 1280x720 and 1920x1080 with four 64 px faces each (the photos' chips pasted in).
The earlier version is read with `git show`, so this runs in a git checkout only.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
import types
from pathlib import Path

import cv2
import numpy as np
import torch

from agegender.data.images import load_rgb
from agegender.data.readers import read_folder
from agegender.inference.detectors import mtcnn
from agegender.inference.detectors.blazeface import BlazeFaceDetector

MODULE = "src/agegender/inference/detectors/mtcnn.py"
FRAME_SIZES = ((640, 480), (1280, 720), (1920, 1080))


def module_at(commit: str) -> types.ModuleType:
    """mtcnn.py as it was at `commit`, loaded as a module of its own."""
    root = Path(__file__).resolve().parents[1]
    source = subprocess.run(["git", "show", f"{commit}:{MODULE}"], cwd=root, check=True, capture_output=True, text=True).stdout
    module = types.ModuleType(f"mtcnn_at_{commit}")
    module.__file__ = str(root / MODULE)
    sys.modules[module.__name__] = module  # dataclasses look their module up by name
    exec(compile(source, module.__file__, "exec"), module.__dict__)
    return module


def frames_with_faces(photos: list[np.ndarray], size: tuple[int, int], count: int = 6) -> list[np.ndarray]:
    width, height = size
    frames = []
    for k in range(count):
        frame = np.full((height, width, 3), 128, np.uint8)
        for j in range(4):
            chip = cv2.resize(photos[(4 * k + j) % len(photos)][60:190, 60:190], (64, 64), interpolation=cv2.INTER_AREA)
            frame[100 + 70 * j : 164 + 70 * j, 100 + 120 * j : 164 + 120 * j] = chip
        frames.append(frame)
    return frames


def boxes(detections) -> np.ndarray:
    return np.array([[d.box.x1, d.box.y1, d.box.x2, d.box.y2] for d in detections]).reshape(-1, 4)


def compare(name: str, detectors: dict, images: list[np.ndarray], known: list, repeats: int) -> None:
    times, found = {}, {}
    for _ in range(repeats):
        for version, detector in detectors.items():
            start = time.perf_counter()
            found[version] = [detector.detect(image, known=faces) for image, faces in zip(images, known)]
            times[version] = min(times.get(version, np.inf), (time.perf_counter() - start) / len(images))
    (old, new) = found.values()
    counts_differ = sum(len(a) != len(b) for a, b in zip(old, new))
    shifts = [np.abs(boxes(a) - boxes(b)).max(initial=0) for a, b in zip(old, new) if len(a) == len(b)]
    (old_ms, new_ms) = (1000 * t for t in times.values())
    print(f"{name:34s} {old_ms:7.2f} -> {new_ms:6.2f} ms per image   faces {sum(map(len, old))} / {sum(map(len, new))}, "
          f"images whose count differs {counts_differ}, largest box shift {max(shifts, default=0):.3f} px")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--against", required=True, help="the earlier commit")
    parser.add_argument("--photos", type=Path, required=True, help="a labelled folder of photos (e.g. runs/lfw_select)")
    parser.add_argument("--limit", type=int, default=600)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--pack-below", type=float, help="now's mtcnn.PACK_BELOW_PIXELS, for trying others")
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.pack_below is not None:
        mtcnn.PACK_BELOW_PIXELS = args.pack_below
    photos = [load_rgb(sample.path) for sample in read_folder(args.photos).samples[: args.limit]]
    blazeface = BlazeFaceDetector()
    known = [faces for begin in range(0, len(photos), 32) for faces in blazeface.detect_batch(photos[begin : begin + 32])]
    detectors = {args.against: module_at(args.against).MtcnnDetector(), "now": mtcnn.MtcnnDetector()}
    print(f"MTCNN at {args.against} -> now, one thread, best of {args.repeats}")
    compare(f"{len(photos)} photos, BlazeFace's known", detectors, photos, known, args.repeats)
    compare(f"{len(photos)} photos, none known", detectors, photos, [()] * len(photos), args.repeats)
    for size in FRAME_SIZES:
        frames = frames_with_faces(photos, size)
        compare(f"{size[0]}x{size[1]} frames, four 64 px faces", detectors, frames, [()] * len(frames), 2 * args.repeats)


if __name__ == "__main__":
    main()
