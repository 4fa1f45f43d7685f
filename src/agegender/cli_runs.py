"""Whole prediction runs behind the `predict` CLI verb: image files and folders (batched across
images), or one video stream (file or webcam), with annotated outputs and a row per face.

`plan_inputs` checks what was asked for and lists the image files once; `run_predict` runs it.
Folders are streamed in chunks of at most CHUNK_IMAGES images (and MAX_CHUNK_PIXELS pixels), so
memory stays bounded however many files there are: each chunk is one detector call (with
detection) and one model call for all the faces in it.
"""

from __future__ import annotations

import csv
import json
import os
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np

from agegender.atomic_write import write_atomically
from agegender.data.align import FaceCropSpec
from agegender.data.images import ImageLoadError, PathLike, load_rgb
from agegender.errors import UserInputError
from agegender.inference.predictions import ROW_FIELDS, Prediction
from agegender.inference.predictor import Predictor, count_box_fallbacks
from agegender.inference.streams.frames import (
    CHUNK_IMAGES,
    CaptureSource,
    ImageSource,
    SourceError,
    VideoSource,
    WebcamSource,
    chunk_frames,
    expand_image_paths,
    is_video_path,
)
from agegender.outputs import check_output_dir, check_output_file

VIDEO_OUTPUT_SUFFIXES = {".mp4": "mp4v", ".m4v": "mp4v", ".avi": "MJPG", ".mkv": "mp4v"}
# Measured (benchmarks/bench_predict_folder.py): the bundled model's CPU throughput peaks at
# batches of 16-32 faces and falls at 96+ (activations outgrow the caches).
ReportProgress = Callable[[int, int], None]  # called with (images just finished, faces found in them)


class InputError(UserInputError):
    """`predict` inputs or outputs that do not go together."""


ROW_SUFFIXES = (".csv", ".json")


def write_rows(rows: Sequence[dict], output: Path) -> None:
    """CSV, or JSON when `output` ends in .json, written atomically. A file name that is not valid UTF-8
    (an undecodable byte, kept by Python as a surrogate escape) is written as the file system's bytes in
    CSV and as its escape in JSON, never an encoding error."""
    if output.suffix.lower() == ".json":
        text = json.dumps(list(rows), indent=2) + "\n"  # ASCII: an undecodable byte becomes its escape
        write_atomically(output, lambda temporary: Path(temporary).write_text(text))
        return
    extra = [key for key in (rows[0] if rows else {}) if key not in ROW_FIELDS]  # age interval, age-group columns

    def write_csv(temporary: str) -> None:
        with open(temporary, "w", newline="", encoding="utf-8", errors="surrogateescape") as handle:
            writer = csv.DictWriter(handle, [*ROW_FIELDS, *extra])
            writer.writeheader()
            writer.writerows(rows)

    write_atomically(output, write_csv)


def check_outputs(inputs: "PredictInputs", options: "PredictOptions") -> None:
    """Every path `predict` will write, checked before the first image is read (outputs.py)."""
    sources = [*inputs.images, *([inputs.video] if inputs.video is not None else [])]
    if options.output is not None:
        suffixes = tuple(VIDEO_OUTPUT_SUFFIXES) if inputs.is_stream else ROW_SUFFIXES
        check_output_file(options.output, "--output", suffixes, sources)
    if options.save_dir is not None:
        check_output_dir(options.save_dir, "--save-dir", sources)


def crop_note(face_crop: FaceCropSpec | None, fallbacks: int) -> str:
    """How detected faces were cropped, for a run's summary line ("" when nothing was detected)."""
    if face_crop is None:
        return ""
    if face_crop.method != "aligned":
        return "; box crops"
    return f"; aligned crops ({face_crop.template} template), {fallbacks} box-cropped for want of usable keypoints"


@dataclass(frozen=True)
class ImageRun:
    predictions: tuple[Prediction, ...]  # one per readable image (zero faces included), in file order
    skipped: tuple[str, ...]  # one message per unreadable file
    box_fallbacks: int = 0  # faces box-cropped because an aligned crop had no usable keypoints
    face_crop: FaceCropSpec | None = None  # how faces were cropped; None: --no-detect

    @property
    def images(self) -> int:
        return len(self.predictions)

    @property
    def rows(self) -> list[dict]:
        return [row for prediction in self.predictions for row in prediction.rows()]

    def summary(self) -> str:
        faces = sum(len(p.faces) for p in self.predictions)
        counts = f"{self.images} images predicted, {faces} faces, {len(self.skipped)} unreadable skipped"
        return counts + crop_note(self.face_crop, self.box_fallbacks)


def predict_images(
    predictor: Predictor,
    paths: Iterable[PathLike],
    *,
    detect: bool = True,
    save_dir: Path | None = None,
    progress: ReportProgress | None = None,
    chunk_size: int = CHUNK_IMAGES,
) -> ImageRun:
    """Predict every image (folders recursively), `chunk_size` images per batch; unreadable files are
    counted and skipped. `progress` is called after each chunk and once per unreadable file.
    Without `detect` each image is one already-cropped face; with it, `save_dir` gets annotated copies.
    """
    skipped: list[str] = []

    def skip(error: ImageLoadError) -> None:
        skipped.append(str(error))
        if progress:
            progress(1, 0)

    source = ImageSource(paths, on_error=skip, load=load_rgb if detect else predictor.model.load_chip)
    taken: set[str] = set()  # annotated names written in this run: a/x.jpg and b/x.jpg must not overwrite each other
    predictions: list[Prediction] = []
    for chunk in chunk_frames(source, chunk_size):
        found = predictor.predict(chunk, detect=detect)
        if detect and save_dir is not None:
            for prediction in found:
                prediction.save(save_dir / f"{_unique_name(f'{Path(prediction.source).stem}_pred', taken)}.jpg")
        predictions += [prediction.without_image() for prediction in found]  # the images of one chunk at a time
        if progress:
            progress(len(chunk), sum(len(p.faces) for p in found))
    fallbacks = sum(count_box_fallbacks(p, predictor.model.face_crop) for p in predictions)
    return ImageRun(tuple(predictions), tuple(skipped), fallbacks, predictor.model.face_crop if detect else None)


def _unique_name(stem: str, taken: set[str]) -> str:
    name, number = stem, 1
    while name in taken:
        number += 1
        name = f"{stem}_{number}"
    taken.add(name)
    return name


@dataclass(frozen=True)
class VideoRun:
    frames: int
    faces: int  # summed over frames
    seconds: float
    predictions: tuple[Prediction, ...]  # per frame (source "video#index"), only when collected
    box_fallbacks: int = 0  # faces (summed over frames) box-cropped for want of usable keypoints
    face_crop: FaceCropSpec | None = None
    output: Path | None = None  # the annotated video written
    skipped: tuple[str, ...] = ()  # a stream skips nothing; here so both runs read alike

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0

    @property
    def rows(self) -> list[dict]:
        return [row for prediction in self.predictions for row in prediction.rows()]

    def summary(self) -> str:
        wrote = f"; wrote {self.output}" if self.output else ""
        counts = f"{self.frames} frames, {self.faces} faces, {self.fps:.1f} fps{wrote}"
        return counts + crop_note(self.face_crop, self.box_fallbacks)


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
) -> VideoRun:
    """Predict a video stream frame by frame (tracked and smoothed), writing an annotated video
    to `output` and/or showing a live window. Frames are never accumulated; per-frame predictions
    only with `collect_rows` (a webcam can run for hours).
    """
    writer = None
    frames = faces = fallbacks = 0
    kept: list[Prediction] = []
    start = time.perf_counter()
    fps = _FrameRate()
    try:  # the finally block releases the camera and finalises the video file, also on Ctrl+C
        if output is not None:
            writer = _open_writer(output, source.fps, source.frame_size)
        for result in predictor.predict_stream(source):
            frames += 1
            faces += len(result.prediction.faces)
            fallbacks += result.box_fallbacks
            if collect_rows:
                kept.append(replace(result.prediction, source=f"{source.name}#{result.frame.index}"))
            annotated = result.prediction.draw(result.frame.image, fps=fps.tick())
            if writer is not None:
                writer.write(np.ascontiguousarray(annotated[:, :, ::-1]))  # OpenCV writes BGR
            if (show and not _show(annotated)) or (max_frames is not None and frames >= max_frames):
                break
    finally:
        source.close()
        if writer is not None:
            writer.release()
    seconds = time.perf_counter() - start
    return VideoRun(frames, faces, seconds, tuple(kept), fallbacks, predictor.model.face_crop, output)


class _FrameRate:
    """Frames per second as a moving average of frame intervals, for the fps drawn on each frame."""

    def __init__(self) -> None:
        self.previous = time.perf_counter()
        self.seconds: float | None = None

    def tick(self) -> float:
        now = time.perf_counter()
        elapsed, self.previous = now - self.previous, now
        self.seconds = elapsed if self.seconds is None else 0.9 * self.seconds + 0.1 * elapsed
        return 1 / max(self.seconds, 1e-9)


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


@dataclass(frozen=True)
class PredictInputs:
    """What `predict` reads: image files (folders already listed), or one video file, or a webcam."""

    images: tuple[Path, ...] = ()
    video: Path | None = None
    webcam: int | None = None

    @property
    def is_stream(self) -> bool:
        return self.video is not None or self.webcam is not None


def plan_inputs(paths: Sequence[PathLike], webcam: int | None = None, detect: bool = True) -> PredictInputs:
    """Check that the inputs go together and list the folders' images (once, recursively, sorted)."""
    if webcam is None and not paths:
        raise InputError("give images, folders or a video file, or --webcam INDEX")
    stream = webcam is not None or any(is_video_path(p) for p in paths)
    if stream and (len(paths) > (0 if webcam is not None else 1) or not detect):
        raise InputError("a video or --webcam is predicted on its own (one input, with face detection)")
    if webcam is not None:
        return PredictInputs(webcam=webcam)
    missing = [str(path) for path in paths if not os.path.lexists(path)]
    if missing:
        raise InputError(f"{missing[0]}: input not found" + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""))
    if stream:
        return PredictInputs(video=Path(paths[0]))
    return PredictInputs(images=tuple(expand_image_paths(paths)))


@dataclass(frozen=True)
class PredictOptions:
    detect: bool = True  # False: each image is one already-cropped face
    save_dir: Path | None = None  # images: annotated copies go here
    output: Path | None = None  # images: rows as .csv/.json; stream: the annotated video
    max_frames: int | None = None  # stream: stop after this many frames
    collect_rows: bool = False  # stream: keep per-frame predictions (images always keep theirs)
    chunk_size: int = CHUNK_IMAGES  # images per batch


def run_predict(
    predictor: Predictor, inputs: PredictInputs, options: PredictOptions, progress: ReportProgress | None = None
) -> ImageRun | VideoRun:
    """Predict `inputs` as `options` say: images batched (rows written to options.output), or a stream
    (annotated video to options.output, else a live window where there is a display)."""
    check_outputs(inputs, options)
    if not inputs.is_stream:
        run = predict_images(
            predictor, inputs.images, detect=options.detect, save_dir=options.save_dir, progress=progress,
            chunk_size=options.chunk_size,
        )  # fmt: skip
        if options.output is not None:
            write_rows(run.rows, options.output)
        return run
    show = options.output is None and has_display()
    if options.output is None and not show:
        raise InputError("no display for a live window here: pass --output out.mp4")
    source = WebcamSource(inputs.webcam) if inputs.webcam is not None else VideoSource(inputs.video)
    return predict_video(
        predictor, source, output=options.output, show=show, max_frames=options.max_frames,
        collect_rows=options.collect_rows,
    )  # fmt: skip
