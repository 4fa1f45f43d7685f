"""Age and gender on small faces found in wide frames, against the same faces at full size.

    python benchmarks/bench_small_faces.py [--data $AGEGENDER_DATA/utkface] [--n 500] [--sizes 32,48,96]
        [--model MODEL] [--json docs/results/small_faces.json]

The bundled model (or --model) with its default detector for stills ("auto"), one thread. `--n`
chips of the folder's test split (recomputed from the seed the model file stores, as
`agegender evaluate --split test` does) are each predicted twice over: at full size (the chip
itself as a photo: detect, align, predict) and pasted at each height of `--sizes` at a seeded
place in a 1280x720 mid-grey frame (the detection whose centre falls in the chip is scored). For
each height: the share found, then gender accuracy and age MAE at that height and at full size on
the faces found at both, so the loss from the size alone shows.
"""

from __future__ import annotations

import argparse
import json
import os
import random
from pathlib import Path

import cv2
import numpy as np
import torch

from agegender.data.dataset import make_splits
from agegender.data.images import load_rgb
from agegender.data.readers import read_folder
from agegender.inference.predictor import Predictor

DATA_ROOT = Path(os.environ.get("AGEGENDER_DATA", "../shared/data"))  # the datasets (docs/data.md)

FRAME = (1280, 720)


def in_frame(chip: np.ndarray, side: int, rng: random.Random) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    frame = np.full((FRAME[1], FRAME[0], 3), 128, np.uint8)
    x, y = rng.randrange(FRAME[0] - side), rng.randrange(FRAME[1] - side)
    frame[y : y + side, x : x + side] = cv2.resize(chip, (side, side), interpolation=cv2.INTER_AREA)
    return frame, (x, y, x + side, y + side)


def face_in(prediction, area: tuple[int, int, int, int] | None):
    """The predicted face whose box centre lies in `area` (the largest face when None)."""
    faces = [f for f in prediction.faces if f.box is not None]
    if area is not None:
        x1, y1, x2, y2 = area
        faces = [f for f in faces if x1 <= (f.box.x1 + f.box.x2) / 2 <= x2 and y1 <= (f.box.y1 + f.box.y2) / 2 <= y2]
    return max(faces, key=lambda f: f.box.width * f.box.height, default=None)


def scores(faces, samples) -> dict:
    pairs = [(f, s) for f, s in zip(faces, samples) if f is not None]
    gender = [(f.p_female >= 0.5) == (s.gender == 1) for f, s in pairs if s.gender is not None]
    ages = [abs(f.age - s.age) for f, s in pairs if s.age is not None]
    return {"faces": len(pairs), "gender_accuracy": float(np.mean(gender)) if gender else None,
            "age_mae": float(np.mean(ages)) if ages else None}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DATA_ROOT / "utkface")
    parser.add_argument("--model", type=Path, help="default: the bundled model")
    parser.add_argument("--n", type=int, default=500)
    parser.add_argument("--sizes", default="32,48,96")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    predictor = Predictor.from_checkpoint(args.model)
    test = make_splits(read_folder(args.data), predictor.model.info.config.data).test
    samples = random.Random(0).sample(test, min(args.n, len(test)))
    chips = [load_rgb(s.path) for s in samples]
    full = [face_in(predictor.predict(chip), None) for chip in chips]
    results = {"data": str(args.data), "split": "test", "n": len(samples), "detector": predictor.detector.name,
               "full_size": scores(full, samples), "sizes": {}}  # fmt: skip
    print(f"{len(samples)} test chips of {args.data}, detector {predictor.detector.name}")
    print(f"full size: {results['full_size']}")
    for side in (int(s) for s in args.sizes.split(",")):
        rng = random.Random(side)
        small = []
        for chip in chips:
            frame, area = in_frame(chip, side, rng)
            small.append(face_in(predictor.predict(frame), area))
        both = [f is not None and s is not None for f, s in zip(full, small)]  # found at both sizes
        row = {"found": sum(f is not None for f in small) / len(small),
               "small": scores([s if b else None for s, b in zip(small, both)], samples),
               "same_faces_full_size": scores([f if b else None for f, b in zip(full, both)], samples)}  # fmt: skip
        results["sizes"][str(side)] = row
        print(f"{side:4d} px: found {row['found']:.1%}; small {row['small']}; same faces at full size {row['same_faces_full_size']}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
