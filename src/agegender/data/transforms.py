"""Pixel conversion and training augmentation: the only place either lives.

Images travel as uint8 (N, H, W, 3) RGB arrays; `to_model_input` is the one conversion to
the float tensor every model takes (normalisation by mean/std happens inside the model, so
training, evaluation, prediction and ONNX export cannot disagree about it).
"""

from __future__ import annotations

import math

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from agegender.config import AugmentConfig, ConfigError


def to_model_input(images: np.ndarray | torch.Tensor, channels_last: bool = True, with_mirrors: bool = False) -> torch.Tensor:
    """uint8 (N, H, W, 3) RGB -> float32 (N, 3, H, W) in [0, 1]; `with_mirrors`: (2N, 3, H, W), the N images
    followed by their mirror images (mirror averaging's one batch)."""
    if not channels_last and isinstance(images, np.ndarray):
        # Planar for onnxruntime: the uint8 bytes moved to (N, 3, H, W) first, then one float pass per view
        # straight into the batch; a third of the time of torch's strided float copy, with the same values,
        # and no uint8 copy of the mirrored faces.
        planar = np.ascontiguousarray(images.transpose(0, 3, 1, 2))
        views = [planar, planar[..., ::-1]] if with_mirrors else [planar]
        batch = np.empty((len(views) * len(planar), *planar.shape[1:]), np.float32)
        for i, view in enumerate(views):
            np.divide(view, np.float32(255.0), out=batch[i * len(planar) : (i + 1) * len(planar)])
        return torch.from_numpy(batch)
    tensor = torch.as_tensor(np.ascontiguousarray(images)) if isinstance(images, np.ndarray) else images  # views too
    tensor = tensor.permute(0, 3, 1, 2).float().div_(255.0)  # (N, 3, H, W)
    if with_mirrors:
        tensor = torch.cat([tensor, tensor.flip(-1)])
    memory = torch.channels_last if channels_last else torch.contiguous_format
    return tensor.contiguous(memory_format=memory)


def _uniform(n: int, limit: float, generator: torch.Generator) -> torch.Tensor:
    return (torch.rand(n, generator=generator) * 2 - 1) * limit


def random_affine_grid(n: int, size: int, config: AugmentConfig, generator: torch.Generator) -> torch.Tensor:
    """Sampling grids for random flip, rotation, zoom and shift, one per image. (N, H, W, 2)"""
    return F.affine_grid(random_affine_theta(n, config, generator), [n, 3, size, size], align_corners=False)


def random_affine_theta(n: int, config: AugmentConfig, generator: torch.Generator) -> torch.Tensor:
    """The affine maps behind `random_affine_grid`. (N, 2, 3)"""
    angle = _uniform(n, math.radians(config.rotation), generator)
    scale = 1.0 + _uniform(n, config.zoom, generator)
    flip = torch.where(torch.rand(n, generator=generator) < config.hflip, -1.0, 1.0)
    shift = _uniform(2 * n, 2 * config.shift, generator).view(n, 2)  # grid coordinates span 2
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack(
        [torch.stack([cos * flip, -sin, shift[:, 0]], 1), torch.stack([sin * flip, cos, shift[:, 1]], 1)], 1
    )  # (N, 2, 3)
    return theta


def box_jitter_theta(n: int, config: AugmentConfig, generator: torch.Generator) -> torch.Tensor:
    """Affine maps that re-crop each face as a detector's box might have, kept with probability
    `box_jitter` (identity otherwise): side scaled by up to `box_scale` (a larger box shows a
    smaller face), centre moved by up to `box_shift` of the side, turned by up to `box_rotation`. (N, 2, 3)
    """
    scale = 1.0 + _uniform(n, config.box_scale, generator)
    shift = _uniform(2 * n, 2 * config.box_shift, generator).view(n, 2)  # grid coordinates span 2
    angle = _uniform(n, math.radians(config.box_rotation), generator)
    keep = torch.rand(n, generator=generator) < config.box_jitter
    scale, angle = torch.where(keep, scale, 1.0), torch.where(keep, angle, 0.0)
    shift = torch.where(keep[:, None], shift, 0.0)
    cos, sin = torch.cos(angle) * scale, torch.sin(angle) * scale
    return torch.stack(
        [torch.stack([cos, -sin, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)], 1
    )  # (N, 2, 3)


def _then(first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
    """Sampling through `second`'s map, then `first`'s: one resampling for two warps. (N, 2, 3)"""
    bottom = torch.tensor([0.0, 0.0, 1.0]).expand(first.shape[0], 1, 3)
    return (torch.cat([first, bottom], 1) @ torch.cat([second, bottom], 1))[:, :2]


def adjust_brightness_contrast(x: torch.Tensor, config: AugmentConfig, generator: torch.Generator) -> torch.Tensor:
    n = x.shape[0]
    brightness = (1.0 + _uniform(n, config.brightness, generator)).view(n, 1, 1, 1)
    contrast = (1.0 + _uniform(n, config.contrast, generator)).view(n, 1, 1, 1)
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return ((x - mean) * contrast + mean * brightness).clamp_(0.0, 1.0)


# Random erasing (Zhong et al., 2017), torchvision's defaults: the rectangle covers 2-33% of the
# image with an aspect ratio (height / width) between 0.3 and 3.3, drawn log-uniformly.
ERASE_AREA = (0.02, 0.33)
ERASE_ASPECT = (0.3, 3.3)


def random_erase_mask(n: int, height: int, width: int, probability: float, generator: torch.Generator) -> torch.Tensor:
    """One random rectangle per image, kept with `probability`. (N, 1, H, W) bool, True = erase."""
    area = ERASE_AREA[0] + torch.rand(n, generator=generator) * (ERASE_AREA[1] - ERASE_AREA[0])  # of the image
    low, high = math.log(ERASE_ASPECT[0]), math.log(ERASE_ASPECT[1])
    aspect = torch.exp(low + torch.rand(n, generator=generator) * (high - low))
    box_height = (torch.sqrt(area * aspect) * height).clamp(max=height)
    box_width = (torch.sqrt(area / aspect) * width).clamp(max=width)
    top = torch.rand(n, generator=generator) * (height - box_height)
    left = torch.rand(n, generator=generator) * (width - box_width)
    keep = torch.rand(n, generator=generator) < probability
    rows, cols = _covered(height, top, box_height), _covered(width, left, box_width)  # (N, H), (N, W)
    return (rows[:, :, None] & cols[:, None, :] & keep[:, None, None]).unsqueeze(1)


def _covered(size: int, start: torch.Tensor, length: torch.Tensor) -> torch.Tensor:
    """Which of `size` pixels have their centre in [start, start + length), per image. (N, size) bool"""
    centres = torch.arange(size, dtype=torch.float32) + 0.5
    return (centres >= start[:, None]) & (centres < (start + length)[:, None])


def erase_random_rectangles(x: torch.Tensor, probability: float, generator: torch.Generator) -> torch.Tensor:
    """Random erasing of a float batch (N, 3, H, W): a rectangle of uniform noise, so no colour is a tell."""
    mask = random_erase_mask(x.shape[0], x.shape[-2], x.shape[-1], probability, generator)
    noise = torch.rand(x.shape, generator=generator).contiguous(memory_format=_memory_format(x))
    return torch.where(mask, noise, x)


def _memory_format(x: torch.Tensor) -> torch.memory_format:
    return torch.channels_last if x.is_contiguous(memory_format=torch.channels_last) else torch.contiguous_format


# ITU-R BT.601 luma, what JPEG and most black-and-white conversions use.
LUMA_WEIGHTS = (0.299, 0.587, 0.114)


def random_grayscale(x: torch.Tensor, probability: float, generator: torch.Generator) -> torch.Tensor:
    """A float batch (N, 3, H, W) with each image turned grey (luma in all channels) with `probability`."""
    keep = torch.rand(x.shape[0], generator=generator) < probability
    weights = torch.tensor(LUMA_WEIGHTS, dtype=x.dtype).view(1, 3, 1, 1)
    gray = (x * weights).sum(dim=1, keepdim=True).expand_as(x)  # (N, 3, H, W), equal channels
    return torch.where(keep.view(-1, 1, 1, 1), gray, x).contiguous(memory_format=_memory_format(x))


def random_low_resolution(
    x: torch.Tensor, probability: float, scale_range: tuple[float, ...], generator: torch.Generator
) -> torch.Tensor:
    """Shrink each image by a factor from `scale_range` (antialiased) and enlarge it back, with
    `probability`: the detail a low-resolution or out-of-focus camera loses. (N, 3, H, W)"""
    low, high = scale_range
    scale = low + torch.rand(x.shape[0], generator=generator) * (high - low)
    keep = torch.rand(x.shape[0], generator=generator) < probability
    out = x.clone()
    height, width = x.shape[-2:]
    for i in torch.nonzero(keep).flatten().tolist():
        small_size = (max(1, round(height * float(scale[i]))), max(1, round(width * float(scale[i]))))
        small = F.interpolate(x[i : i + 1], size=small_size, mode="bilinear", antialias=True, align_corners=False)
        out[i] = F.interpolate(small, size=(height, width), mode="bilinear", align_corners=False)[0].clamp_(0.0, 1.0)
    return out


def random_jpeg(
    x: torch.Tensor, probability: float, quality_range: tuple[int, ...], generator: torch.Generator
) -> torch.Tensor:
    """Re-compress each image as JPEG (OpenCV; quality drawn from `quality_range`) with `probability`:
    the blocks and colour bleeding of compressed photos and video. (N, 3, H, W), values on 1/255 steps"""
    low, high = quality_range
    quality = low + (torch.rand(x.shape[0], generator=generator) * (high - low + 1)).long().clamp_(max=high - low)
    keep = torch.rand(x.shape[0], generator=generator) < probability
    out = x.clone()
    for i in torch.nonzero(keep).flatten().tolist():
        rgb = (x[i] * 255).round_().clamp_(0, 255).to(torch.uint8).permute(1, 2, 0).numpy()  # (H, W, 3)
        bgr = np.ascontiguousarray(rgb[:, :, ::-1])
        _, encoded = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, int(quality[i])])
        decoded = cv2.imdecode(encoded, cv2.IMREAD_COLOR)[:, :, ::-1]  # BGR -> RGB, (H, W, 3)
        out[i] = torch.from_numpy(np.ascontiguousarray(decoded)).permute(2, 0, 1).float().div_(255.0)
    return out


def check_augment(config: AugmentConfig) -> None:
    """Refuse settings the robustness augmentations cannot use, before any data is read."""
    for key in ("hflip", "erase", "grayscale", "lowres", "jpeg", "box_jitter"):
        if not 0.0 <= getattr(config, key) <= 1.0:
            raise ConfigError(f"augment.{key} is a probability: 0 (off) to 1, got {getattr(config, key)}")
    low, high = _range(config.lowres_scale, "lowres_scale")
    if not 0.0 < low <= high <= 1.0:
        raise ConfigError(f"augment.lowres_scale must satisfy 0 < low <= high <= 1, got {list(config.lowres_scale)}")
    low, high = _range(config.jpeg_quality, "jpeg_quality")
    if not 1 <= low <= high <= 100:
        raise ConfigError(f"augment.jpeg_quality must satisfy 1 <= low <= high <= 100, got {list(config.jpeg_quality)}")
    if not 0.0 <= config.box_scale < 1.0 or config.box_shift < 0 or config.box_rotation < 0:
        raise ConfigError("augment.box_scale must be in [0, 1); augment.box_shift and augment.box_rotation >= 0")


def _range(values: tuple, key: str) -> tuple:
    if len(values) != 2:
        raise ConfigError(f"augment.{key} must be [low, high], got {list(values)}")
    return values


def augment_batch(x: torch.Tensor, config: AugmentConfig, generator: torch.Generator) -> torch.Tensor:
    """Random training augmentation of a float batch (N, 3, H, W) in [0, 1].

    Each step runs only when its setting is on, so a setting at 0 draws nothing from `generator`
    and every earlier recipe keeps its random stream.
    """
    theta = None
    if config.hflip > 0 or config.rotation > 0 or config.zoom > 0 or config.shift > 0:
        theta = random_affine_theta(x.shape[0], config, generator)
    if config.box_jitter > 0:  # the detector's crop comes first, the training warp second
        jitter = box_jitter_theta(x.shape[0], config, generator)
        theta = jitter if theta is None else _then(jitter, theta)
    if theta is not None:
        grid = F.affine_grid(theta, [x.shape[0], 3, x.shape[-2], x.shape[-1]], align_corners=False)
        x = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    if config.brightness > 0 or config.contrast > 0:
        x = adjust_brightness_contrast(x, config, generator)
    if config.grayscale > 0:
        x = random_grayscale(x, config.grayscale, generator)
    if config.lowres > 0:  # a blurred camera image, then compressed, as a webcam stream would be
        x = random_low_resolution(x, config.lowres, config.lowres_scale, generator)
    if config.jpeg > 0:
        x = random_jpeg(x, config.jpeg, config.jpeg_quality, generator)
    if config.erase > 0:  # last, so the noise is not warped or re-lit; skipped at 0 to keep the random stream
        x = erase_random_rectangles(x, config.erase, generator)
    return x
