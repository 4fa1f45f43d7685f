"""Photos, not crops: gender accuracy on uncropped photos by crop method, end to end.

    OMP_NUM_THREADS=1 python benchmarks/bench_photo_crops.py [--data $AGEGENDER_DATA/lfw_dev] [--model M] [--detector mediapipe]
        [--json docs/results/photo_crops.json]

Each row is one `agegender evaluate --data DATA --detect --detector D --crop C [--margin X]` (the
command is printed with it): detect every photo, score its largest face, and count a photo
without a face as an error end to end. Columns: gender accuracy on the photos with a face
(overall, women, men), the end-to-end accuracy, photos without a face, and faces that an aligned
crop had to box-crop for want of usable keypoints. Needs the detector's package (mediapipe:
see inference.detectors.factory.MEDIAPIPE_INSTALL).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import torch

from agegender.data.align import FaceCropSpec
from agegender.evaluation.photos import evaluate_photos
from agegender.inference.predictor import Predictor, bundled_model_path
from agegender.models.checkpoint import read_face_crop, read_meta

DATA_ROOT = Path(os.environ.get("AGEGENDER_DATA", "../shared/data"))  # the datasets (docs/data.md)

CROPS = (  # (label, spec); box margin None = the detector's own
    ("box", FaceCropSpec("box")),
    ("aligned utkface", FaceCropSpec("aligned", "utkface", 0.0)),
    ("aligned utkface m0.05", FaceCropSpec("aligned", "utkface", 0.05)),
    ("aligned utkface m0.1", FaceCropSpec("aligned", "utkface", 0.1)),
    ("aligned dlib_150", FaceCropSpec("aligned", "dlib_150", 0.0)),
)


def command(data: Path, detector: str, spec: FaceCropSpec, stored: FaceCropSpec) -> str:
    """The CLI line of one row; `--crop aligned` keeps the model file's template, so another template is the
    file re-exported (`agegender export --format safetensors-fp16 --face-template T`) or the Python API."""
    margin = f" --margin {spec.margin}" if spec.margin else ""
    other = spec.method == "aligned" and spec.template != stored.template
    template = f"  (template {spec.template}: a copy by export --face-template {spec.template}, or the API)" if other else ""
    return f"agegender evaluate --data {data} --detect --detector {detector} --crop {spec.method}{margin}{template}"


def percent(value: float | None) -> str:
    return "    -" if value is None else f"{100 * value:5.1f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DATA_ROOT / "lfw_dev")
    parser.add_argument("--model", type=Path, default=None, help="checkpoint; default: the bundled model")
    parser.add_argument("--detector", default="mediapipe")
    parser.add_argument("--json", type=Path, default=None, help="write the results here (tools/render_results.py)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    print(f"{'crop':24s} {'acc':>5s} {'women':>5s} {'men':>5s} {'e2e':>5s} {'noface':>6s} {'fallbk':>6s} {'s':>5s}")
    rows = []
    stored = read_face_crop(read_meta(args.model or bundled_model_path()))
    for label, spec in CROPS:
        predictor = Predictor.from_checkpoint(args.model, detector=args.detector, crop=spec)
        start = time.perf_counter()
        result = evaluate_photos(predictor, args.data)
        report, found = result.report, result.detection
        women, men = (report.per_gender.get(g) for g in ("female", "male"))
        print(
            f"{label:24s} {percent(report.gender_accuracy)} {percent(women and women.gender_accuracy)} "
            f"{percent(men and men.gender_accuracy)} {percent(found.end_to_end_gender_accuracy)} "
            f"{found.no_face:6d} {found.box_fallbacks:6d} {time.perf_counter() - start:5.0f}"
        )
        line = command(args.data, args.detector, spec, stored)
        print(f"    {line}")
        rows.append({"crop": label, "spec": spec.to_dict(), "command": line,
                     "gender_accuracy": report.gender_accuracy, "women": women and women.gender_accuracy,
                     "men": men and men.gender_accuracy, "end_to_end": found.end_to_end_gender_accuracy,
                     "no_face": found.no_face, "box_fallbacks": found.box_fallbacks})  # fmt: skip
    if args.json:
        settings = {"data": args.data.name, "model": str(args.model or "bundled"), "detector": args.detector,
                    "model_crop": stored.to_dict()}  # fmt: skip
        args.json.write_text(json.dumps({"settings": settings, "crops": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
