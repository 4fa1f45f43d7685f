"""Decode each image once: a (N, S, S, 3) uint8 array of resized faces, cached on disk.

Epochs then index memory instead of re-running the JPEG decoder; the cache key covers the
file list, sizes, modification times and the image size, so edited data is re-decoded.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from agegender.atomic_write import write_atomically
from agegender.data.images import ImageLoadError, load_rgb, resize_square
from agegender.data.readers import Skipped
from agegender.data.samples import FaceSample

CACHE_VERSION = 1


@dataclass(frozen=True)
class DecodedImages:
    images: np.ndarray  # (N, S, S, 3) uint8, RGB
    samples: list[FaceSample]  # the samples that decoded, aligned with images
    skipped: list[Skipped]


def default_cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "agegender"


def load_face(path: Path, size: int) -> np.ndarray:
    """The one decode + resize used for training, evaluation and --no-detect prediction."""
    return resize_square(load_rgb(path, target_size=size), size)


def _decode_one(job: tuple[str, int]) -> np.ndarray | str:
    path, size = job
    try:
        return load_face(Path(path), size)
    except ImageLoadError as error:
        return error.reason


def _cache_key(samples: list[FaceSample], size: int) -> str:
    digest = hashlib.sha1(f"v{CACHE_VERSION} size={size}".encode())
    for sample in samples:
        digest.update(f"{_absolute(sample.path)}|{_file_stamp(sample.path)}\n".encode())
    return digest.hexdigest()[:20]


def _absolute(path: Path) -> Path:
    """The path resolved where it can be; a symlink loop or a vanished parent keeps its absolute form."""
    try:
        return path.resolve()
    except (OSError, RuntimeError):  # RuntimeError: a symlink loop, on Python < 3.13
        return path.absolute()


def _file_stamp(path: Path) -> str:
    """Size and modification time, so an edited file is decoded again; "missing" when stat fails."""
    try:
        status = path.stat()
    except OSError:
        return "missing"
    return f"{status.st_size}:{status.st_mtime_ns}"


def _decode_all(samples: list[FaceSample], size: int, workers: int) -> list[np.ndarray | str]:
    jobs = [(str(s.path), size) for s in samples]
    if workers <= 1 or len(jobs) < 256:
        return [_decode_one(job) for job in jobs]
    with ProcessPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(_decode_one, jobs, chunksize=64))


def _save_array(path: Path, images: np.ndarray) -> None:
    with path.open("wb") as handle:
        np.save(handle, images)


def decode_samples(
    samples: list[FaceSample], size: int, cache_dir: Path | None = None, workers: int | None = None
) -> DecodedImages:
    """Decoded faces for `samples`; unreadable images are skipped and listed, not fatal."""
    cache_dir = Path(cache_dir) if cache_dir else default_cache_dir()
    key = _cache_key(samples, size)
    array_path, index_path = cache_dir / f"{key}.npy", cache_dir / f"{key}.json"
    if array_path.exists() and index_path.exists():
        cached = _read_cache(array_path, index_path, len(samples), size)
        if cached is not None:
            return _assemble(samples, *cached)
        warnings.warn(f"{array_path}: decoded-image cache is damaged; decoding the images again", stacklevel=2)
    results = _decode_all(samples, size, workers or os.cpu_count() or 1)
    bad = {i: r for i, r in enumerate(results) if isinstance(r, str)}
    good = [r for r in results if not isinstance(r, str)]
    images = np.stack(good) if good else np.zeros((0, size, size, 3), np.uint8)
    write_atomically(array_path, lambda p: _save_array(Path(p), images))
    write_atomically(index_path, lambda p: Path(p).write_text(json.dumps(bad)))
    return _assemble(samples, images, bad)


def _read_cache(array_path: Path, index_path: Path, n: int, size: int) -> tuple[np.ndarray, dict[int, str]] | None:
    """The cached (images, unreadable) pair when it is whole and fits these samples: valid JSON of row
    numbers, a plain uint8 (rows, size, size, 3) array with one row per readable sample; else None."""
    try:
        bad = {int(i): str(reason) for i, reason in json.loads(index_path.read_text()).items()}
        images = np.load(array_path, mmap_mode=None, allow_pickle=False)
    except (OSError, ValueError, TypeError, AttributeError, EOFError):  # truncated, object arrays, bad JSON
        return None
    fits = images.dtype == np.uint8 and images.shape == (n - len(bad), size, size, 3)
    return (images, bad) if fits and all(0 <= i < n for i in bad) else None


def _assemble(samples: list[FaceSample], images: np.ndarray, bad: dict[int, str]) -> DecodedImages:
    kept = [s for i, s in enumerate(samples) if i not in bad]
    skipped = [Skipped(str(samples[i].path), reason) for i, reason in sorted(bad.items())]
    return DecodedImages(images=images, samples=kept, skipped=skipped)
