"""Where the time of a photo or a chip goes: decode, detect, align and forward, each timed on its own.

    python benchmarks/bench_stages.py [--photos runs/lfw_report] [--crops $AGEGENDER_DATA/utkface] [--n 500]
        [--model CKPT] [--threads 1] [--json docs/results/stages.json]

Photos go through the steps `agegender evaluate --detect` takes (evaluation/photos.py), one stage over
all N images before the next, so each is timed alone: decoding (`load_rgb`), the default detector in
chunks of CHUNK_IMAGES (`detect_batch`), the aligned crop of the largest face, and the model on batches
of the crops with the file's mirror averaging. Chips go through what `agegender evaluate` does: reading
the folder and its split, decoding and cropping N test chips at the model's size (no cache), and the
model. Each stage is printed in ms per image and as a share of the sum, so what a faster model or a
faster detector can still buy is visible. Run it alone, one thread (the load average is saved).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import time
from pathlib import Path

import numpy as np
import torch

from agegender.atomic_write import write_atomically
from agegender.data.dataset import decode_split, make_splits
from agegender.data.images import load_rgb
from agegender.data.readers import read_folder
from agegender.inference.detectors.base import largest_detection
from agegender.inference.predictor import Predictor
from agegender.inference.streams.frames import CHUNK_IMAGES

DATA_ROOT = Path(os.environ.get("AGEGENDER_DATA", "../shared/data"))  # the datasets (docs/data.md)
BATCH = 64


class Stopwatch:
    """Seconds per named stage, in the order they ran."""

    def __init__(self):
        self.seconds: dict[str, float] = {}

    def run(self, stage: str, work):
        start = time.perf_counter()
        result = work()
        self.seconds[stage] = self.seconds.get(stage, 0.0) + time.perf_counter() - start
        return result

    def per_image(self, n: int) -> dict[str, dict[str, float]]:
        total = sum(self.seconds.values())
        return {stage: {"ms_per_image": 1000 * s / n, "share": s / total} for stage, s in self.seconds.items()}


def forward(predictor: Predictor, faces: list[np.ndarray]) -> None:
    for begin in range(0, len(faces), BATCH):
        predictor.model.forward(np.stack(faces[begin : begin + BATCH]))


def photo_stages(predictor: Predictor, folder: Path, n: int) -> dict:
    samples = read_folder(folder).samples[:n]
    watch = Stopwatch()
    images = watch.run("decode", lambda: [load_rgb(s.path) for s in samples])
    found = watch.run("detect", lambda: [
        faces for begin in range(0, len(images), CHUNK_IMAGES)
        for faces in predictor.detector.detect_batch(images[begin : begin + CHUNK_IMAGES])
    ])  # fmt: skip
    crops = watch.run("align", lambda: [
        predictor.model.prepare(predictor.model.crop(image, [largest], predictor.detector)[0].image)  # at the model's size
        for image, faces in zip(images, found) if (largest := largest_detection(faces)) is not None
    ])  # fmt: skip
    watch.run("forward", lambda: forward(predictor, crops))
    return {"images": len(samples), "faces": len(crops), "stages": watch.per_image(len(samples))}


def chip_stages(predictor: Predictor, folder: Path, n: int) -> dict:
    watch = Stopwatch()
    read = watch.run("read folder + split", lambda: read_folder(folder))
    test = watch.run("read folder + split", lambda: make_splits(read, predictor.model.info.config.data).test[:n])
    config = dataclasses.replace(predictor.model.info.config.data, image_size=predictor.model.image_size, cache_dir=None)
    arrays, _ = watch.run("decode + crop", lambda: decode_split(test, config))
    watch.run("forward", lambda: forward(predictor, list(arrays.images)))
    return {"images": len(test), "faces": len(arrays), "stages": watch.per_image(len(test))}


def print_stages(title: str, result: dict) -> None:
    stages = result["stages"]
    total = sum(stage["ms_per_image"] for stage in stages.values())
    cells = ", ".join(f"{name} {s['ms_per_image']:.2f} ms ({100 * s['share']:.0f}%)" for name, s in stages.items())
    print(f"{title}: {result['images']} images, {result['faces']} faces; {cells}; sum {total:.2f} ms ({1000 / total:.0f} images/s)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=Path, default=Path("runs/lfw_report"))
    parser.add_argument("--crops", type=Path, default=DATA_ROOT / "utkface")
    parser.add_argument("--n", type=int, default=500, help="images per set")
    parser.add_argument("--model", type=Path)
    parser.add_argument("--runtime", default="auto")
    parser.add_argument("--detector", default="auto", help="the still-image detector (e.g. mtcnn alone)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    predictor = Predictor.from_checkpoint(args.model, runtime=args.runtime, detector=args.detector)
    results = {"threads": args.threads, "load_average_start": os.getloadavg()[0], "detector": predictor.detector.name,
               "model": str(args.model or "bundled"), "runtime": args.runtime}  # fmt: skip
    results["photos"] = photo_stages(predictor, args.photos, args.n)
    print_stages(f"photos {args.photos}", results["photos"])
    results["chips"] = chip_stages(predictor, args.crops, args.n)
    print_stages(f"chips {args.crops} (test split)", results["chips"])
    results["load_average_end"] = os.getloadavg()[0]
    if args.json:
        write_atomically(args.json, lambda temporary: Path(temporary).write_text(json.dumps(results, indent=2) + "\n"))
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
