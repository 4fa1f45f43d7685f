"""Human-readable facts about a model: parameters, layers, feature-map size."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class ModelSummary:
    name: str
    parameters: int
    trainable_parameters: int
    layers: int  # convolution and linear layers, the usual way papers count depth
    input_size: int
    feature_map: tuple[int, int, int]  # (C, h, w) entering global pooling

    def line(self) -> str:
        c, h, w = self.feature_map
        return (
            f"{self.name}: {self.parameters / 1e6:.2f} M parameters ({self.trainable_parameters / 1e6:.2f} M trainable), "
            f"{self.layers} conv/linear layers, input {self.input_size}x{self.input_size}, feature map {c}x{h}x{w}"
        )


def count_layers(model: nn.Module) -> int:
    return sum(isinstance(m, (nn.Conv2d, nn.Linear)) for m in model.modules())


@torch.no_grad()
def feature_map_shape(model: nn.Module, image_size: int) -> tuple[int, int, int]:
    was_training = model.training
    model.eval()
    probe = torch.zeros(1, 3, image_size, image_size, device=next(model.parameters()).device)
    shape = model.backbone(model.normalize(probe)).shape[1:]  # (C, h, w)
    model.train(was_training)
    return tuple(int(s) for s in shape)


def summarize_model(model: nn.Module, name: str, image_size: int) -> ModelSummary:
    return ModelSummary(
        name=name,
        parameters=sum(p.numel() for p in model.parameters()),
        trainable_parameters=sum(p.numel() for p in model.parameters() if p.requires_grad),
        layers=count_layers(model),
        input_size=image_size,
        feature_map=feature_map_shape(model, image_size),
    )
