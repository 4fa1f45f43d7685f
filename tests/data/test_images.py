from __future__ import annotations

import io
import pickle
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFile

from agegender.data.images import (
    DEFAULT_MAX_PIXELS,
    ImageLoadError,
    crop_with_margin,
    decode_rgb_bytes,
    decode_rgb_bytes_bounded,
    list_image_files,
    load_rgb,
    resize_square,
)

RED = (255, 0, 0)


def _gradient(height: int = 24, width: int = 32) -> np.ndarray:
    ys, xs = np.mgrid[0:height, 0:width]
    return np.stack([xs * 7 % 256, ys * 9 % 256, (xs + ys) % 256], axis=2).astype(np.uint8)


def _encode(img: Image.Image, fmt: str, **params: object) -> bytes:
    buffer = io.BytesIO()
    img.save(buffer, fmt, **params)
    return buffer.getvalue()


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG whose IHDR claims width x height but which holds no pixel data."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit grayscale
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b"")


def _assert_fails(path: Path, *fragments: str) -> ImageLoadError:
    with pytest.raises(ImageLoadError) as caught:
        load_rgb(path)
    message = str(caught.value)
    assert path.name in message
    for fragment in fragments:
        assert fragment in caught.value.reason
    assert caught.value.path == path
    return caught.value


# --- files that must be rejected -------------------------------------------


def test_missing_file(tmp_path: Path) -> None:
    _assert_fails(tmp_path / "nope.jpg", "file not found")


def test_directory(tmp_path: Path) -> None:
    folder = tmp_path / "folder.jpg"
    folder.mkdir()
    _assert_fails(folder, "directory")


def test_zero_byte_file(tmp_path: Path) -> None:
    _assert_fails(_write(tmp_path / "empty.jpg", b""), "empty file")


def test_text_file_named_jpg(tmp_path: Path) -> None:
    path = _write(tmp_path / "notes.jpg", b"this is not a picture\n" * 10)
    _assert_fails(path, "not an image (cannot identify format)")


@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_truncated_image_raises_instead_of_decoding_grey(tmp_path: Path, fmt: str) -> None:
    data = _encode(Image.fromarray(_gradient(64, 64)), fmt)
    path = _write(tmp_path / f"cut.{fmt.lower()}", data[: len(data) // 2])
    _assert_fails(path, "truncated or corrupt image data")
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False  # never flipped globally


def test_huge_image_rejected_from_header_before_decoding(tmp_path: Path) -> None:
    # No pixel data at all: decoding would fail as truncated, so this reason
    # proves the size check ran on the header alone.
    path = _write(tmp_path / "huge.png", _png_header_only(8000, 8000))
    error = _assert_fails(path)
    assert error.reason == f"image too large: 8000x8000 pixels (limit {DEFAULT_MAX_PIXELS})"


def test_pillow_decompression_bomb_is_wrapped(tmp_path: Path) -> None:
    path = _write(tmp_path / "bomb.png", _png_header_only(20000, 20000))
    _assert_fails(path, "image too large")
    assert Image.MAX_IMAGE_PIXELS == 89_478_485  # Pillow's default, untouched


def test_custom_pixel_limit(tmp_path: Path) -> None:
    path = _write(tmp_path / "small.png", _encode(Image.new("RGB", (12, 10)), "PNG"))
    with pytest.raises(ImageLoadError, match=r"image too large: 12x10 pixels \(limit 100\)"):
        load_rgb(path, max_pixels=100)
    assert load_rgb(path, max_pixels=120).shape == (10, 12, 3)


def test_random_corruption_only_raises_image_load_error() -> None:
    data = bytearray(_encode(Image.fromarray(_gradient()), "PNG"))
    rng = np.random.default_rng(0)
    for _ in range(20):
        damaged = bytearray(data)
        for index in rng.integers(0, len(damaged), size=4):
            damaged[index] = int(rng.integers(0, 256))
        try:
            decode_rgb_bytes(bytes(damaged))
        except ImageLoadError:
            pass


def test_error_pickles_for_dataloader_workers() -> None:
    error = ImageLoadError("a.jpg", "empty file")
    clone = pickle.loads(pickle.dumps(error))
    assert (clone.path, clone.reason, str(clone)) == ("a.jpg", "empty file", "a.jpg: empty file")


# --- pixel formats ---------------------------------------------------------


def test_rgb_png_round_trips_exactly(tmp_path: Path) -> None:
    rgb = _gradient()
    path = _write(tmp_path / "plain.png", _encode(Image.fromarray(rgb), "PNG"))
    loaded = load_rgb(path)
    assert loaded.dtype == np.uint8
    np.testing.assert_array_equal(loaded, rgb)


def test_grayscale(tmp_path: Path) -> None:
    gray = np.array([[0, 100], [200, 255]], dtype=np.uint8)
    loaded = load_rgb(_write(tmp_path / "gray.png", _encode(Image.fromarray(gray, "L"), "PNG")))
    assert loaded.shape == (2, 2, 3)
    np.testing.assert_array_equal(loaded, np.repeat(gray[:, :, None], 3, axis=2))


def test_one_bit(tmp_path: Path) -> None:
    bits = Image.fromarray(np.array([[0, 255], [255, 0]], dtype=np.uint8)).convert("1")
    loaded = load_rgb(_write(tmp_path / "bits.png", _encode(bits, "PNG")))
    np.testing.assert_array_equal(loaded[:, :, 0], [[0, 255], [255, 0]])


def test_la_composited_on_white(tmp_path: Path) -> None:
    la = Image.new("LA", (2, 1))
    la.putpixel((0, 0), (100, 255))  # opaque
    la.putpixel((1, 0), (0, 0))  # fully transparent black
    loaded = load_rgb(_write(tmp_path / "la.png", _encode(la, "PNG")))
    np.testing.assert_array_equal(loaded[0], [[100] * 3, [255] * 3])


def test_rgba_composited_on_white(tmp_path: Path) -> None:
    rgba = Image.new("RGBA", (3, 1))
    rgba.putpixel((0, 0), (*RED, 255))
    rgba.putpixel((1, 0), (0, 0, 255, 0))
    rgba.putpixel((2, 0), (0, 0, 0, 128))
    loaded = load_rgb(_write(tmp_path / "rgba.png", _encode(rgba, "PNG")))
    np.testing.assert_array_equal(loaded[0], [RED, (255, 255, 255), (127, 127, 127)])


def test_palette_with_transparency(tmp_path: Path) -> None:
    palette = Image.new("P", (2, 1))
    palette.putpalette([0, 0, 0, *RED] + [0] * (256 - 2) * 3)
    palette.putpixel((0, 0), 0)
    palette.putpixel((1, 0), 1)
    loaded = load_rgb(_write(tmp_path / "pal.png", _encode(palette, "PNG", transparency=0)))
    np.testing.assert_array_equal(loaded[0], [(255, 255, 255), RED])


def test_cmyk_jpeg(tmp_path: Path) -> None:
    cmyk = Image.new("CMYK", (16, 16), (0, 255, 255, 0))  # red in CMYK
    loaded = load_rgb(_write(tmp_path / "cmyk.jpg", _encode(cmyk, "JPEG", quality=95)))
    assert loaded.shape == (16, 16, 3)
    assert np.abs(loaded.astype(int) - RED).max() <= 8


def test_sixteen_bit_png_is_scaled_not_clipped(tmp_path: Path) -> None:
    values = np.array([[0, 257 * 100], [32768, 65535]], dtype=np.uint16)
    path = _write(tmp_path / "deep.png", _encode(Image.fromarray(values), "PNG"))
    loaded = load_rgb(path)
    np.testing.assert_array_equal(loaded[:, :, 0], [[0, 100], [128, 255]])
    np.testing.assert_array_equal(loaded[:, :, 0], loaded[:, :, 2])


def test_exif_orientation_applied(tmp_path: Path) -> None:
    wide = np.zeros((20, 40, 3), dtype=np.uint8)
    wide[:, :20] = RED
    wide[:, 20:] = (0, 0, 255)
    exif = Image.Exif()
    exif[0x0112] = 6  # stored sideways: display needs 90 degrees clockwise
    path = _write(tmp_path / "rotated.jpg", _encode(Image.fromarray(wide), "JPEG", exif=exif))
    loaded = load_rgb(path)
    assert loaded.shape == (40, 20, 3)
    assert loaded[5, 10, 0] > 200 and loaded[5, 10, 2] < 50  # left half (red) now on top
    assert loaded[35, 10, 2] > 200 and loaded[35, 10, 0] < 50


def test_target_size_decodes_large_jpeg_at_reduced_scale(tmp_path: Path) -> None:
    path = _write(tmp_path / "big.jpg", _encode(Image.new("RGB", (400, 300), RED), "JPEG"))
    assert load_rgb(path).shape == (300, 400, 3)
    reduced = load_rgb(path, target_size=64)
    assert reduced.shape == (75, 100, 3)  # 1/4 scale keeps the short side >= 64


def test_decode_rgb_bytes() -> None:
    rgb = _gradient()
    np.testing.assert_array_equal(decode_rgb_bytes(_encode(Image.fromarray(rgb), "PNG")), rgb)
    with pytest.raises(ImageLoadError, match="^photo.png: empty file$"):
        decode_rgb_bytes(b"", name="photo.png")
    with pytest.raises(ImageLoadError, match=r"^<upload>: not an image \(cannot identify format\)$"):
        decode_rgb_bytes(b"<html></html>")


# --- bounded decoding (uploads) ---------------------------------------------


def test_bounded_decode_refuses_huge_png_from_its_header() -> None:
    # No pixel data behind the header: "too large" (not "truncated") proves nothing was decoded.
    with pytest.raises(ImageLoadError, match=r"^big.png: image too large: 7000x7000 pixels \(limit 1000000\)$"):
        decode_rgb_bytes_bounded(_png_header_only(7000, 7000), name="big.png", max_side=500, max_pixels=1_000_000)


def test_bounded_decode_scales_jpeg_inside_the_decoder() -> None:
    data = _encode(Image.new("RGB", (1600, 1200), RED), "JPEG")
    # 1.92 Mpx is over the limit at full size, but libjpeg decodes it at 1/2 (800x600) directly,
    # the smallest of its scales that keeps the longer side >= 500; a 2x box average follows.
    decoded = decode_rgb_bytes_bounded(data, max_side=500, max_pixels=500_000)
    assert decoded.rgb.shape == (300, 400, 3) and decoded.original_size == (1600, 1200)
    assert decoded.scale == (4.0, 4.0)
    with pytest.raises(ImageLoadError, match=r"image too large: 1600x1200 pixels, 800x600 when scaled"):
        decode_rgb_bytes_bounded(data, max_side=500, max_pixels=400_000)


def test_bounded_decode_reduces_other_formats_by_an_integer_factor() -> None:
    rgb = _gradient(90, 120)
    decoded = decode_rgb_bytes_bounded(_encode(Image.fromarray(rgb), "PNG"), max_side=50)
    assert decoded.rgb.shape == (30, 40, 3) and decoded.original_size == (120, 90)  # factor ceil(120 / 50) = 3
    expected = rgb.reshape(30, 3, 40, 3, 3).mean(axis=(1, 3))  # 3x3 box average
    assert np.abs(decoded.rgb.astype(float) - expected).max() <= 1
    small = decode_rgb_bytes_bounded(_encode(Image.fromarray(rgb), "PNG"), max_side=120)
    np.testing.assert_array_equal(small.rgb, rgb)  # fits: decoded exactly as decode_rgb_bytes does


def test_bounded_decode_averages_palette_colours_not_indices() -> None:
    palette = Image.new("P", (64, 64))
    palette.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)  # index 0 red, index 1 blue
    palette.paste(1, (0, 0, 64, 32))  # top half blue
    decoded = decode_rgb_bytes_bounded(_encode(palette, "PNG"), max_side=16)
    assert decoded.rgb.shape == (16, 16, 3)
    assert tuple(decoded.rgb[0, 0]) == (0, 0, 255) and tuple(decoded.rgb[-1, -1]) == (255, 0, 0)


def test_bounded_decode_reports_the_upright_original_size() -> None:
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    data = _encode(Image.new("RGB", (200, 100), RED), "JPEG", exif=exif.tobytes())
    decoded = decode_rgb_bytes_bounded(data, max_side=50)
    assert decoded.original_size == (100, 200) and decoded.rgb.shape == (50, 25, 3)


# --- geometry --------------------------------------------------------------


def test_resize_square_down_and_up() -> None:
    small = resize_square(_gradient(30, 40), 16)
    assert small.shape == (16, 16, 3) and small.dtype == np.uint8
    flat = np.full((8, 8, 3), 77, dtype=np.uint8)
    np.testing.assert_array_equal(resize_square(flat, 32), np.full((32, 32, 3), 77))


def test_resize_square_rejects_non_rgb() -> None:
    with pytest.raises(ValueError, match="HxWx3 uint8"):
        resize_square(np.zeros((4, 4), dtype=np.uint8), 2)


def test_crop_with_zero_margin_returns_box_region() -> None:
    rgb = _gradient(50, 60)
    np.testing.assert_array_equal(crop_with_margin(rgb, (10, 20, 30, 40), 0.0), rgb[20:40, 10:30])


def test_crop_is_square_around_box_centre() -> None:
    rgb = _gradient(50, 60)
    crop = crop_with_margin(rgb, (20, 10, 30, 30), 0.0)  # 10 wide, 20 tall
    np.testing.assert_array_equal(crop, rgb[10:30, 15:35])


def test_crop_at_border_is_edge_padded() -> None:
    rgb = _gradient(50, 60)
    crop = crop_with_margin(rgb, (0, 0, 20, 20), 0.5)  # side 40, starts at (-10, -10)
    assert crop.shape == (40, 40, 3)
    np.testing.assert_array_equal(crop[10:, 10:], rgb[0:30, 0:30])
    np.testing.assert_array_equal(crop[:10, :10], np.broadcast_to(rgb[0, 0], (10, 10, 3)))
    np.testing.assert_array_equal(crop[:10, 10:], np.broadcast_to(rgb[0, 0:30], (10, 30, 3)))


def test_crop_rejects_empty_box() -> None:
    with pytest.raises(ValueError, match="x2 > x1"):
        crop_with_margin(_gradient(), (5, 5, 5, 9), 0.2)


# --- folder listing --------------------------------------------------------


def test_list_image_files(tmp_path: Path) -> None:
    names = [
        "b.JPG",
        "a.png",
        "notes.txt",
        ".hidden.jpg",
        "sub/25_0_1_2017.jpg.chip.jpg",
        "sub/x.WebP",
        ".cache/inside.jpg",
    ]
    for name in names:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"x")
    found = [p.relative_to(tmp_path).as_posix() for p in list_image_files(tmp_path)]
    assert found == ["a.png", "b.JPG", "sub/25_0_1_2017.jpg.chip.jpg", "sub/x.WebP"]
    top_level = list_image_files(tmp_path, recursive=False)
    assert [p.name for p in top_level] == ["a.png", "b.JPG"]
