"""Human-readable facts about a model: parameters, layers, feature-map size, multiply-accumulates per face."""

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
    macs: int  # multiply-accumulates of the convolutions and linear layers for one face, one pass

    def line(self) -> str:
        c, h, w = self.feature_map
        return (
            f"{self.name}: {self.parameters / 1e6:.2f} M parameters ({self.trainable_parameters / 1e6:.2f} M trainable), "
            f"{self.layers} conv/linear layers, input {self.input_size}x{self.input_size}, feature map {c}x{h}x{w}, "
            f"{self.macs / 1e9:.3f} GMAC per face"
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


@torch.no_grad()
def count_macs(model: nn.Module, image_size: int) -> int:
    """Multiply-accumulates of every convolution and linear layer in one forward pass of one face: the
    arithmetic a runtime cannot skip (normalisation, activations and pooling are a small remainder)."""
    total = 0

    def add(module: nn.Module, _inputs, output: torch.Tensor) -> None:
        nonlocal total
        if isinstance(module, nn.Conv2d):
            per_output = module.in_channels // module.groups * module.kernel_size[0] * module.kernel_size[1]
        else:
            per_output = module.in_features
        total += output.numel() * per_output

    hooks = [m.register_forward_hook(add) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    was_training = model.training
    try:
        model.eval()
        model(torch.zeros(1, 3, image_size, image_size, device=next(model.parameters()).device))
    finally:
        model.train(was_training)
        for hook in hooks:
            hook.remove()
    return total


def summarize_model(model: nn.Module, name: str, image_size: int) -> ModelSummary:
    return ModelSummary(
        name=name,
        parameters=sum(p.numel() for p in model.parameters()),
        trainable_parameters=sum(p.numel() for p in model.parameters() if p.requires_grad),
        layers=count_layers(model),
        input_size=image_size,
        feature_map=feature_map_shape(model, image_size),
        macs=count_macs(model, image_size),
    )
