"""Choose an ensemble's per-member weights on data it is not reported on.

    python benchmarks/choose_ensemble_weights.py runs/bundle_equal.safetensors \
        --crops ../shared/data/utkface --split val --photos runs/lfw_select

Each member of the ensemble runs once on the same inputs the ensemble would get: the `--split` images of
the crop folder (decoded as `agegender evaluate` does) and the largest face of each photo of `--photos`
(detected and cropped as `agegender evaluate --detect` does). Every weight combination of the grid is then
scored from those outputs: gender weights by the mean of the crop and photo gender accuracies (photos: no
face = wrong), age weights by the crop MAE. It prints each member alone and the best combinations; build the
chosen ensemble with `agegender ensemble ... --gender-weights ... --age-weights ...`.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
from pathlib import Path

import numpy as np
import torch

from agegender.data.dataset import decode_split
from agegender.data.readers import read_folder
from agegender.data.transforms import to_model_input
from agegender.evaluation.evaluate import select_split
from agegender.evaluation.photos import largest_detection
from agegender.inference.predictor import Predictor

GRID = (0, 1, 2, 4)  # weights tried per member


@torch.no_grad()
def member_outputs(predictor: Predictor, faces: np.ndarray, batch: int = 128) -> tuple[np.ndarray, np.ndarray]:
    """(P(female) (M, N), age (M, N)) of each member on uint8 (N, S, S, 3) faces at the ensemble's size."""
    ensemble = predictor.backend.model  # a TorchBackend's
    p_female, ages = [], []
    for begin in range(0, len(faces), batch):
        x = to_model_input(faces[begin : begin + batch])
        outputs = [member(resize(x)) for member, resize in zip(ensemble.members, ensemble.resizers)]
        p_female.append(torch.stack([torch.sigmoid(o.gender_logit) for o in outputs]).numpy())
        ages.append(torch.stack([o.age for o in outputs]).numpy())
    return np.concatenate(p_female, axis=1), np.concatenate(ages, axis=1)


def crop_inputs(predictor: Predictor, folder: Path, split: str):
    """The split's decoded faces and their labels, as `agegender evaluate --split` scores them."""
    trained_on = predictor.checkpoint.config.data
    samples = select_split(read_folder(folder), split, trained_on)
    config = dataclasses.replace(trained_on, path=str(folder), image_size=predictor.image_size)
    arrays, _ = decode_split(samples, config)
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
        faces.append(predictor.prepare_face(predictor.crop_detections(rgb, [largest])[0].image))
        genders.append(sample.gender)
    return np.stack(faces), np.array(genders, np.float64), missed


def gender_accuracy(p_female: np.ndarray, gender: np.ndarray, missed: int = 0) -> float:
    labelled = np.isfinite(gender)
    hits = ((p_female[labelled] >= 0.5) == (gender[labelled] == 1)).sum()
    return float(hits / (labelled.sum() + missed))


def weighted(values: np.ndarray, weights: tuple[float, ...]) -> np.ndarray:
    w = np.asarray(weights, np.float64)
    return (w[:, None] * values).sum(0) / w.sum()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("ensemble", type=Path)
    parser.add_argument("--crops", type=Path, required=True)
    parser.add_argument("--split", default="val")
    parser.add_argument("--photos", type=Path, required=True)
    parser.add_argument("--top", type=int, default=8)
    args = parser.parse_args()
    predictor = Predictor.from_checkpoint(args.ensemble)
    sources = [m["source"] for m in predictor.checkpoint.meta["ensemble"]]
    crops, crop_gender, crop_age = crop_inputs(predictor, args.crops, args.split)
    photos, photo_gender, missed = photo_inputs(predictor, args.photos)
    crop_p, crop_ages = member_outputs(predictor, crops)
    photo_p, _ = member_outputs(predictor, photos)
    aged = np.isfinite(crop_age)
    print(f"{args.crops} {args.split}: {len(crops)} faces; {args.photos}: {len(photos)} faces, {missed} photos without one")
    for index, source in enumerate(sources):
        print(
            f"  member {index} {source}: crops gender {gender_accuracy(crop_p[index], crop_gender):.1%}, "
            f"MAE {np.abs(crop_ages[index][aged] - crop_age[aged]).mean():.2f}; "
            f"photos gender {gender_accuracy(photo_p[index], photo_gender, missed):.1%}"
        )
    grid = [w for w in itertools.product(GRID, repeat=len(sources)) if sum(w) > 0]
    by_gender = []
    for w in grid:
        on_crops = gender_accuracy(weighted(crop_p, w), crop_gender)
        on_photos = gender_accuracy(weighted(photo_p, w), photo_gender, missed)
        by_gender.append(((on_crops + on_photos) / 2, on_crops, on_photos, w))
    print("gender weights (mean of crops and photos, crops, photos):")
    for mean, on_crops, on_photos, w in sorted(by_gender, reverse=True)[: args.top]:
        print(f"  {','.join(map(str, w))}: {mean:.2%} ({on_crops:.2%}, {on_photos:.2%})")
    by_age = sorted((np.abs(weighted(crop_ages, w)[aged] - crop_age[aged]).mean(), w) for w in grid)
    print("age weights (crop MAE):")
    for mae, w in by_age[: args.top]:
        print(f"  {','.join(map(str, w))}: {mae:.3f}")


if __name__ == "__main__":
    main()
