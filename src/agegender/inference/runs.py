"""Whole prediction runs behind the `predict` CLI verb: image files and folders, or one video
stream (file or webcam), with annotated outputs and a row per face.
"""

from __future__ import annotations

import csv
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np

from agegender.data.images import ImageLoadError, PathLike
from agegender.inference.draw import draw_prediction
from agegender.inference.predictor import Predictor
from agegender.inference.sources import CaptureSource, ImageSource, SourceError
from agegender.results import Prediction

ROW_FIELDS = ["path", "face_index", "x1", "y1", "x2", "y2", "score", "age", "gender", "p_female"]
VIDEO_OUTPUT_SUFFIXES = {".mp4": "mp4v", ".m4v": "mp4v", ".avi": "MJPG", ".mkv": "mp4v"}
Progress = Callable[[int], None]  # called with the number of items just finished


def face_rows(prediction: Prediction) -> list[dict]:
    """One row per face; box and score are None (empty in CSV) when no detector ran."""
    rows = []
    for index, face in enumerate(prediction.faces):
        box = face.box
        x1, y1, x2, y2 = (box.x1, box.y1, box.x2, box.y2) if box is not None else (None, None, None, None)
        rows.append({
            "path": prediction.source, "face_index": index, "x1": x1, "y1": y1, "x2": x2, "y2": y2,
            "score": None if face.score is None else round(face.score, 4),
            "age": round(face.age, 1), "gender": face.gender, "p_female": round(face.p_female, 4),
        })  # fmt: skip
        if face.age_groups is not None:  # --age-groups: the likeliest group, then one column per group
            rows[-1]["age_group"] = face.age_group
            rows[-1].update({f"p_age_{name}": round(p, 4) for name, p in face.age_groups.items()})
    return rows


def write_rows(rows: Sequence[dict], output: Path) -> None:
    """CSV, or JSON when `output` ends in .json."""
    output.parent.mkdir(parents=True, exist_ok=True)
    if output.suffix.lower() == ".json":
        output.write_text(json.dumps(list(rows), indent=2) + "\n")
        return
    extra = [key for key in (rows[0] if rows else {}) if key not in ROW_FIELDS]  # age-group columns
    with output.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, ROW_FIELDS + extra)
        writer.writeheader()
        writer.writerows(rows)


@dataclass(frozen=True)
class ImageRun:
    rows: tuple[dict, ...]  # one per face, see face_rows
    images: int  # images predicted (including those with zero faces)
    skipped: tuple[str, ...]  # one message per unreadable file
    box_fallbacks: int = 0  # faces box-cropped because an aligned crop had no usable keypoints


def predict_images(
    predictor: Predictor,
    paths: Iterable[PathLike],
    *,
    detect: bool = True,
    save_dir: Path | None = None,
    progress: Progress | None = None,
) -> ImageRun:
    """Predict every image (folders recursively); unreadable files are counted and skipped.
    `progress` is called once per file, readable or not.
    """
    rows: list[dict] = []
    skipped: list[str] = []
    images = fallbacks = 0

    def skip(error: ImageLoadError) -> None:
        skipped.append(str(error))
        if progress:
            progress(1)

    source = ImageSource(paths, on_error=skip)
    if detect:
        predictions = _predict_detected(predictor, source, save_dir)
    else:
        predictions = _predict_cropped(predictor, source.paths, skip)
    for prediction in predictions:
        images += 1
        rows += face_rows(prediction)
        fallbacks += predictor.count_box_fallbacks(prediction)
        if progress:
            progress(1)
    return ImageRun(tuple(rows), images, tuple(skipped), fallbacks)


def _predict_detected(predictor: Predictor, source: ImageSource, save_dir: Path | None):
    taken: set[str] = set()  # names written in this run: a/x.jpg and b/x.jpg must not overwrite each other
    for frame in source:
        prediction = predictor.predict(frame.image, source=frame.source)
        if save_dir is not None:
            name = _unique_name(f"{Path(frame.source).stem}_pred", taken)
            save_annotated(frame.image, prediction, save_dir / f"{name}.jpg")
        yield prediction


def _unique_name(stem: str, taken: set[str]) -> str:
    name, number = stem, 1
    while name in taken:
        number += 1
        name = f"{stem}_{number}"
    taken.add(name)
    return name


def _predict_cropped(predictor: Predictor, paths: list[Path], skip: Callable[[ImageLoadError], None]):
    for path in paths:
        try:
            yield predictor.predict_cropped_file(path)
        except ImageLoadError as error:
            skip(error)


def save_annotated(rgb: np.ndarray, prediction: Prediction, target: Path) -> None:
    """Draw the prediction on its image and save it as `target` (format from the suffix)."""
    from PIL import Image

    target.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(draw_prediction(rgb, prediction)).save(target, quality=92)


@dataclass(frozen=True)
class VideoRun:
    frames: int
    faces: int  # summed over frames
    seconds: float
    rows: tuple[dict, ...]
    box_fallbacks: int = 0  # faces (summed over frames) box-cropped for want of usable keypoints

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0


def has_display() -> bool:
    """A live window needs a display and an OpenCV built with a GUI backend (the headless wheel has none)."""
    import os

    import cv2

    if not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        return False
    build = cv2.getBuildInformation()
    gui = build[build.find("GUI:") :].splitlines()[0]
    return "NONE" not in gui


def predict_video(
    predictor: Predictor,
    source: CaptureSource,
    *,
    output: Path | None = None,
    show: bool = False,
    max_frames: int | None = None,
    collect_rows: bool = False,
    progress: Progress | None = None,
) -> VideoRun:
    """Predict a video stream frame by frame (tracked and smoothed), writing an annotated video
    to `output` and/or showing a live window. Frames are never accumulated; per-face rows only
    with `collect_rows` (a webcam can run for hours).
    """
    writer = None
    frames = faces = fallbacks = 0
    rows: list[dict] = []
    start = previous = time.perf_counter()
    frame_seconds = None  # moving average, for the fps shown on the frame
    try:  # the finally block releases the camera and finalises the video file, also on Ctrl+C
        if output is not None:
            writer = _open_writer(output, source.fps, source.frame_size)
        for result in predictor.predict_stream(source):
            frames += 1
            faces += len(result.prediction.faces)
            fallbacks += result.box_fallbacks
            if collect_rows:
                rows += [{**row, "path": f"{source.name}#{result.frame.index}"} for row in face_rows(result.prediction)]
            now = time.perf_counter()
            elapsed, previous = now - previous, now
            frame_seconds = elapsed if frame_seconds is None else 0.9 * frame_seconds + 0.1 * elapsed
            annotated = draw_prediction(result.frame.image, result.prediction, fps=1 / max(frame_seconds, 1e-9))
            if writer is not None:
                writer.write(np.ascontiguousarray(annotated[:, :, ::-1]))  # OpenCV writes BGR
            if show and not _show(annotated):
                break
            if progress:
                progress(1)
            if max_frames is not None and frames >= max_frames:
                break
    finally:
        source.close()
        if writer is not None:
            writer.release()
    return VideoRun(frames, faces, time.perf_counter() - start, tuple(rows), fallbacks)


def _open_writer(output: Path, fps: float, frame_size: tuple[int, int]):
    import cv2

    codec = VIDEO_OUTPUT_SUFFIXES.get(output.suffix.lower())
    if codec is None:
        raise SourceError(f"{output}: video output must end in one of {', '.join(VIDEO_OUTPUT_SUFFIXES)}")
    output.parent.mkdir(parents=True, exist_ok=True)
    writer = cv2.VideoWriter(str(output), cv2.VideoWriter_fourcc(*codec), fps, frame_size)
    if not writer.isOpened():
        raise SourceError(f"{output}: cannot write a video here (codec {codec})")
    return writer


def _show(rgb: np.ndarray) -> bool:
    """Show a frame; False once the user pressed q or Esc."""
    import cv2

    cv2.imshow("agegender", rgb[:, :, ::-1])
    return cv2.waitKey(1) & 0xFF not in (ord("q"), 27)
