"""Inference speed: model-only throughput and latency on PyTorch and onnxruntime, and the full
pipeline (detection + crop + model) on 640x480 frames holding one face.

    python benchmarks/bench_inference.py [--model CKPT] [--batch 64] [--seconds 3] [--threads N] [--tta | --no-tta]

Without --model it uses the bundled model, or, before that exists, an untrained model of the
default architecture (speed does not depend on the weights). `video fps` is the video and webcam
path (Predictor.predict_stream: the default detector's video form, tracking on); `photo ms` one
still photo through Predictor.predict (the default still detector, blazeface + mtcnn). The CPU may be shared with
other jobs: the load average is printed with the numbers, and every rate is also given per
CPU-second of this process (`/cpu` columns), which other jobs disturb much less than wall-clock
time; with --threads 1 that is the rate one uncontended core would reach.
"""

from __future__ import annotations

import argparse
import itertools
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from agegender.config import ModelConfig, RunConfig
from agegender.data.images import load_rgb
from agegender.export.onnx import export_onnx
from agegender.inference.backends import OnnxBackend
from agegender.inference.predictor import Predictor, bundled_model_path
from agegender.models.checkpoint import build_meta, save_checkpoint
from agegender.models.registry import create_model

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def default_checkpoint(folder: Path) -> Path:
    if bundled_model_path().is_file():
        return bundled_model_path()
    config = RunConfig()
    model = create_model(config.model)
    path = folder / "untrained.safetensors"
    save_checkpoint(path, model, build_meta(model, config, label_stats={}))
    print(f"(bundled model not found: timing an untrained {config.model.name} model, widths {ModelConfig().widths})")
    return path


def timed(run, seconds: float) -> tuple[float, float]:
    """(median wall seconds, mean CPU seconds of this process) per call."""
    run()  # warm-up
    times, deadline = [], time.perf_counter() + seconds
    cpu_start = time.process_time()
    while time.perf_counter() < deadline or len(times) < 3:
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times), (time.process_time() - cpu_start) / len(times)


def one_face_frames(n: int = 8) -> list[np.ndarray]:
    face = load_rgb(EXAMPLES / "astronaut.jpg")[20:260, 110:350]  # (240, 240, 3): the face with hair and chin
    frames = []
    for i in range(n):
        frame = np.full((480, 640, 3), 110, np.uint8)
        x = 60 + 40 * i
        frame[120:360, x : x + 240] = face
        frames.append(frame)
    return frames


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=3.0, help="time spent per measurement")
    parser.add_argument("--threads", type=int, help="torch and onnxruntime intra-op threads")
    parser.add_argument("--detector", default="auto")
    parser.add_argument("--tta", action=argparse.BooleanOptionalAction, default=None,
                        help="mirror averaging on or off (default: as the model file says, as predict does)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs, torch threads {torch.get_num_threads()}")
    with tempfile.TemporaryDirectory() as folder:
        checkpoint = args.model or default_checkpoint(Path(folder))
        onnx_path, int8_path = Path(folder) / "model.onnx", Path(folder) / "model.int8.onnx"
        print(export_onnx(checkpoint, onnx_path).summary())
        print(export_onnx(checkpoint, int8_path, quantize="int8").summary())
        options = {"detector": args.detector, "tta": args.tta}
        runtimes = {
            "pytorch": Predictor.from_checkpoint(checkpoint, runtime="torch", **options),
            "onnxruntime": Predictor(OnnxBackend.from_file(onnx_path, threads=args.threads), **options),
            "onnxruntime int8": Predictor(OnnxBackend.from_file(int8_path, threads=args.threads), **options),
        }
        size = runtimes["pytorch"].image_size
        faces = np.random.default_rng(0).integers(0, 256, (args.batch, size, size, 3), dtype=np.uint8)
        frames = one_face_frames()
        print(f"\nmodel input {size}x{size}; batch {args.batch}; detector {runtimes['pytorch'].detector.name}")
        print(f"{'runtime':18s} {'faces/s':>8s} {'/cpu':>6s} {'ms/face b=1':>12s} {'video fps':>10s} {'/cpu':>6s}"
              f" {'photo ms':>9s} {'1 face found':>13s}")  # fmt: skip
        for name, predictor in runtimes.items():
            batched, batched_cpu = timed(lambda: predictor.predict_prepared(faces), args.seconds)  # with tta if on
            single, _ = timed(lambda: predictor.predict_prepared(faces[:1]), args.seconds)
            stream = predictor.predict_stream(itertools.cycle(frames))
            frame, frame_cpu = timed(lambda: next(stream), args.seconds)
            counter = iter(range(10**9))
            photo, _ = timed(lambda: predictor.predict(frames[next(counter) % len(frames)]), args.seconds)
            found = sum(len(predictor.predict(f).faces) == 1 for f in frames)
            print(
                f"{name:18s} {args.batch / batched:8.0f} {args.batch / batched_cpu:6.0f} {1000 * single:12.2f}"
                f" {1 / frame:10.1f} {1 / frame_cpu:6.1f} {1000 * photo:9.1f} {found:>9d}/{len(frames)}"
            )
    print(f"load average {os.getloadavg()[0]:.2f} at the end")


if __name__ == "__main__":
    main()
