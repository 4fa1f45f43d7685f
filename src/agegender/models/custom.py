"""Model A: a CNN trained from scratch (conv-BN-ReLU blocks with max pooling)."""

from __future__ import annotations

from torch import nn

from agegender.config import ModelConfig
from agegender.models.heads import AgeGenderNet
from agegender.models.registry import register_model

# [0, 1] inputs centred on UTKFace-like statistics; the exact values matter little with BatchNorm.
CUSTOM_MEAN = (0.5, 0.5, 0.5)
CUSTOM_STD = (0.25, 0.25, 0.25)


def conv_bn_relu(in_channels: int, out_channels: int) -> list[nn.Module]:
    return [
        nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    ]


def conv_block(in_channels: int, out_channels: int, convs: int) -> nn.Sequential:
    layers = conv_bn_relu(in_channels, out_channels)
    for _ in range(convs - 1):
        layers += conv_bn_relu(out_channels, out_channels)
    layers.append(nn.MaxPool2d(2))
    return nn.Sequential(*layers)


def create_custom_backbone(widths: tuple[int, ...], convs_per_block: int) -> nn.Sequential:
    if not widths or convs_per_block < 1:
        raise ValueError("custom CNN needs at least one block width and one conv per block")
    blocks, channels = [], 3
    for width in widths:
        blocks.append(conv_block(channels, width, convs_per_block))
        channels = width
    return nn.Sequential(*blocks)


@register_model("custom")
def create_custom(config: ModelConfig) -> AgeGenderNet:
    backbone = create_custom_backbone(tuple(config.widths), config.convs_per_block)
    return AgeGenderNet(
        backbone,
        config.widths[-1],
        mean=CUSTOM_MEAN,
        std=CUSTOM_STD,
        heads=config,
    )
