"""Pixel conversion and training augmentation: the only place either lives.

Images travel as uint8 (N, H, W, 3) RGB arrays; `to_model_input` is the one conversion to
the float tensor every model takes (normalisation by mean/std happens inside the model, so
training, evaluation, prediction and ONNX export cannot disagree about it).
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from agegender.config import AugmentConfig


def to_model_input(images: np.ndarray | torch.Tensor, channels_last: bool = True) -> torch.Tensor:
    """uint8 (N, H, W, 3) RGB -> float32 (N, 3, H, W) in [0, 1]."""
    tensor = torch.as_tensor(np.asarray(images)) if isinstance(images, np.ndarray) else images
    tensor = tensor.permute(0, 3, 1, 2).float().div_(255.0)  # (N, 3, H, W)
    memory = torch.channels_last if channels_last else torch.contiguous_format
    return tensor.contiguous(memory_format=memory)


def _uniform(n: int, limit: float, generator: torch.Generator) -> torch.Tensor:
    return (torch.rand(n, generator=generator) * 2 - 1) * limit


def random_affine_grid(n: int, size: int, config: AugmentConfig, generator: torch.Generator) -> torch.Tensor:
    """Sampling grids for random flip, rotation, zoom and shift, one per image. (N, H, W, 2)"""
    angle = _uniform(n, math.radians(config.rotation), generator)
    scale = 1.0 + _uniform(n, config.zoom, generator)
    flip = torch.where(torch.rand(n, generator=generator) < config.hflip, -1.0, 1.0)
    shift = _uniform(2 * n, 2 * config.shift, generator).view(n, 2)  # grid coordinates span 2
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack(
        [torch.stack([cos * flip, -sin, shift[:, 0]], 1), torch.stack([sin * flip, cos, shift[:, 1]], 1)], 1
    )  # (N, 2, 3)
    return F.affine_grid(theta, [n, 3, size, size], align_corners=False)


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


def augment_batch(x: torch.Tensor, config: AugmentConfig, generator: torch.Generator) -> torch.Tensor:
    """Random training augmentation of a float batch (N, 3, H, W) in [0, 1]."""
    geometric = config.hflip > 0 or config.rotation > 0 or config.zoom > 0 or config.shift > 0
    if geometric:
        grid = random_affine_grid(x.shape[0], x.shape[-1], config, generator)
        x = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    if config.brightness > 0 or config.contrast > 0:
        x = adjust_brightness_contrast(x, config, generator)
    if config.erase > 0:  # last, so the noise is not warped or re-lit; skipped at 0 to keep the random stream
        x = erase_random_rectangles(x, config.erase, generator)
    return x
