"""The one place where image files become pixels.

Training, evaluation and prediction all decode through `load_rgb` /
`decode_rgb_bytes`, crop through `crop_with_margin` and resize through
`resize_square`, so a face is preprocessed identically everywhere.

Every decoding failure raises `ImageLoadError` naming the file and the
problem; no Pillow-specific exception escapes.

Pixel-format decisions:

* Alpha (RGBA, LA, PA, palette or single-colour transparency) is composited
  onto WHITE. Simply dropping alpha would expose whatever RGB happens to be
  stored under fully transparent pixels (often black, sometimes garbage),
  which is unpredictable; white is what the user saw in a browser or image
  viewer when they chose the photo.
* 16-bit grayscale (mode ``I;16*`` and the 32-bit ``I`` Pillow uses for it) is
  rescaled from 0..65535 to 0..255 (``round(v * 255 / 65535)``), not clipped,
  which would turn almost every pixel white. Values outside 0..65535 are
  clipped. 16-bit RGB(A) PNGs need nothing: Pillow already reduces them to
  8 bits per channel. Float (``F``) images are clipped to 0..255 by Pillow.
* Truncated files raise: Pillow's ``ImageFile.LOAD_TRUNCATED_IMAGES`` is left
  at its default (False) and never touched, so missing data is an error
  instead of grey pixels.
"""

from __future__ import annotations

import io
import math
import os
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from agegender.errors import UserInputError

DEFAULT_MAX_PIXELS = 50_000_000

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")

_SIXTEEN_BIT_GRAY_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N", "I"})
_ALPHA_MODES = frozenset({"RGBA", "RGBa", "LA", "La", "PA"})
_BACKGROUND = 255  # white, see module docstring

PathLike = str | os.PathLike[str]


class ImageLoadError(UserInputError):
    """An image file (or upload) that cannot be turned into RGB pixels."""

    def __init__(self, path: PathLike, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = path
        self.reason = reason

    def __reduce__(self) -> tuple[type[ImageLoadError], tuple[PathLike, str]]:
        # Default exception pickling replays self.args (one message) into a
        # two-argument __init__; DataLoader workers need this to round-trip.
        return (type(self), (self.path, self.reason))


def load_rgb(
    path: PathLike,
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    target_size: int | None = None,
) -> np.ndarray:
    """Decode an image file to an HxWx3 uint8 RGB array, EXIF orientation applied.

    `target_size` is a hint that the caller will shrink the image to about
    that many pixels per side: large JPEGs are then decoded at a reduced
    scale (1/2, 1/4 or 1/8) that keeps both sides >= target_size where the
    original allows. The result is not resized to target_size.
    """
    file_path = Path(path)
    _check_is_readable_file(file_path)
    return _decode(file_path, file_path, max_pixels=max_pixels, target_size=target_size)


def decode_rgb_bytes(
    data: bytes,
    *,
    name: str = "<upload>",
    max_pixels: int = DEFAULT_MAX_PIXELS,
    target_size: int | None = None,
) -> np.ndarray:
    """Decode an in-memory image (e.g. an HTTP upload) with the same rules as `load_rgb`."""
    if not data:
        raise ImageLoadError(name, "empty file")
    return _decode(io.BytesIO(data), name, max_pixels=max_pixels, target_size=target_size)


@dataclass(frozen=True)
class DecodedImage:
    """An image decoded at most `max_side` pixels per side, and the size it has as stored."""

    rgb: np.ndarray  # (H, W, 3) uint8, upright, possibly shrunk
    original_size: tuple[int, int]  # (width, height) of the upright image before shrinking

    @property
    def scale(self) -> tuple[float, float]:
        """(x, y) factors from `rgb` pixels to original pixels (1.0 when nothing was shrunk)."""
        return self.original_size[0] / self.rgb.shape[1], self.original_size[1] / self.rgb.shape[0]


def decode_rgb_bytes_bounded(
    data: bytes,
    *,
    max_side: int,
    name: str = "<upload>",
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> DecodedImage:
    """`decode_rgb_bytes` for untrusted uploads: memory bounded by `max_pixels`, result by `max_side`.

    Images whose longer side exceeds `max_side` are shrunk WHILE decoding where the format allows
    (JPEG: the decoder's own 1/2, 1/4, 1/8 DCT scaling, so a 7000x7000 JPEG never exists at full
    size) and right after decoding otherwise (`Image.reduce`, an integer box average, before any
    RGB conversion copies the full image). `max_pixels` limits what the decoder itself allocates:
    the size after JPEG scaling, the stored size for every other format; it is checked on the
    header, before any pixel is decoded.
    """
    if max_side <= 0:
        raise ValueError(f"max_side must be positive, got {max_side}")
    if not data:
        raise ImageLoadError(name, "empty file")
    return _decode_bounded(io.BytesIO(data), name, max_pixels=max_pixels, target_size=None, max_side=max_side)


def resize_square(rgb: np.ndarray, size: int) -> np.ndarray:
    """Resize an HxWx3 uint8 image to size x size, ignoring aspect ratio.

    Face crops are already square (see `crop_with_margin`), so a plain resize
    is used rather than letterboxing. Shrinking both sides uses BOX, an exact
    area average like cv2.INTER_AREA, so downscaled faces do not alias;
    anything else uses BICUBIC (Pillow antialiases per axis when shrinking).
    """
    check_rgb(rgb)
    if size <= 0:
        raise ValueError(f"size must be positive, got {size}")
    height, width = rgb.shape[:2]
    if (height, width) == (size, size):
        return rgb.copy()
    shrinking = size < height and size < width
    resample = Image.Resampling.BOX if shrinking else Image.Resampling.BICUBIC
    resized = Image.fromarray(rgb, mode="RGB").resize((size, size), resample=resample)
    return np.asarray(resized, dtype=np.uint8).copy()


def crop_with_margin(
    rgb: np.ndarray, box: tuple[int, int, int, int], margin: float
) -> np.ndarray:
    """Cut a square face crop around an (x1, y1, x2, y2) box, with `margin` added per side.

    The crop is centred on the box with side ``max(w, h) * (1 + 2 * margin)``,
    so margin 0.4 adds 40% of the face size on every side. Where the square
    leaves the image, border pixels are replicated rather than filled with a
    constant, which would give the network a hard edge that real faces lack.
    This is the one function that owns crop margins.
    """
    check_rgb(rgb)
    x1, y1, x2, y2 = (float(v) for v in box)
    if x2 <= x1 or y2 <= y1:
        raise ValueError(f"box must have x2 > x1 and y2 > y1, got {box}")
    if margin < 0:
        raise ValueError(f"margin must be >= 0, got {margin}")
    side = max(1, _round_half_up(max(x2 - x1, y2 - y1) * (1 + 2 * margin)))
    left = _round_half_up((x1 + x2) / 2 - side / 2)
    top = _round_half_up((y1 + y2) / 2 - side / 2)
    height, width = rgb.shape[:2]
    # Clipping the indices replicates the nearest edge pixel outside the image.
    rows = np.clip(np.arange(top, top + side), 0, height - 1)
    cols = np.clip(np.arange(left, left + side), 0, width - 1)
    return rgb[np.ix_(rows, cols)]


def list_image_files(folder: Path, recursive: bool = True) -> list[Path]:
    """Sorted image files under `folder`, skipping hidden files and hidden folders.

    Matching is on the lower-cased name ending, so UTKFace's
    ``*.jpg.chip.jpg`` names are included.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise NotADirectoryError(f"{folder}: not a directory")
    if recursive:
        candidates = _walk_visible_files(folder)
    else:
        candidates = (p for p in folder.iterdir() if p.is_file() and not _is_hidden(p.name))
    return sorted(p for p in candidates if p.name.lower().endswith(IMAGE_SUFFIXES))


def _walk_visible_files(folder: Path) -> list[Path]:
    files = []
    for root, dirs, names in os.walk(folder):
        dirs[:] = [d for d in dirs if not _is_hidden(d)]  # prune .git, .ipynb_checkpoints, ...
        files.extend(Path(root) / n for n in names if not _is_hidden(n))
    return files


def _is_hidden(name: str) -> bool:
    return name.startswith(".")


def unreadable_reason(path: PathLike) -> str | None:
    """Why `path` cannot be opened as a file (missing, a symlink loop, a folder, a FIFO, ...), or None.

    Readers call this before anything else opens, hashes or resolves the file, so every verb skips
    such a file with the reason `load_rgb` would give. (Empty files are left to the decoder.)"""
    path = Path(path)
    try:
        status = path.stat()
    except FileNotFoundError:
        return "broken symbolic link" if path.is_symlink() else "file not found"
    except OSError as exc:  # permission denied, symlink loop (ELOOP), ...
        return f"cannot read file ({exc.strerror or exc})"
    except ValueError as exc:  # NUL byte in the name
        return f"cannot read file ({exc})"
    if stat.S_ISDIR(status.st_mode):
        return "is a directory, not an image file"
    if not stat.S_ISREG(status.st_mode):  # opening a FIFO or device could block forever
        return "not a regular file"
    return None


def _check_is_readable_file(path: Path) -> None:
    reason = unreadable_reason(path)
    if reason is not None:
        raise ImageLoadError(path, reason)
    try:
        empty = path.stat().st_size == 0
    except OSError:  # removed since: opening it reports that
        empty = False
    if empty:
        raise ImageLoadError(path, "empty file")


def _decode(
    source: Path | IO[bytes],
    name: PathLike,
    *,
    max_pixels: int,
    target_size: int | None,
) -> np.ndarray:
    return _decode_bounded(source, name, max_pixels=max_pixels, target_size=target_size, max_side=None).rgb


def _decode_bounded(
    source: Path | IO[bytes],
    name: PathLike,
    *,
    max_pixels: int,
    target_size: int | None,
    max_side: int | None,
) -> DecodedImage:
    if max_pixels <= 0:
        raise ValueError(f"max_pixels must be positive, got {max_pixels}")
    with _open_lazily(source, name) as img:
        stored_size = img.size
        if max_side is None:
            _check_pixel_count(img, name, max_pixels)
        if img.format == "JPEG":
            _draft_jpeg(img, target_size, max_side)
        if max_side is not None:  # checked after JPEG scaling: what the decoder will really allocate
            _check_pixel_count(img, name, max_pixels, stored_size)
        _load_pixels(img, name)
        decoded_size = img.size
        _apply_exif_orientation(img, name)
        turned = img.size != decoded_size  # EXIF rotated by 90 or 270 degrees
        original_size = stored_size[::-1] if turned else stored_size
        upright = img if max_side is None else _reduce_to_fit(img, max_side)
        return DecodedImage(_to_rgb_array(upright, name), original_size)


def _draft_jpeg(img: Image.Image, target_size: int | None, max_side: int | None) -> None:
    """Ask libjpeg to decode at 1/2, 1/4 or 1/8 scale, never below what the caller needs."""
    width, height = img.size
    wanted = []
    if target_size is not None:
        wanted.append((target_size, target_size))
    if max_side is not None:  # keep the longer side >= max_side; _reduce_to_fit does the rest
        ratio = min(1.0, max_side / max(width, height))
        wanted.append((math.ceil(width * ratio), math.ceil(height * ratio)))
    if wanted:
        img.draft("RGB", (max(w for w, _ in wanted), max(h for _, h in wanted)))


# Image.reduce averages stored values: palette indices and 1-bit pixels must become colours first,
# and 16-bit grayscale is not supported by it (I keeps the 0..65535 range that _gray16_to_rgb expects).
_REDUCIBLE_AS = {"1": "L", "P": "RGBA", "PA": "RGBA", "I;16": "I", "I;16L": "I", "I;16B": "I", "I;16N": "I"}


def _reduce_to_fit(img: Image.Image, max_side: int) -> Image.Image:
    """Shrink by the smallest integer factor that brings the longer side to <= max_side."""
    factor = math.ceil(max(img.size) / max_side)
    if factor <= 1:
        return img
    if img.mode in _REDUCIBLE_AS:
        img = img.convert(_REDUCIBLE_AS[img.mode])
    return img.reduce(factor)


def _open_lazily(source: Path | IO[bytes], name: PathLike) -> Image.Image:
    """Read only the header; pixels are decoded later by `_load_pixels`."""
    try:
        return Image.open(source)
    except Image.DecompressionBombError as exc:
        raise ImageLoadError(name, f"image too large ({exc})") from exc
    except UnidentifiedImageError as exc:
        raise ImageLoadError(name, "not an image (cannot identify format)") from exc
    except FileNotFoundError as exc:  # removed after _check_is_readable_file
        raise ImageLoadError(name, "file not found") from exc
    except IsADirectoryError as exc:
        raise ImageLoadError(name, "is a directory, not an image file") from exc
    except PermissionError as exc:
        raise ImageLoadError(name, "cannot read file (permission denied)") from exc
    except Exception as exc:  # Pillow plugins raise many types on hostile headers
        raise ImageLoadError(name, f"truncated or corrupt image data ({exc})") from exc


def _check_pixel_count(
    img: Image.Image, name: PathLike, max_pixels: int, stored_size: tuple[int, int] | None = None
) -> None:
    """`img.size` is what the decoder will allocate; `stored_size`, when given, is named in the error."""
    width, height = img.size
    if width <= 0 or height <= 0:
        raise ImageLoadError(name, f"image has no pixels ({width}x{height})")
    if width * height > max_pixels:
        stored_width, stored_height = stored_size or img.size
        scaled = "" if (width, height) == (stored_width, stored_height) else f", {width}x{height} when scaled"
        raise ImageLoadError(
            name, f"image too large: {stored_width}x{stored_height} pixels{scaled} (limit {max_pixels})"
        )


def _load_pixels(img: Image.Image, name: PathLike) -> None:
    try:
        img.load()
    except Image.DecompressionBombError as exc:
        raise ImageLoadError(name, f"image too large ({exc})") from exc
    except Exception as exc:  # OSError, SyntaxError, ValueError, struct.error, zlib.error...
        raise ImageLoadError(name, f"truncated or corrupt image data ({exc})") from exc


def _apply_exif_orientation(img: Image.Image, name: PathLike) -> None:
    """Turn `img` upright in place: no full-size copy when there is nothing to turn."""
    try:
        ImageOps.exif_transpose(img, in_place=True)
    except Exception as exc:  # malformed EXIF blocks raise assorted errors
        raise ImageLoadError(name, f"corrupt EXIF metadata ({exc})") from exc


def _to_rgb_array(img: Image.Image, name: PathLike) -> np.ndarray:
    try:
        if img.mode in _SIXTEEN_BIT_GRAY_MODES:
            return _gray16_to_rgb(np.asarray(img))
        if img.mode in _ALPHA_MODES or "transparency" in img.info:
            return _composite_on_background(np.asarray(img.convert("RGBA")))
        return np.asarray(img.convert("RGB"), dtype=np.uint8).copy()
    except Exception as exc:
        raise ImageLoadError(name, f"unsupported pixel format (mode {img.mode}: {exc})") from exc


def _gray16_to_rgb(gray: np.ndarray) -> np.ndarray:
    values = np.clip(gray.astype(np.int64), 0, 65535)
    gray8 = ((values * 255 + 32767) // 65535).astype(np.uint8)  # rounded 0..65535 -> 0..255
    return np.repeat(gray8[:, :, None], 3, axis=2)


def _composite_on_background(rgba: np.ndarray) -> np.ndarray:
    colour = rgba[:, :, :3].astype(np.uint32)
    alpha = rgba[:, :, 3:4].astype(np.uint32)
    blended = (colour * alpha + _BACKGROUND * (255 - alpha) + 127) // 255
    return blended.astype(np.uint8)


def check_rgb(rgb: np.ndarray, who: str = "expected") -> None:
    """The one check of an HxWx3 uint8 RGB array (a programming error otherwise, hence ValueError)."""
    if not isinstance(rgb, np.ndarray) or rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        found = f"shape {rgb.shape} dtype {rgb.dtype}" if isinstance(rgb, np.ndarray) else type(rgb).__name__
        raise ValueError(f"{who} an HxWx3 uint8 RGB array, got {found}")


def _round_half_up(value: float) -> int:
    return math.floor(value + 0.5)
