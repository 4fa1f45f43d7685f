from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from agegender.config import AugmentConfig, ConfigError
from agegender.data.transforms import (
    ERASE_AREA,
    adjust_brightness_contrast,
    augment_batch,
    box_jitter_theta,
    check_augment,
    erase_random_rectangles,
    random_affine_grid,
    random_affine_theta,
    random_erase_mask,
    random_grayscale,
    random_jpeg,
    random_low_resolution,
    to_model_input,
)

NO_AUGMENT = AugmentConfig(hflip=0.0, rotation=0.0, zoom=0.0, shift=0.0, brightness=0.0, contrast=0.0)


def uint8_batch(n: int = 4, side: int = 16, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(n, side, side, 3), dtype=np.uint8)


def float_batch(n: int = 4, side: int = 16, seed: int = 0) -> torch.Tensor:
    return to_model_input(uint8_batch(n, side, seed))


def test_to_model_input_layout_dtype_and_range():
    images = np.zeros((2, 5, 7, 3), np.uint8)
    images[1, 2, 3] = (255, 0, 51)  # one RGB pixel: row 2, column 3
    x = to_model_input(images)
    assert x.shape == (2, 3, 5, 7)
    assert x.dtype == torch.float32
    assert x[1, :, 2, 3].tolist() == pytest.approx([1.0, 0.0, 0.2])  # channel order stays RGB
    assert float(x.sum()) == pytest.approx(1.2)
    assert 0.0 <= float(x.min()) and float(x.max()) <= 1.0


def test_to_model_input_memory_format():
    images = uint8_batch(2, 8)
    assert to_model_input(images, channels_last=True).is_contiguous(memory_format=torch.channels_last)
    plain = to_model_input(images, channels_last=False)
    assert plain.is_contiguous()
    torch.testing.assert_close(plain, to_model_input(images, channels_last=True), rtol=0, atol=0)


def test_to_model_input_accepts_a_uint8_tensor_and_leaves_the_input_alone():
    images = uint8_batch(2, 8)
    copy = images.copy()
    from_array = to_model_input(images)
    from_tensor = to_model_input(torch.from_numpy(images))
    torch.testing.assert_close(from_array, from_tensor, rtol=0, atol=0)
    np.testing.assert_array_equal(images, copy)


def test_augment_keeps_shape_and_range():
    x = float_batch()
    out = augment_batch(x, AugmentConfig(), torch.Generator().manual_seed(0))
    assert out.shape == x.shape
    assert out.dtype == torch.float32
    assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0
    assert not torch.allclose(out, x)  # the default config does change the images


def test_augment_does_not_modify_its_input():
    x = float_batch()
    before = x.clone()
    augment_batch(x, AugmentConfig(hflip=1.0), torch.Generator().manual_seed(0))
    torch.testing.assert_close(x, before, rtol=0, atol=0)


def test_augment_is_deterministic_for_a_seeded_generator():
    x = float_batch()
    a = augment_batch(x, AugmentConfig(), torch.Generator().manual_seed(42))
    b = augment_batch(x, AugmentConfig(), torch.Generator().manual_seed(42))
    c = augment_batch(x, AugmentConfig(), torch.Generator().manual_seed(43))
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert not torch.allclose(a, c)


def test_all_zero_config_is_identity():
    x = float_batch()
    out = augment_batch(x, NO_AUGMENT, torch.Generator().manual_seed(0))
    torch.testing.assert_close(out, x, rtol=0, atol=1e-5)


def test_zero_geometry_grid_samples_every_pixel_in_place():
    # Exercise the sampling path itself (augment_batch skips it when nothing is enabled).
    x = float_batch()
    grid = random_affine_grid(x.shape[0], x.shape[-1], NO_AUGMENT, torch.Generator().manual_seed(0))
    out = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    torch.testing.assert_close(out, x, rtol=0, atol=1e-5)
    torch.testing.assert_close(
        adjust_brightness_contrast(x.clone(), NO_AUGMENT, torch.Generator()), x, rtol=0, atol=1e-6
    )


def test_hflip_mirrors_the_image():
    x = float_batch()
    out = augment_batch(x, AugmentConfig(hflip=1.0, rotation=0, zoom=0, shift=0, brightness=0, contrast=0), torch.Generator().manual_seed(0))
    torch.testing.assert_close(out, x.flip(-1), rtol=0, atol=1e-5)


def test_brightness_only_shifts_each_image_by_a_constant():
    # (x - mean) * 1 + mean * b = x + mean * (b - 1): a per-image constant offset, away from the clamps.
    x = torch.full((3, 3, 8, 8), 0.5) + torch.linspace(-0.05, 0.05, 64).view(1, 1, 8, 8)
    config = AugmentConfig(hflip=0, rotation=0, zoom=0, shift=0, brightness=0.2, contrast=0)
    out = augment_batch(x, config, torch.Generator().manual_seed(1))
    offsets = (out - x).flatten(1)  # (N, C*H*W)
    torch.testing.assert_close(offsets, offsets[:, :1].expand_as(offsets), rtol=0, atol=1e-6)
    assert float(offsets[:, 0].abs().max()) <= 0.5 * 0.2 + 1e-6
    assert float(offsets[:, 0].abs().max()) > 0


def test_contrast_only_keeps_the_mean():
    x = torch.full((3, 3, 8, 8), 0.5) + torch.linspace(-0.1, 0.1, 64).view(1, 1, 8, 8)
    config = AugmentConfig(hflip=0, rotation=0, zoom=0, shift=0, brightness=0, contrast=0.3)
    out = augment_batch(x, config, torch.Generator().manual_seed(2))
    torch.testing.assert_close(out.mean(dim=(1, 2, 3)), x.mean(dim=(1, 2, 3)), rtol=0, atol=1e-6)
    assert not torch.allclose(out, x)


def test_erase_mask_is_one_rectangle_of_the_configured_area_per_image():
    mask = random_erase_mask(200, 48, 64, 1.0, torch.Generator().manual_seed(3))[:, 0]  # (N, H, W)
    assert mask.shape == (200, 48, 64)
    rows, cols = mask.any(dim=2), mask.any(dim=1)  # (N, H), (N, W)
    # A rectangle is exactly the product of the rows and columns it touches, each one contiguous run.
    torch.testing.assert_close(mask, rows[:, :, None] & cols[:, None, :], rtol=0, atol=0)
    for covered in (rows, cols):
        starts = covered.int().diff(dim=1).clamp(min=0).sum(dim=1) + covered[:, 0].int()
        assert starts.max() == 1
    area = mask.float().mean(dim=(1, 2))  # share of the image
    assert float(area.min()) > ERASE_AREA[0] / 2 and float(area.max()) < ERASE_AREA[1] * 1.2
    assert float(area.max()) > 0.15  # the range is used, not just its low end


def test_erase_probability_decides_how_many_images_get_a_rectangle():
    generator = torch.Generator().manual_seed(4)
    assert not random_erase_mask(50, 16, 16, 0.0, generator).any()
    erased = random_erase_mask(4000, 16, 16, 0.3, generator).flatten(1).any(dim=1).float().mean()
    assert float(erased) == pytest.approx(0.3, abs=0.03)


def test_erasing_fills_the_rectangle_with_noise_and_leaves_the_rest():
    x = torch.full((8, 3, 32, 32), 0.5).contiguous(memory_format=torch.channels_last)
    out = erase_random_rectangles(x, 1.0, torch.Generator().manual_seed(5))
    assert out.shape == x.shape and out.is_contiguous(memory_format=torch.channels_last)
    changed = (out != x).any(dim=1)  # (N, H, W)
    assert changed.flatten(1).any(dim=1).all()  # every image got its rectangle
    assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0
    assert float(out[0][:, changed[0]].std()) > 0.2  # noise, not a flat fill (uniform: std 0.29)


def test_erasing_comes_last_and_leaves_the_other_augmentations_draws_alone():
    # Turning erasing on must not change any other augmentation (same seed, same earlier draws),
    # so recipes that never erase reproduce exactly; only the erased pixels may differ.
    x = float_batch(n=16, side=32)
    plain = augment_batch(x, AugmentConfig(), torch.Generator().manual_seed(6))
    erased = augment_batch(x, AugmentConfig(erase=1.0), torch.Generator().manual_seed(6))
    differs = (plain != erased).any(dim=1)  # (N, H, W)
    assert differs.flatten(1).any(dim=1).all()
    assert float(differs.float().mean()) < ERASE_AREA[1]


# --- robustness augmentations: grayscale, low resolution, JPEG, detector-box jitter ----------------

ROBUSTNESS_OFF = dict(grayscale=0.0, lowres=0.0, jpeg=0.0, box_jitter=0.0)


def test_robustness_augmentations_are_off_by_default_and_draw_nothing():
    # The recipe as it was before they existed, spelled out: its output and the generator's state
    # afterwards must be bit-identical, so every seeded run reproduces.
    assert all(getattr(AugmentConfig(), key) == value for key, value in ROBUSTNESS_OFF.items())
    x = float_batch(n=8, side=32)
    config, before, after = AugmentConfig(), torch.Generator().manual_seed(7), torch.Generator().manual_seed(7)
    grid = random_affine_grid(x.shape[0], x.shape[-1], config, before)
    expected = adjust_brightness_contrast(
        F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False), config, before
    )
    torch.testing.assert_close(augment_batch(x, config, after), expected, rtol=0, atol=0)
    assert torch.equal(after.get_state(), before.get_state())


def test_grayscale_gives_equal_channels_with_the_configured_share():
    x = float_batch(n=4000, side=2)
    out = random_grayscale(x, 0.3, torch.Generator().manual_seed(8))
    grey = (out[:, 0] == out[:, 1]).all(dim=(1, 2)) & (out[:, 1] == out[:, 2]).all(dim=(1, 2))  # (N,)
    assert float(grey.float().mean()) == pytest.approx(0.3, abs=0.03)
    torch.testing.assert_close(out[~grey], x[~grey], rtol=0, atol=0)  # the others are untouched
    luma = 0.299 * x[grey, 0] + 0.587 * x[grey, 1] + 0.114 * x[grey, 2]
    torch.testing.assert_close(out[grey, 0], luma)


def test_low_resolution_removes_detail_but_keeps_shape_and_layout():
    x = float_batch(n=6, side=32)  # uniform noise: all detail
    out = random_low_resolution(x, 1.0, (0.25, 0.5), torch.Generator().manual_seed(9))
    assert out.shape == x.shape and out.is_contiguous(memory_format=torch.channels_last)
    neighbour_difference = lambda t: (t[..., 1:] - t[..., :-1]).abs().mean(dim=(1, 2, 3))  # noqa: E731
    assert (neighbour_difference(out) < 0.5 * neighbour_difference(x)).all()
    assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0


def test_jpeg_changes_pixels_keeps_shape_and_lower_quality_loses_more():
    x = float_batch(n=4, side=32)
    errors = {}
    for quality in (10, 95):
        out = random_jpeg(x, 1.0, (quality, quality), torch.Generator().manual_seed(10))
        assert out.shape == x.shape and out.dtype == torch.float32
        assert out.is_contiguous(memory_format=torch.channels_last)
        assert ((out * 255).round() == out * 255).all()  # decoded 8-bit pixels
        errors[quality] = float((out - x).abs().mean())
    assert 0 < errors[95] < errors[10]


def test_probabilities_decide_the_share_of_jpeg_and_low_resolution_images():
    x = float_batch(n=400, side=8)
    for augment in (random_jpeg, random_low_resolution):
        limits = (30, 90) if augment is random_jpeg else (0.25, 0.75)
        out = augment(x, 0.25, limits, torch.Generator().manual_seed(11))
        changed = (out != x).flatten(1).any(dim=1).float().mean()
        assert float(changed) == pytest.approx(0.25, abs=0.07), augment.__name__
        assert augment(x, 0.0, limits, torch.Generator()).equal(x)


def _bright_square(n: int, side: int = 32) -> torch.Tensor:
    x = torch.zeros(n, 3, side, side)
    x[:, :, 12:20, 12:20] = 1.0  # a "face" in the middle of the crop
    return x


def _centre_and_area(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    weight = x[:, 0]  # (N, H, W)
    coords = torch.arange(x.shape[-1], dtype=torch.float32) + 0.5
    area = weight.sum(dim=(1, 2))
    centre_x = (weight.sum(dim=1) * coords).sum(dim=1) / area
    centre_y = (weight.sum(dim=2) * coords).sum(dim=1) / area
    return torch.stack([centre_x, centre_y], 1), area


def test_box_jitter_moves_and_rescales_the_face_with_the_configured_share():
    x = _bright_square(600)
    geometry_off = dict(hflip=0.0, rotation=0.0, zoom=0.0, shift=0.0, brightness=0.0, contrast=0.0)
    config = AugmentConfig(**geometry_off, box_jitter=0.5, box_shift=0.1, box_scale=0.15, box_rotation=5.0)
    out = augment_batch(x, config, torch.Generator().manual_seed(12))
    centre, area = _centre_and_area(out)
    moved = (centre - 16.0).abs().max(dim=1).values  # pixels
    jittered = moved > 0.05
    assert float(jittered.float().mean()) == pytest.approx(0.5, abs=0.07)
    assert float(moved.max()) > 2.0 and float(moved.max()) <= 0.1 * 32 + 0.5  # up to box_shift of the side
    ratio = area[jittered] / 64.0  # a larger box shows a smaller face: area / (1 +- 0.15)^2
    assert float(ratio.min()) < 0.85 and float(ratio.max()) > 1.15
    torch.testing.assert_close(out[~jittered], x[~jittered], rtol=0, atol=1e-5)


def test_box_jitter_is_the_crop_and_the_training_warp_comes_after_it_in_one_resampling():
    # With hflip=1 as the only training warp, the result must be: re-crop as the box says, then mirror.
    x = _bright_square(8)
    geometry_off = dict(rotation=0.0, zoom=0.0, shift=0.0, brightness=0.0, contrast=0.0)
    config = AugmentConfig(**geometry_off, hflip=1.0, box_jitter=1.0, box_scale=0.1, box_rotation=0.0, box_shift=0.15)
    out = augment_batch(x, config, torch.Generator().manual_seed(13))
    replay = torch.Generator().manual_seed(13)
    random_affine_theta(8, config, replay)  # the flip's draws come first
    crop_grid = F.affine_grid(box_jitter_theta(8, config, replay), [8, 3, 32, 32], align_corners=False)
    expected = F.grid_sample(x, crop_grid, mode="bilinear", padding_mode="border", align_corners=False).flip(-1)
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-5)
    assert not torch.allclose(out, x.flip(-1))  # the box did move the faces


@pytest.mark.parametrize(
    "change, message",
    [
        (dict(jpeg=1.5), "augment.jpeg is a probability"),
        (dict(jpeg_quality=(90, 30)), "augment.jpeg_quality must satisfy"),
        (dict(jpeg_quality=(30, 60, 90)), r"augment.jpeg_quality must be \[low, high\]"),
        (dict(lowres_scale=(0.0, 0.5)), "augment.lowres_scale must satisfy"),
        (dict(box_scale=1.0), "augment.box_scale must be in"),
    ],
)
def test_unusable_robustness_settings_are_refused(change, message):
    check_augment(AugmentConfig())
    with pytest.raises(ConfigError, match=message):
        check_augment(AugmentConfig(**change))


def test_to_model_input_of_a_mirrored_view_is_the_mirrored_input():
    images = uint8_batch(2, 8)
    mirrored = to_model_input(images[:, :, ::-1], channels_last=False)  # the view mirror averaging passes
    torch.testing.assert_close(mirrored, to_model_input(images).flip(3), rtol=0, atol=0)


@pytest.mark.parametrize("channels_last", [True, False])
def test_to_model_input_with_mirrors_appends_each_mirror_image(channels_last):
    images = uint8_batch(3, 8)
    both = to_model_input(images, channels_last, with_mirrors=True)
    alone = to_model_input(images, channels_last)
    assert both.shape == (6, 3, 8, 8)
    torch.testing.assert_close(both, torch.cat([alone, alone.flip(3)]), rtol=0, atol=0)
