"""Time `agegender predict FOLDER` with an older checkout against this one, with the bundled model.

Two folders, each predicted by both versions in fresh processes (start-up included, as a user
sees it): N UTKFace crops with --no-detect, and P lfw_dev photos with face detection. Start-up is
measured separately (one image), so faces/s is also given without it. Both versions' CSVs are
compared (same files, same faces, largest age and P(female) difference), and the model's own
batched throughput (batches of 32 faces, in-process) is printed for reference.

    python benchmarks/bench_predict_folder.py --old-src /work/main/src --threads 2
    python benchmarks/bench_predict_folder.py --old-src /work/main/src --threads 1 --crops 500 --photos 100

Files are symlinked into a temporary folder; nothing is written elsewhere.
"""

from __future__ import annotations

import argparse
import csv
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

DATA_ROOT = Path(os.environ.get("AGEGENDER_DATA", "../shared/data"))  # the datasets (docs/data.md)

NEW_SRC = Path(__file__).resolve().parents[1] / "src"
MODEL_THROUGHPUT = """
import time, numpy as np, torch
from agegender.inference.predictor import Predictor

predictor = Predictor.from_checkpoint()
faces = np.random.default_rng(0).integers(0, 256, ({n}, predictor.model.image_size, predictor.model.image_size, 3), dtype=np.uint8)
predictor.model.backend.predict(faces[:32], 32)  # warm-up
start = time.perf_counter()
predictor.model.backend.predict(faces, 32)
print({n} / (time.perf_counter() - start))
"""


def link_files(source: Path, pattern: str, count: int, target: Path) -> Path:
    target.mkdir(parents=True)
    files = sorted(source.glob(pattern))[:count]
    if len(files) < count:
        raise SystemExit(f"{source}: only {len(files)} files match {pattern}, {count} asked for")
    for file in files:
        (target / file.name).symlink_to(file)
    return target


def environment(src: Path, threads: int) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(src), "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}


def timed_predict(src: Path, threads: int, inputs: Path, output: Path, *flags: str) -> float:
    """Wall seconds of one `agegender predict` process."""
    command = [sys.executable, "-m", "agegender.cli", "predict", str(inputs), "--output", str(output), *flags]
    start = time.perf_counter()
    subprocess.run(command, env=environment(src, threads), check=True, capture_output=True, text=True)
    return time.perf_counter() - start


def read_rows(path: Path) -> dict[tuple[str, str], tuple[float, float]]:
    with path.open(newline="") as handle:
        return {(Path(r["path"]).name, r["face_index"]): (float(r["age"]), float(r["p_female"])) for r in csv.DictReader(handle)}


def compare_rows(old: Path, new: Path) -> str:
    a, b = read_rows(old), read_rows(new)
    if a.keys() != b.keys():
        return f"DIFFERENT faces: {len(a)} old, {len(b)} new, {len(a.keys() ^ b.keys())} not in both"
    age = max((abs(a[k][0] - b[k][0]) for k in a), default=0.0)
    p = max((abs(a[k][1] - b[k][1]) for k in a), default=0.0)
    return f"same {len(a)} faces; max |age diff| {age:.1f} y, max |p_female diff| {p:.4f} (CSV rounding: 0.1 y, 1e-4)"


def bench_case(name: str, folder: Path, one: Path, old_src: Path, threads: int, work: Path, *flags: str) -> None:
    results = {}
    for version, src in (("old", old_src), ("new", NEW_SRC)):
        startup = timed_predict(src, threads, one, work / f"{version}_one.csv", *flags)
        seconds = timed_predict(src, threads, folder, work / f"{version}_{name}.csv", *flags)
        faces = len(read_rows(work / f"{version}_{name}.csv"))
        results[version] = (seconds, startup, faces)
        print(f"  {version}: {seconds:6.1f} s for {faces} faces (start-up {startup:.1f} s): "
              f"{faces / seconds:5.1f} faces/s, {faces / max(seconds - startup, 1e-9):5.1f} after start-up", flush=True)  # fmt: skip
    (old, old_start, _), (new, new_start, _) = results["old"], results["new"]
    ratio_after = (old - old_start) / max(new - new_start, 1e-9)
    print(f"  speed-up {old / new:.2f}x wall, {ratio_after:.2f}x after start-up")
    print(f"  {compare_rows(work / f'old_{name}.csv', work / f'new_{name}.csv')}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--old-src", type=Path, required=True, help="src/ of the checkout to compare with")
    parser.add_argument("--utkface", type=Path, default=DATA_ROOT / "utkface")
    parser.add_argument("--lfw", type=Path, default=DATA_ROOT / "lfw_dev")
    parser.add_argument("--crops", type=int, default=2000)
    parser.add_argument("--photos", type=int, default=300, help="0: skip the detection case")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    print(f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} CPUs; {args.threads} thread(s) per process")
    with tempfile.TemporaryDirectory() as temporary:
        work = Path(temporary)
        crops = link_files(args.utkface, "*.jpg", args.crops, work / "crops")
        rate = subprocess.run([sys.executable, "-c", MODEL_THROUGHPUT.format(n=128)], env=environment(NEW_SRC, args.threads),
                              check=True, capture_output=True, text=True).stdout  # fmt: skip
        print(f"model alone, batches of 32: {float(rate):.1f} faces/s")
        print(f"{args.crops} UTKFace crops, --no-detect")
        bench_case("crops", crops, next(crops.iterdir()), args.old_src, args.threads, work, "--no-detect")
        if args.photos:
            photos = link_files(args.lfw, "*.jpg", args.photos, work / "photos")
            print(f"{args.photos} lfw_dev photos, detection (blazeface)")
            bench_case("photos", photos, next(photos.iterdir()), args.old_src, args.threads, work)
        print(f"load average {os.getloadavg()[0]:.2f} at the end")


if __name__ == "__main__":
    main()
