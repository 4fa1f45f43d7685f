"""float32, bfloat16 and int8 forms of one model side by side: accuracy where users meet it, and speed.

    python benchmarks/bench_quantized.py [--model CKPT] [--threads 1] [--json docs/results/quantized.json]

Variants: PyTorch float32 and bfloat16 (--runtime torch-bf16, weights and activations cast: oneDNN's bf16
kernels where the CPU has AVX-512 BF16 or AMX, emulated and slow elsewhere), onnxruntime float32, int8 dynamic and int8 static (QDQ calibrated
on `--calibration-faces` chips of UTKFace's train split; export.quantize). Each is scored with mirror
averaging (as the model ships) on UTKFace test, AAF's held-out part (tools/split_aaf.py) and the lfw_dev
photos end to end, then timed on batches of 64 faces in rounds (every variant in each round), so the
speed column is a ratio to onnxruntime float32 measured beside it. Run it alone: other jobs on the CPU
disturb the timings (the load average is printed and saved).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from agegender.atomic_write import write_atomically
from agegender.evaluation.evaluate import evaluate, sample_split_faces
from agegender.evaluation.photos import evaluate_photos
from agegender.evaluation.report import EvaluationReport
from agegender.export.formats import DEFAULT_CALIBRATION_FACES
from agegender.export.onnx import export_onnx
from agegender.inference.predictor import Predictor
from agegender.models.backends import OnnxBackend, TorchBackend, bundled_model_path, native_bfloat16

DATA_ROOT = Path(os.environ.get("AGEGENDER_DATA", "../shared/data"))  # the datasets (docs/data.md)
BATCH = 64


def build_variants(checkpoint: Path, folder: Path, calibration_folder: Path, n_calibration: int, threads: int) -> dict:
    """name -> (backend, file bytes)."""
    torch_backend = TorchBackend.from_file(checkpoint)
    onnx_files = {"float32": None, "int8": None, "int8-static": None}
    for kind in onnx_files:
        path = folder / f"{kind}.onnx"
        calibration = sample_split_faces(Predictor(torch_backend), calibration_folder, n_calibration) if kind == "int8-static" else None
        print(export_onnx(checkpoint, path, quantize=None if kind == "float32" else kind, calibration=calibration).summary())
        onnx_files[kind] = path
    size = checkpoint.stat().st_size
    return {
        "pytorch float32": (torch_backend, size),
        "pytorch bfloat16 (--runtime torch-bf16)": (TorchBackend.from_file(checkpoint, precision="bfloat16"), size),
        "onnxruntime float32": (OnnxBackend.from_file(onnx_files["float32"], threads=threads), onnx_files["float32"].stat().st_size),
        "onnxruntime int8 dynamic": (OnnxBackend.from_file(onnx_files["int8"], threads=threads), onnx_files["int8"].stat().st_size),
        "onnxruntime int8 static": (
            OnnxBackend.from_file(onnx_files["int8-static"], threads=threads), onnx_files["int8-static"].stat().st_size
        ),
    }  # fmt: skip


def crop_scores(report: EvaluationReport) -> dict:
    children = report.per_age_band.get("0-12")
    return {
        "n": report.n, "gender_accuracy": report.gender_accuracy, "age_mae": report.age_mae,
        "children_gender_accuracy": children.gender_accuracy if children else None,
    }  # fmt: skip


def interleaved_speeds(predictors: dict[str, Predictor], rounds: int, seconds: float) -> dict[str, float]:
    """Batched faces per second of each predictor (mirror averaging as its file says): `rounds` rounds,
    every predictor timed for `seconds` in each, the median over all its timings. Interleaving spreads a
    slow spell of a shared CPU over every variant instead of one."""
    size = next(iter(predictors.values())).model.image_size
    faces = np.random.default_rng(0).integers(0, 256, (BATCH, size, size, 3), np.uint8)
    times: dict[str, list[float]] = {name: [] for name in predictors}
    for predictor in predictors.values():
        predictor.model.forward(faces)  # warm-up
    for _ in range(rounds):
        for name, predictor in predictors.items():
            deadline = time.perf_counter() + seconds
            while time.perf_counter() < deadline:
                start = time.perf_counter()
                predictor.model.forward(faces)
                times[name].append(time.perf_counter() - start)
    return {name: BATCH / statistics.median(spent) for name, spent in times.items()}


def accuracy(predictor: Predictor, crops: dict[str, Path], photos: Path) -> dict:
    scores = {name: crop_scores(evaluate(predictor, folder, "test").report) for name, folder in crops.items()}
    detection = evaluate_photos(predictor, photos).detection
    scores["lfw_dev"] = {"n": detection.images, "end_to_end_gender_accuracy": detection.end_to_end_gender_accuracy}
    return scores


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=bundled_model_path())
    parser.add_argument("--utkface", type=Path, default=DATA_ROOT / "utkface")
    parser.add_argument("--aaf", type=Path, default=Path("runs/aaf"), help="tools/split_aaf.py's output")
    parser.add_argument("--photos", type=Path, default=DATA_ROOT / "lfw_dev")
    parser.add_argument("--calibration-faces", type=int, default=DEFAULT_CALIBRATION_FACES)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=5, help="timing rounds, every variant timed in each")
    parser.add_argument("--seconds", type=float, default=2.0, help="seconds per variant per round")
    parser.add_argument("--json", type=Path, help="write the results here (docs/results/quantized.json)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    results = {"threads": args.threads, "load_average_start": os.getloadavg()[0], "bf16_kernels": native_bfloat16(),
               "calibration": f"{args.calibration_faces} faces of {args.utkface.name}'s train split", "variants": {}}  # fmt: skip
    print(f"load average {results['load_average_start']:.2f}; oneDNN bf16 kernels: {results['bf16_kernels']}")
    crops = {"utkface_test": args.utkface, "aaf_test": args.aaf}
    with tempfile.TemporaryDirectory() as folder:
        variants = build_variants(args.model, Path(folder), args.utkface, args.calibration_faces, args.threads)
        predictors = {name: Predictor(backend) for name, (backend, _) in variants.items()}
        for name, predictor in predictors.items():
            results["variants"][name] = {"bytes": variants[name][1], **accuracy(predictor, crops, args.photos)}
            print(f"{name}: {json.dumps(results['variants'][name])}", flush=True)
        for name, rate in interleaved_speeds(predictors, args.rounds, args.seconds).items():
            results["variants"][name]["faces_per_s"] = rate
            print(f"{name}: {rate:.0f} faces/s", flush=True)
    results["load_average_end"] = os.getloadavg()[0]
    if args.json:
        write_atomically(args.json, lambda temporary: Path(temporary).write_text(json.dumps(results, indent=2) + "\n"))
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
