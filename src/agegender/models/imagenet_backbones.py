"""Xception and EfficientNet-B0, two backbones of the reference age/gender reports, written without
timm or torchvision and registered in pretrained.py like the others (two-phase fine-tuning, ImageNet
weights through `--weights PATH`; no package ships them offline).

Weight files they read (tensors are paired with this module's in order, so names may differ):
  xception         timm's `legacy_xception` file, the Keras ImageNet weights as ported by Cadene's
                   pretrainedmodels: xception-43020ad28.pth (also Cadene's own copy of it, whose
                   pointwise weights are 2-D: they are reshaped to 1x1 convolutions). Input 299 px,
                   mean = std = 0.5.
  efficientnet_b0  torchvision's efficientnet_b0_rwightman-7f5810bc.pth, or timm's
                   `efficientnet_b0` file (same architecture, same tensor order). ImageNet mean/std, 224 px.
Files saved before PyTorch 0.4.1 have no BatchNorm `num_batches_tracked` counters: counters are
ignored when pairing and start at zero (they only matter for BatchNorm with momentum=None).

Each backbone is an `nn.Sequential` of blocks (stem, the residual/inverted-residual blocks, the exit or
head convolutions) so fine-tuning can freeze and cache a prefix. EfficientNet-B0 leaves out
torchvision's stochastic depth (a training-time regulariser without weights).
"""

from __future__ import annotations

import torch
from torch import nn

from agegender.models.backbone_net import register_backbone
from agegender.models.spec import IMAGENET_MEAN, IMAGENET_STD, BackboneSpec

# ----------------------------------------------------------------------------- Xception


class SeparableConv2d(nn.Module):
    """Depthwise kxk then pointwise 1x1, no biases (Keras' SeparableConv2D; Cadene's names)."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, in_channels, 3, 1, 1, groups=in_channels, bias=False)
        self.pointwise = nn.Conv2d(in_channels, out_channels, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pointwise(self.conv1(x))


class XceptionBlock(nn.Module):
    """`reps` x (ReLU, separable conv, BN) [+ max-pool when strided], plus a 1x1 projection shortcut
    where the shape changes. Registration order (skip, skipbn, rep) is the weight files' tensor order."""

    def __init__(
        self, in_channels: int, out_channels: int, reps: int, stride: int, start_with_relu: bool, grow_first: bool
    ):
        super().__init__()
        self.skip, self.skipbn = None, None
        if out_channels != in_channels or stride != 1:
            self.skip = nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False)
            self.skipbn = nn.BatchNorm2d(out_channels)
        layers: list[nn.Module] = []
        for index in range(reps):
            # grow_first: the first conv widens to out_channels; else the last one does
            source = in_channels if (index == 0 or not grow_first) else out_channels
            target = out_channels if (grow_first or index == reps - 1) else in_channels
            # the first ReLU must not overwrite the block input, which the shortcut still needs
            layers += [nn.ReLU(inplace=index > 0), SeparableConv2d(source, target), nn.BatchNorm2d(target)]
        if not start_with_relu:
            layers = layers[1:]
        if stride != 1:
            layers.append(nn.MaxPool2d(3, stride, 1))
        self.rep = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.skip is None else self.skipbn(self.skip(x))
        return self.rep(x) + shortcut


# (in, out, reps, stride, start_with_relu, grow_first): entry flow, 8 middle blocks, exit block
_XCEPTION_BLOCKS = (
    (64, 128, 2, 2, False, True),
    (128, 256, 2, 2, True, True),
    (256, 728, 2, 2, True, True),
    *((728, 728, 3, 1, True, True),) * 8,
    (728, 1024, 2, 2, True, False),
)


def create_xception_backbone() -> tuple[nn.Sequential, int]:
    stem = nn.Sequential(
        nn.Conv2d(3, 32, 3, 2, 0, bias=False), nn.BatchNorm2d(32), nn.ReLU(inplace=True),
        nn.Conv2d(32, 64, 3, bias=False), nn.BatchNorm2d(64), nn.ReLU(inplace=True),
    )  # fmt: skip
    blocks: list[nn.Module] = [stem, *(XceptionBlock(*spec) for spec in _XCEPTION_BLOCKS)]
    blocks.append(nn.Sequential(SeparableConv2d(1024, 1536), nn.BatchNorm2d(1536), nn.ReLU(inplace=True)))
    blocks.append(nn.Sequential(SeparableConv2d(1536, 2048), nn.BatchNorm2d(2048), nn.ReLU(inplace=True)))
    return nn.Sequential(*blocks), 2048


# ----------------------------------------------------------------------------- EfficientNet-B0


def _conv_bn_silu(in_channels: int, out_channels: int, kernel: int, stride: int = 1, groups: int = 1, act: bool = True):
    layers = [
        nn.Conv2d(in_channels, out_channels, kernel, stride, kernel // 2, groups=groups, bias=False),
        nn.BatchNorm2d(out_channels),
    ]
    return nn.Sequential(*layers, nn.SiLU(inplace=True)) if act else nn.Sequential(*layers)


class SqueezeExcitation(nn.Module):
    def __init__(self, channels: int, squeezed: int):
        super().__init__()
        self.fc1 = nn.Conv2d(channels, squeezed, 1)
        self.fc2 = nn.Conv2d(squeezed, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = self.fc2(torch.nn.functional.silu(self.fc1(x.mean((2, 3), keepdim=True))))  # (B, C, 1, 1)
        return x * torch.sigmoid(scale)


class EfficientNetBlock(nn.Module):
    """MBConv: [1x1 expand] -> kxk depthwise -> squeeze-excitation -> 1x1 project (+ identity);
    torchvision's MBConv layout (`block` holds the four parts in tensor order)."""

    def __init__(self, in_channels: int, out_channels: int, kernel: int, stride: int, expand: int):
        super().__init__()
        hidden = in_channels * expand
        layers: list[nn.Module] = [_conv_bn_silu(in_channels, hidden, 1)] if expand != 1 else []
        layers += [
            _conv_bn_silu(hidden, hidden, kernel, stride, groups=hidden),
            SqueezeExcitation(hidden, max(1, in_channels // 4)),
            _conv_bn_silu(hidden, out_channels, 1, act=False),
        ]
        self.block = nn.Sequential(*layers)
        self.residual = stride == 1 and in_channels == out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.block(x) if self.residual else self.block(x)


# (expand ratio, kernel, first stride, in channels, out channels, repeats) of EfficientNet-B0
_B0_STAGES = ((1, 3, 1, 32, 16, 1), (6, 3, 2, 16, 24, 2), (6, 5, 2, 24, 40, 2), (6, 3, 2, 40, 80, 3),
              (6, 5, 1, 80, 112, 3), (6, 5, 2, 112, 192, 4), (6, 3, 1, 192, 320, 1))  # fmt: skip


def create_efficientnet_b0_backbone() -> tuple[nn.Sequential, int]:
    blocks: list[nn.Module] = [_conv_bn_silu(3, 32, 3, 2)]
    for expand, kernel, stride, in_channels, out_channels, repeats in _B0_STAGES:
        for repeat in range(repeats):
            source = in_channels if repeat == 0 else out_channels
            blocks.append(EfficientNetBlock(source, out_channels, kernel, stride if repeat == 0 else 1, expand))
    blocks.append(_conv_bn_silu(320, 1280, 1))
    backbone = nn.Sequential(*blocks)
    for layer in backbone.modules():  # torchvision's initialisation, for training without ImageNet weights
        if isinstance(layer, nn.Conv2d):
            nn.init.kaiming_normal_(layer.weight, mode="fan_out")
    return backbone, 1280


# ----------------------------------------------------------------------------- registry


# files of timm or torchvision, paired in order (models/pretrained.match_backbone_tensors)
register_backbone("xception", BackboneSpec(
    create_xception_backbone, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), 299,
    ("fc.", "last_linear."),  # the classifier: timm's legacy_xception names it fc., Cadene's copy last_linear.
    reference_file="timm's legacy_xception file xception-43020ad28.pth",
))  # fmt: skip
register_backbone("efficientnet_b0", BackboneSpec(
    create_efficientnet_b0_backbone, IMAGENET_MEAN, IMAGENET_STD, 224, "classifier.",
    reference_file="torchvision's efficientnet_b0_rwightman-7f5810bc.pth or timm's efficientnet_b0 file",
))  # fmt: skip
