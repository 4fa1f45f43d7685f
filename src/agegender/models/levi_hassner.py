"""The Levi-Hassner CNN (Levi & Hassner, "Age and Gender Classification using Convolutional Neural
Networks", CVPR Workshops 2015): the classic baseline of the age/gender literature, trained from scratch.

    conv1  96 7x7 filters, stride 4 -> ReLU -> max-pool 3x3/2 -> local response normalisation
    conv2 256 5x5 filters, pad 2    -> ReLU -> max-pool 3x3/2 -> local response normalisation
    conv3 384 3x3 filters, pad 1    -> ReLU -> max-pool
    fc6   512 -> ReLU -> dropout 0.5;  fc7 512 -> ReLU -> dropout 0.5
    then this project's gender and age heads in place of the paper's per-task softmax (fc8).

One change, so that any input size works: conv3's max-pool is adaptive, to a fixed 3x3 grid. The
paper's 227 px input leaves a 6x6 map there (its fc6 has 7.1 M weights); here fc6 reads 3x3 at any size
(1.8 M weights). At this project's usual 64 px conv3's map is 3x3 already, so the pool keeps it whole.
LRN uses the paper's (Caffe's) size 5, alpha 1e-4, beta 0.75.
"""

from __future__ import annotations

from torch import nn

from agegender.config import ModelConfig
from agegender.models.custom import CUSTOM_MEAN, CUSTOM_STD
from agegender.models.heads import AgeGenderNet
from agegender.models.registry import register_model

FC_WIDTH = 512
POOLED_GRID = 3  # conv3's map is max-pooled to POOLED_GRID x POOLED_GRID before fc6


def _conv_stage(in_channels: int, out_channels: int, kernel: int, stride: int, lrn: bool) -> nn.Sequential:
    layers = [
        nn.Conv2d(in_channels, out_channels, kernel, stride, padding=kernel // 2 if stride == 1 else 0),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(3, 2, ceil_mode=True),  # ceil_mode: Caffe's pooling arithmetic
    ]
    if lrn:
        layers.append(nn.LocalResponseNorm(5, alpha=1e-4, beta=0.75))
    return nn.Sequential(*layers)


class FullyConnected(nn.Module):
    """fc6 and fc7 on the flattened conv map; returns (B, 512, 1, 1) so the net's global pool is a no-op."""

    def __init__(self, in_features: int, dropout: float = 0.5):
        super().__init__()
        self.layers = nn.Sequential(
            nn.Flatten(),
            nn.Linear(in_features, FC_WIDTH),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(FC_WIDTH, FC_WIDTH),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
        )

    def forward(self, x):
        return self.layers(x)[:, :, None, None]  # (B, 512, 1, 1)


def create_levi_hassner_backbone() -> tuple[nn.Sequential, int]:
    """(backbone, output channels): three conv stages and fc6/fc7, each an entry of the Sequential."""
    conv3 = nn.Sequential(nn.Conv2d(256, 384, 3, padding=1), nn.ReLU(inplace=True), nn.AdaptiveMaxPool2d(POOLED_GRID))
    backbone = nn.Sequential(
        _conv_stage(3, 96, 7, 4, lrn=True),
        _conv_stage(96, 256, 5, 1, lrn=True),
        conv3,
        FullyConnected(384 * POOLED_GRID**2),
    )
    return backbone, FC_WIDTH  # PyTorch's default initialisation, as for `custom`


@register_model("levi_hassner")
def create_levi_hassner(config: ModelConfig) -> AgeGenderNet:
    """Trained from scratch in one phase, like `custom` (model.widths and convs_per_block do not apply)."""
    backbone, channels = create_levi_hassner_backbone()
    return AgeGenderNet(
        backbone,
        channels,
        mean=CUSTOM_MEAN,
        std=CUSTOM_STD,
        heads=config,
    )
