"""Inference speed: model-only throughput and latency on PyTorch and onnxruntime, and the full
pipeline (detection + crop + model) on 640x480 frames holding one face.

    python benchmarks/bench_inference.py [--model CKPT] [--batch 64] [--seconds 3] [--threads N] [--tta | --no-tta]
        [--ghz GHZ] [--fma-units 2] [--batch-sweep 16,32,64,128,256] [--json docs/results/inference.json]

Without --model it uses the bundled model, or, before that exists, an untrained model of the
default architecture (speed does not depend on the weights). `video fps` is the video and webcam
path (Predictor.predict_stream: the default detector's video form, tracking on; `pytorch bf16` is
--runtime torch-bf16); `photo ms` one still photo through Predictor.predict (the default still detector,
blazeface + mtcnn). The CPU may be shared with other jobs: the load average is printed with the numbers, and every rate is also given per
CPU-second of this process (`/cpu` columns), which other jobs disturb much less than wall-clock
time; with --threads 1 that is the rate one uncontended core would reach.

The physical limit stands next to the speed: the model's multiply-accumulates per face (convolutions
and linear layers, models.summary.count_macs) and, from the `/cpu` rate, the share of one core's peak
it reaches: float32 FMA does 16 MACs per 512-bit unit per cycle, bf16 (vdpbf16ps) 32 and int8 VNNI
(vpdpbusd) 64, times `--fma-units` (2 on Zen 5 and most Xeons) and the clock (`--ghz`; default the
one /proc/cpuinfo reports, often the base clock of a VM, so a core that boosts above it shows more
than 100%). The int8 rows are timed on graphs calibrated on random faces: the speed of a quantised
graph does not depend on its ranges (benchmarks/bench_quantized.py measures their accuracy).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from agegender.atomic_write import write_atomically
from agegender.config import ModelConfig, RunConfig
from agegender.data.images import load_rgb
from agegender.export.onnx import export_onnx
from agegender.inference.predictor import Predictor, bundled_model_path
from agegender.models.backends import OnnxBackend
from agegender.models.checkpoint import build_meta, load_checkpoint, save_checkpoint
from agegender.models.registry import create_model
from agegender.models.summary import count_macs

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
MACS_PER_CYCLE_PER_UNIT = {"float32": 16, "bfloat16": 32, "int8": 64}  # one 512-bit FMA / dot-product unit


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


def reported_ghz() -> float | None:
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return None
    mhz = [float(line.split(":")[1]) for line in lines if line.startswith("cpu MHz")]
    return max(mhz) / 1000 if mhz else None


def peak_share(faces_per_cpu_second: float, macs: int, passes: int, precision: str, ghz: float, units: int) -> float:
    """Share of one core's multiply-accumulate peak at `precision` that a rate per CPU-second reaches."""
    return faces_per_cpu_second * passes * macs / (MACS_PER_CYCLE_PER_UNIT[precision] * units * ghz * 1e9)


def sweep_batches(runtimes: dict, batches: list[int], size: int, seconds: float) -> None:
    """Faces per second of one model pass (no mirror averaging) at each batch size, per runtime."""
    faces = np.random.default_rng(1).integers(0, 256, (max(batches), size, size, 3), dtype=np.uint8)
    print(f"\none pass, faces/s by batch size: {', '.join(map(str, batches))}")
    for name, (predictor, _) in runtimes.items():
        rates = []
        for batch in batches:
            wall, _ = timed(lambda: predictor.model.backend.predict(faces[:batch], batch_size=batch), seconds)
            rates.append(f"{batch / wall:.0f}")
        print(f"{name:18s} {' '.join(f'{r:>6s}' for r in rates)}")


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
    parser.add_argument("--ghz", type=float, default=reported_ghz(), help="core clock for the peak (default: /proc/cpuinfo)")
    parser.add_argument("--fma-units", type=int, default=2, help="512-bit FMA units per core")
    parser.add_argument("--batch-sweep", help="also time one model pass per batch size, e.g. 16,32,64,128,256")
    parser.add_argument("--json", type=Path, help="also write the table here (docs/results/inference.json)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs, torch threads {torch.get_num_threads()}")
    results = {"threads": torch.get_num_threads(), "load_average_start": os.getloadavg()[0], "runtimes": {}}
    with tempfile.TemporaryDirectory() as folder:
        checkpoint = args.model or default_checkpoint(Path(folder))
        loaded = load_checkpoint(checkpoint)
        size = loaded.image_size
        faces = np.random.default_rng(0).integers(0, 256, (args.batch, size, size, 3), dtype=np.uint8)
        onnx_files = {kind: Path(folder) / f"model.{kind}.onnx" for kind in ("float32", "int8", "int8-static")}
        for kind, path in onnx_files.items():
            quantize, calibration = (None, None) if kind == "float32" else (kind, faces if kind == "int8-static" else None)
            print(export_onnx(checkpoint, path, quantize=quantize, calibration=calibration).summary())
        options = {"detector": args.detector, "tta": args.tta}
        runtimes = {  # name -> (predictor, the precision of its arithmetic)
            "pytorch": (Predictor.from_checkpoint(checkpoint, runtime="torch", **options), "float32"),
            "pytorch bf16": (Predictor.from_checkpoint(checkpoint, runtime="torch-bf16", **options), "bfloat16"),
            "onnxruntime": (Predictor(OnnxBackend.from_file(onnx_files["float32"], threads=args.threads), **options), "float32"),
            "ort int8 dynamic": (Predictor(OnnxBackend.from_file(onnx_files["int8"], threads=args.threads), **options), "int8"),
            "ort int8 static": (
                Predictor(OnnxBackend.from_file(onnx_files["int8-static"], threads=args.threads), **options), "int8"
            ),
        }  # fmt: skip
        macs = count_macs(loaded.model.float(), size)
        frames = one_face_frames()
        passes = 2 if runtimes["pytorch"][0].model.tta else 1
        print(f"\nmodel input {size}x{size}; {macs / 1e9:.3f} GMAC per face per pass, {passes} pass(es) per face"
              f" (mirror averaging {'on' if passes == 2 else 'off'}); batch {args.batch};"
              f" detector {runtimes['pytorch'][0].detector.name}; peak at {args.ghz} GHz x {args.fma_units} units")  # fmt: skip
        results.update(gmac_per_pass=macs / 1e9, passes=passes, batch=args.batch, detector=runtimes["pytorch"][0].detector.name)
        print(f"{'runtime':18s} {'faces/s':>8s} {'/cpu':>6s} {'peak':>6s} {'ms/face b=1':>12s} {'video fps':>10s} {'/cpu':>6s}"
              f" {'photo ms':>9s} {'1 face found':>13s}")  # fmt: skip
        for name, (predictor, precision) in runtimes.items():
            batched, batched_cpu = timed(lambda: predictor.model.forward(faces), args.seconds)  # with tta if on
            single, _ = timed(lambda: predictor.model.forward(faces[:1]), args.seconds)
            stream = predictor.predict_stream(itertools.cycle(frames))
            frame, frame_cpu = timed(lambda: next(stream), args.seconds)
            counter = iter(range(10**9))
            photo, _ = timed(lambda: predictor.predict(frames[next(counter) % len(frames)]), args.seconds)
            found = sum(len(predictor.predict(f).faces) == 1 for f in frames)
            share = peak_share(args.batch / batched_cpu, macs, passes, precision, args.ghz, args.fma_units) if args.ghz else None
            print(
                f"{name:18s} {args.batch / batched:8.0f} {args.batch / batched_cpu:6.0f}"
                f" {'-' if share is None else f'{100 * share:5.0f}%':>6s} {1000 * single:12.2f}"
                f" {1 / frame:10.1f} {1 / frame_cpu:6.1f} {1000 * photo:9.1f} {found:>9d}/{len(frames)}"
            )
            results["runtimes"][name] = {
                "faces_per_s": args.batch / batched, "faces_per_cpu_s": args.batch / batched_cpu, "peak_share": share,
                "ms_per_face_b1": 1000 * single, "video_fps": 1 / frame, "video_fps_cpu": 1 / frame_cpu,
                "photo_ms": 1000 * photo, "frames_with_one_face": found, "frames": len(frames),
            }  # fmt: skip
        if args.batch_sweep:
            sweep_batches(runtimes, [int(b) for b in args.batch_sweep.split(",")], size, args.seconds)
    print(f"load average {os.getloadavg()[0]:.2f} at the end")
    if args.json:
        results["load_average_end"] = os.getloadavg()[0]
        write_atomically(args.json, lambda temporary: Path(temporary).write_text(json.dumps(results, indent=2) + "\n"))
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
