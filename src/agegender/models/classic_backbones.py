"""ResNet-18/34/50 and VGG16, the backbones of the classic age/gender reports, written without
torchvision (which does not import on the CPU torch build) in torchvision's parameter order, so its
ImageNet weight files (e.g. resnet50-0676ba61.pth, vgg16-397923af.pth) load into them by position.
No package ships these weights offline: training one needs `--weights PATH`.

Each backbone is an `nn.Sequential` of blocks, like the others in pretrained.py: ResNet's stem, then
every residual block; VGG16's five conv stages, each ending in its max-pool.
"""

from __future__ import annotations

from typing import Callable

from torch import nn

from agegender.models.backbone_net import register_backbone
from agegender.models.spec import IMAGENET_MEAN, IMAGENET_STD, BackboneSpec


def _conv_bn(in_channels: int, out_channels: int, kernel: int, stride: int = 1) -> tuple[nn.Conv2d, nn.BatchNorm2d]:
    return nn.Conv2d(in_channels, out_channels, kernel, stride, kernel // 2, bias=False), nn.BatchNorm2d(out_channels)


def _shortcut(in_channels: int, out_channels: int, stride: int) -> nn.Sequential | None:
    """1x1 projection where the block changes resolution or width (torchvision's `downsample`)."""
    if stride == 1 and in_channels == out_channels:
        return None
    return nn.Sequential(*_conv_bn(in_channels, out_channels, 1, stride))


class BasicBlock(nn.Module):
    """ResNet-18/34 block: two 3x3 convolutions plus the identity (or a projection)."""

    expansion = 1

    def __init__(self, in_channels: int, width: int, stride: int):
        super().__init__()
        self.conv1, self.bn1 = _conv_bn(in_channels, width, 3, stride)
        self.relu = nn.ReLU(inplace=True)
        self.conv2, self.bn2 = _conv_bn(width, width, 3)
        self.downsample = _shortcut(in_channels, width, stride)

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        y = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(y)) + identity)


class Bottleneck(nn.Module):
    """ResNet-50 block: 1x1 reduce, 3x3 (strided, as in torchvision's v1.5), 1x1 expand by 4."""

    expansion = 4

    def __init__(self, in_channels: int, width: int, stride: int):
        super().__init__()
        self.conv1, self.bn1 = _conv_bn(in_channels, width, 1)
        self.conv2, self.bn2 = _conv_bn(width, width, 3, stride)
        self.conv3, self.bn3 = _conv_bn(width, width * 4, 1)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = _shortcut(in_channels, width * 4, stride)

    def forward(self, x):
        identity = x if self.downsample is None else self.downsample(x)
        y = self.relu(self.bn1(self.conv1(x)))
        y = self.relu(self.bn2(self.conv2(y)))
        return self.relu(self.bn3(self.conv3(y)) + identity)


class ResNetStem(nn.Sequential):
    def __init__(self):
        conv1, bn1 = _conv_bn(3, 64, 7, 2)
        super().__init__(conv1, bn1, nn.ReLU(inplace=True), nn.MaxPool2d(3, 2, 1))


def create_resnet_backbone(block: type[BasicBlock] | type[Bottleneck], repeats: tuple[int, ...]) -> tuple[nn.Sequential, int]:
    blocks: list[nn.Module] = [ResNetStem()]
    channels = 64
    for stage, count in enumerate(repeats):
        width = 64 * 2**stage
        for index in range(count):
            blocks.append(block(channels, width, 2 if stage > 0 and index == 0 else 1))
            channels = width * block.expansion
    backbone = nn.Sequential(*blocks)
    for layer in backbone.modules():  # torchvision's initialisation, for training without ImageNet weights
        if isinstance(layer, nn.Conv2d):
            nn.init.kaiming_normal_(layer.weight, mode="fan_out", nonlinearity="relu")
    return backbone, channels


# VGG16 (configuration "D"): output channels of each 3x3 convolution, stage by stage
_VGG16_STAGES = ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512))


def create_vgg16_backbone() -> tuple[nn.Sequential, int]:
    stages, channels = [], 3
    for widths in _VGG16_STAGES:
        layers: list[nn.Module] = []
        for width in widths:
            layers += [nn.Conv2d(channels, width, 3, padding=1), nn.ReLU(inplace=True)]
            channels = width
        stages.append(nn.Sequential(*layers, nn.MaxPool2d(2, 2)))
    backbone = nn.Sequential(*stages)
    for layer in backbone.modules():
        if isinstance(layer, nn.Conv2d):
            nn.init.kaiming_normal_(layer.weight, mode="fan_out", nonlinearity="relu")
            nn.init.zeros_(layer.bias)
    return backbone, channels


# ----------------------------------------------------------------------------- registry


def _torchvision_spec(create: Callable[[], tuple[nn.Sequential, int]], classifier: str, file: str) -> BackboneSpec:
    """A backbone whose ImageNet weights no package ships offline: torchvision's file, via --weights."""
    return BackboneSpec(create, IMAGENET_MEAN, IMAGENET_STD, 224, classifier, reference_file=f"torchvision's {file}")


register_backbone("resnet18", _torchvision_spec(lambda: create_resnet_backbone(BasicBlock, (2, 2, 2, 2)), "fc.", "resnet18-f37072fd.pth"))
register_backbone("resnet34", _torchvision_spec(lambda: create_resnet_backbone(BasicBlock, (3, 4, 6, 3)), "fc.", "resnet34-b627a593.pth"))
register_backbone("resnet50", _torchvision_spec(lambda: create_resnet_backbone(Bottleneck, (3, 4, 6, 3)), "fc.", "resnet50-0676ba61.pth"))
register_backbone("vgg16", _torchvision_spec(create_vgg16_backbone, "classifier.", "vgg16-397923af.pth"))
