"""Frame sources: image files and folders, video files and webcams, each an iterator of `Frame`s.

Frames are HxWx3 uint8 RGB (OpenCV's BGR is converted here, once). Sources that cannot be
opened fail on construction with `SourceError` naming the problem, before any frame is read.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator

import numpy as np

from agegender.data.images import ImageLoadError, PathLike, list_image_files, load_rgb
from agegender.errors import UserInputError

VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv")


class SourceError(UserInputError):
    """A video file or camera that cannot be opened or read."""


@dataclass(frozen=True)
class Frame:
    image: np.ndarray  # (H, W, 3) uint8 RGB
    source: str  # file path, "video.mp4", or "webcam:0"
    index: int  # position in the stream (0-based)


def is_video_path(path: PathLike) -> bool:
    return Path(path).suffix.lower() in VIDEO_SUFFIXES


def expand_image_paths(paths: Iterable[PathLike]) -> list[Path]:
    """Files as given; folders replaced by the images under them (recursively, sorted)."""
    files: list[Path] = []
    for path in map(Path, paths):
        files += list_image_files(path) if path.is_dir() else [path]
    return files


class ImageSource:
    """Images and folders of images. An unreadable file goes to `on_error` and is skipped;
    without `on_error` its ImageLoadError propagates. `load` decodes one file (default: load_rgb).
    """

    def __init__(
        self,
        paths: Iterable[PathLike],
        on_error: Callable[[ImageLoadError], None] | None = None,
        *,
        load: Callable[[Path], np.ndarray] = load_rgb,
    ):
        self.paths = expand_image_paths(paths)
        self.on_error = on_error
        self.load = load

    def __len__(self) -> int:
        return len(self.paths)

    def __iter__(self) -> Iterator[Frame]:
        for index, path in enumerate(self.paths):
            try:
                image = self.load(path)
            except ImageLoadError as error:
                if self.on_error is None:
                    raise
                self.on_error(error)
                continue
            yield Frame(image, str(path), index)


def _bgr_to_rgb(bgr: np.ndarray) -> np.ndarray:
    import cv2

    if bgr.ndim == 2:
        return cv2.cvtColor(bgr, cv2.COLOR_GRAY2RGB)
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


class CaptureSource:
    """A cv2.VideoCapture whose first frame has been read successfully (so it is known to work)."""

    def __init__(self, capture, first: np.ndarray, name: str):
        import cv2

        self._capture = capture
        self._first: np.ndarray | None = first
        self.name = name
        fps = capture.get(cv2.CAP_PROP_FPS)
        self.fps = float(fps) if fps and 0 < fps < 1000 else 25.0  # some files and cameras report 0
        self.frame_size = (first.shape[1], first.shape[0])  # (width, height)

    def __iter__(self) -> Iterator[Frame]:
        index = 0
        try:
            while True:
                if self._first is not None:
                    bgr, self._first = self._first, None
                else:
                    ok, bgr = self._capture.read()
                    if not ok or bgr is None:
                        return
                yield Frame(_bgr_to_rgb(bgr), self.name, index)
                index += 1
        finally:
            self.close()

    def close(self) -> None:
        self._capture.release()


class VideoSource(CaptureSource):
    def __init__(self, path: PathLike):
        import cv2

        path = Path(path)
        if not path.is_file():
            raise SourceError(f"{path}: video file not found")
        capture = cv2.VideoCapture(str(path))
        if not capture.isOpened():
            capture.release()
            raise SourceError(f"{path}: cannot open as a video (unsupported or corrupt file)")
        ok, first = capture.read()
        if not ok or first is None:
            capture.release()
            raise SourceError(f"{path}: no readable frames (corrupt or empty video)")
        super().__init__(capture, first, str(path))


class WebcamSource(CaptureSource):
    """Camera `index`. Opening and the first read run in a helper thread, so a camera that never
    delivers a frame gives a SourceError after `timeout` seconds instead of hanging.
    """

    def __init__(self, index: int, timeout: float = 5.0):
        opened: dict = {}

        def open_and_read() -> None:
            import cv2

            capture = cv2.VideoCapture(index)
            opened["capture"] = capture
            if capture.isOpened():
                opened["frame"] = capture.read()

        worker = threading.Thread(target=open_and_read, daemon=True)
        worker.start()
        worker.join(timeout)
        name = f"webcam:{index}"
        if worker.is_alive():
            raise SourceError(f"{name}: camera did not deliver a frame within {timeout:.0f} s")
        capture = opened.get("capture")
        if capture is None or not capture.isOpened():
            raise SourceError(f"{name}: no camera with index {index} (cannot open it)")
        ok, first = opened.get("frame", (False, None))
        if not ok or first is None:
            capture.release()
            raise SourceError(f"{name}: camera opened but returned no frame")
        super().__init__(capture, first, name)


# Folders are streamed in chunks, so memory stays bounded however many files there are: each chunk is one
# detector call and one model call for all the faces in it.
CHUNK_IMAGES = 32
MAX_CHUNK_PIXELS = 64 * 2**20  # about 200 MB of RGB: a chunk of big photos closes early


def chunk_frames(frames: Iterable[Frame], max_images: int, max_pixels: int = MAX_CHUNK_PIXELS) -> Iterator[list[Frame]]:
    """Consecutive frames in lists of at most `max_images` and `max_pixels` (a bigger image goes alone)."""
    chunk: list[Frame] = []
    pixels = 0
    for frame in frames:
        size = frame.image.shape[0] * frame.image.shape[1]
        if chunk and (len(chunk) >= max_images or pixels + size > max_pixels):
            yield chunk
            chunk, pixels = [], 0
        chunk.append(frame)
        pixels += size
    if chunk:
        yield chunk
