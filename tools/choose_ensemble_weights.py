"""Choose an ensemble's per-member weights on data it is not reported on.

    python tools/choose_ensemble_weights.py runs/bundle_equal.safetensors \
        --crops $AGEGENDER_DATA/utkface --split val --photos runs/lfw_select
    python tools/choose_ensemble_weights.py POOL --crops $AGEGENDER_DATA/utkface --crops runs/aaf \
        --children runs/aaf --split val --photos runs/lfw_select --tta    # the every-face criterion

Each member of the ensemble runs once on the same inputs the ensemble would get: the `--split` images of
the crop folder (decoded as `agegender evaluate` does) and the largest face of each photo of `--photos`
(detected and cropped as `agegender evaluate --detect` does). Every weight combination of the grid is then
scored from those outputs: gender weights by the mean of each crop folder's gender accuracy, the children's
(0-12) of each --children folder, and the photos' (no face = wrong); age weights by the crop MAE. With --tta
each member's outputs are averaged with those of the mirrored faces, as a model file with mirror averaging does. It prints each member alone and the best combinations; build the
chosen ensemble with `agegender ensemble ... --gender-weights ... --age-weights ...`.
"""

from __future__ import annotations

import argparse
import itertools
from pathlib import Path

import numpy as np
import torch

from agegender.data.readers import read_folder
from agegender.data.transforms import to_model_input
from agegender.evaluation.evaluate import decode_evaluation_split
from agegender.evaluation.metrics import gender_accuracy
from agegender.evaluation.photos import largest_detection
from agegender.inference.predictor import Predictor

GRID = (0, 1, 2, 4)  # weights tried per member


@torch.no_grad()
def member_outputs(predictor: Predictor, faces: np.ndarray, batch: int = 128, tta: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(P(female) (M, N), age (M, N)) of each member on uint8 (N, S, S, 3) faces at the ensemble's size."""
    ensemble = predictor.model.backend.model  # a TorchBackend's
    p_female, ages = [], []
    for begin in range(0, len(faces), batch):
        x = to_model_input(faces[begin : begin + batch])
        views = [x, x.flip(-1)] if tta else [x]
        outputs = [[member(resize(v)) for member, resize in zip(ensemble.members, ensemble.resizers)] for v in views]
        p_female.append(np.mean([torch.stack([torch.sigmoid(o.gender_logit) for o in view]).numpy() for view in outputs], 0))
        ages.append(np.mean([torch.stack([o.age for o in view]).numpy() for view in outputs], 0))
    return np.concatenate(p_female, axis=1), np.concatenate(ages, axis=1)


def crop_inputs(predictor: Predictor, folder: Path, split: str):
    """The split's decoded faces and their labels, as `agegender evaluate --split` scores them."""
    _, arrays, _ = decode_evaluation_split(predictor, folder, split)
    return arrays.images, arrays.gender, arrays.age


def photo_inputs(predictor: Predictor, folder: Path):
    """Largest-face crops of the photos that have one, their labels, and how many photos had none."""
    from agegender.data.images import load_rgb

    faces, genders, missed = [], [], 0
    for sample in read_folder(folder).samples:
        rgb = load_rgb(sample.path)
        largest = largest_detection(predictor.detector.detect(rgb))
        if largest is None:
            missed += 1
            continue
        faces.append(predictor.model.prepare(predictor.model.crop(rgb, [largest], predictor.detector)[0].image))
        genders.append(sample.gender)
    return np.stack(faces), np.array(genders, np.float64), missed


def gender_accuracy_with_misses(p_female: np.ndarray, gender: np.ndarray, missed: int = 0) -> float:
    """evaluation.metrics.gender_accuracy on the faces found, each photo without one counted wrong."""
    labelled = int(np.isfinite(gender).sum())
    return gender_accuracy(gender, p_female) * labelled / (labelled + missed)


def weighted(values: np.ndarray, weights: tuple[float, ...]) -> np.ndarray:
    w = np.asarray(weights, np.float64)
    return (w[:, None] * values).sum(0) / w.sum()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("ensemble", type=Path)
    parser.add_argument("--crops", type=Path, action="append", required=True, help="repeat for several folders")
    parser.add_argument("--children", type=Path, action="append", default=[], help="crop folders whose 0-12 count too")
    parser.add_argument("--split", default="val")
    parser.add_argument("--photos", type=Path, required=True)
    parser.add_argument("--tta", action="store_true", help="average each face with its mirror image")
    parser.add_argument("--top", type=int, default=8)
    args = parser.parse_args()
    predictor = Predictor.from_checkpoint(args.ensemble, runtime="torch")  # the members run one by one
    sources = [m["source"] for m in predictor.model.info.meta["ensemble"]]
    parts = []  # (name, member P(female) (M, N), gender (N,), photos missed)
    crop_ages, crop_age = [], []
    for folder in args.crops:
        crops, gender, age = crop_inputs(predictor, folder, args.split)
        p, ages = member_outputs(predictor, crops, tta=args.tta)
        parts.append((f"{folder.name} {args.split}", p, gender, 0))
        if folder in args.children:
            kids = age <= 12
            parts.append((f"{folder.name} {args.split} 0-12", p[:, kids], gender[kids], 0))
        crop_ages.append(ages)
        crop_age.append(age)
    photos, photo_gender, missed = photo_inputs(predictor, args.photos)
    parts.append((args.photos.name, member_outputs(predictor, photos, tta=args.tta)[0], photo_gender, missed))
    crop_ages, crop_age = np.concatenate(crop_ages, axis=1), np.concatenate(crop_age)
    aged = np.isfinite(crop_age)
    print("; ".join(f"{name}: {p.shape[1]} faces" for name, p, _, _ in parts) + f"; {missed} photos without a face")
    for index, source in enumerate(sources):
        scores = ", ".join(f"{name} {gender_accuracy_with_misses(p[index], g, m):.1%}" for name, p, g, m in parts)
        print(f"  member {index} {source}: {scores}; crop MAE {np.abs(crop_ages[index][aged] - crop_age[aged]).mean():.2f}")
    grid = [w for w in itertools.product(GRID, repeat=len(sources)) if sum(w) > 0]
    by_gender = []
    for w in grid:
        scores = [gender_accuracy_with_misses(weighted(p, w), g, m) for _, p, g, m in parts]
        by_gender.append((float(np.mean(scores)), scores, w))
    print("gender weights (mean of: " + ", ".join(name for name, _, _, _ in parts) + "):")
    for mean, scores, w in sorted(by_gender, key=lambda row: row[0], reverse=True)[: args.top]:
        print(f"  {','.join(map(str, w))}: {mean:.2%} (" + ", ".join(f"{s:.2%}" for s in scores) + ")")
    by_age = sorted((np.abs(weighted(crop_ages, w)[aged] - crop_age[aged]).mean(), w) for w in grid)
    print("age weights (crop MAE):")
    for mae, w in by_age[: args.top]:
        print(f"  {','.join(map(str, w))}: {mae:.3f}")


if __name__ == "__main__":
    main()
