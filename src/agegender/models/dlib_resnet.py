"""dlib's face recognition ResNet (`dlib_face_recognition_resnet_model_v1.dat`) in PyTorch.

The network of dlib's examples/dnn_face_recognition_ex.cpp: a 29-convolution ResNet whose 128-D
fc_no_bias output is a face embedding (trained for identity; it also separates gender well). Input: an
aligned 150x150 RGB chip, normalised as dlib does ((pixel - channel mean) / 256).

As a backbone it is an nn.Sequential of 16 blocks, so fine-tuning can freeze and cache a prefix:
    0       stem: conv 7x7/2 (32) -> affine -> relu -> max pool 3x3/2
    1-3     3 residual blocks, 32 channels
    4-7     a down-sampling block, then 3 residual blocks, 64 channels
    8-10    a down-sampling block, then 2 residual blocks, 128 channels
    11-13   a down-sampling block, then 2 residual blocks, 256 channels
    14      a down-sampling block, 256 channels
    15      embedding: average over everything -> 128-D fc without bias, as (B, 128, 1, 1)
so AgeGenderNet's own average pooling is a no-op and its heads read the 128-D embedding.

dlib's `affine` layer (a batch norm frozen into per-channel scale and shift) is an nn.BatchNorm2d whose
running mean is 0 and running variance 1 - eps, so that sqrt(var + eps) is exactly 1.0 in float32 and
eval-mode BatchNorm computes x * scale + shift, exactly dlib's affine. BatchNorm2d rather than a custom
layer because fine-tuning already keeps every BatchNorm in eval mode and trains its weight and bias
(dlib's scale and shift), and ONNX export folds it into the convolution like any other backbone's.

dlib's convolutions pad kernel // 2 only at stride 1 (none at stride 2), and its residual additions
zero-pad the smaller operand (channels and, in the last two down-sampling blocks, rows and columns:
at 150 px the block's stride-2 convolution gives 3x3 and 1x1 where the shortcut's 2x2 average pool
gives 4x4 and 2x2). Both are reproduced, so the port needs at least MIN_INPUT_SIZE pixels.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from agegender.models.backbone_net import register_backbone
from agegender.models.dlib_format import LAYER, SKIP, TAG, DlibFormatError, DlibLayer, read_network
from agegender.models.spec import BackboneSpec
from agegender.models.weights_files import read_weights_file

NETWORK = "dlib's face recognition ResNet (dlib_face_recognition_resnet_model_v1.dat)"
NATIVE_SIZE = 150
EMBEDDING_SIZE = 128
# The smallest input every stride-2 3x3 convolution of the down-sampling blocks still fits (see module doc).
MIN_INPUT_SIZE = 103
# input_rgb_image_sized: (pixel - mean) / 256 in 0-255 units, i.e. (x - mean / 255) / (256 / 255) for x in [0, 1].
DLIB_MEAN_RGB = (122.782, 117.001, 104.298)
MEAN = tuple(m / 255 for m in DLIB_MEAN_RGB)
STD = (256 / 255,) * 3
# (channels, residual blocks after the down-sampling one) per stage; the first stage has no down-sampling.
STAGES = ((32, 3), (64, 3), (128, 2), (256, 2), (256, 0))


def _affine(channels: int) -> nn.BatchNorm2d:
    norm = nn.BatchNorm2d(channels)
    norm.running_var.fill_(1 - norm.eps)  # sqrt(var + eps) == 1.0 exactly: eval mode is x * weight + bias
    return norm


def add_zero_padded(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """dlib's add_prev: the sum over the larger of each dimension, the smaller operand padded with zeros
    after its last channel / row / column."""
    if a.shape == b.shape:
        return a + b
    channels, rows, columns = (max(x, y) for x, y in zip(a.shape[1:], b.shape[1:]))

    def pad(t: torch.Tensor) -> torch.Tensor:  # (B, c, h, w) -> (B, channels, rows, columns)
        return F.pad(t, (0, columns - t.shape[3], 0, rows - t.shape[2], 0, channels - t.shape[1]))

    return pad(a) + pad(b)


class DlibStem(nn.Sequential):
    def __init__(self):
        super().__init__(nn.Conv2d(3, 32, 7, 2), _affine(32), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2))


class DlibResidual(nn.Module):
    """dlib's ares / ares_down: relu(conv-affine-relu-conv-affine(x) + shortcut(x)); the down-sampling
    version strides its first convolution by 2 and average-pools the shortcut 2x2."""

    def __init__(self, in_channels: int, out_channels: int, down: bool):
        super().__init__()
        stride, padding = (2, 0) if down else (1, 1)  # dlib pads only stride-1 convolutions
        self.conv1, self.affine1 = nn.Conv2d(in_channels, out_channels, 3, stride, padding), _affine(out_channels)
        self.conv2, self.affine2 = nn.Conv2d(out_channels, out_channels, 3, 1, 1), _affine(out_channels)
        self.down = down

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C_in, H, W) -> (B, C_out, H', W')
        y = self.affine2(self.conv2(F.relu(self.affine1(self.conv1(x)))))
        shortcut = F.avg_pool2d(x, 2, 2) if self.down else x
        return F.relu(add_zero_padded(y, shortcut))


class DlibEmbedding(nn.Module):
    """avg_pool_everything -> fc_no_bias<128>, returned as (B, 128, 1, 1) so later pooling is a no-op."""

    def __init__(self, in_features: int = 256, out_features: int = EMBEDDING_SIZE):
        super().__init__()
        self.fc = nn.Linear(in_features, out_features, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, 256, h, w) -> (B, 128, 1, 1)
        return self.fc(x.mean((2, 3)))[:, :, None, None]


def create_dlib_resnet_backbone() -> tuple[nn.Sequential, int]:
    """(backbone, output channels): the 16 blocks listed in the module doc."""
    blocks: list[nn.Module] = [DlibStem()]
    channels = 32
    for index, (out, repeats) in enumerate(STAGES):
        if index > 0:
            blocks.append(DlibResidual(channels, out, down=True))
        blocks += [DlibResidual(out, out, down=False) for _ in range(repeats)]
        channels = out
    blocks.append(DlibEmbedding(channels))
    return nn.Sequential(*blocks), EMBEDDING_SIZE


# ----------------------------------------------------------------------------- the .dat layout


def _residual_kinds(down: bool) -> list[str]:
    """ares: tag1 con affine relu con affine add_prev1 relu; ares_down adds tag2, skip1 and avg_pool."""
    block = [TAG, LAYER, LAYER, LAYER, LAYER, LAYER]
    return block + ([TAG, SKIP, LAYER] if down else []) + [LAYER, LAYER]


def layer_kinds() -> list[str]:
    """The network's dlib layers, input side first, as dlib_format.read_network needs them."""
    kinds = [LAYER] * 4  # con, affine, relu, max_pool
    for index, (_, repeats) in enumerate(STAGES):
        if index > 0:
            kinds += _residual_kinds(down=True)
        for _ in range(repeats):
            kinds += _residual_kinds(down=False)
    return kinds + [LAYER, LAYER]  # avg_pool_everything, fc_no_bias


# ----------------------------------------------------------------------------- weights from the .dat


def _conv_settings(conv: nn.Conv2d) -> dict[str, int]:
    (kernel, _), (stride, _), (padding, _) = conv.kernel_size, conv.stride, conv.padding
    return {"filters": conv.out_channels, "nr": kernel, "nc": kernel, "stride_y": stride, "stride_x": stride,
            "padding_y": padding, "padding_x": padding}  # fmt: skip


def _pool_settings(size: int, stride: int) -> dict[str, int]:
    return {"nr": size, "nc": size, "stride_y": stride, "stride_x": stride, "padding_y": 0, "padding_x": 0}


def dlib_layers(backbone: nn.Sequential) -> list[tuple[str, dict, nn.Module | None]]:
    """(dlib layer name, settings it must have, module receiving its parameters) for every computational
    layer of the .dat, input side first: the dlib definition this port mirrors."""
    stem, *residuals, embedding = backbone
    expected = [("con_4", _conv_settings(stem[0]), stem[0]), ("affine_", {}, stem[1]), ("relu_", {}, None),
                ("max_pool_2", _pool_settings(3, 2), None)]  # fmt: skip
    for block in residuals:
        expected += [("con_4", _conv_settings(block.conv1), block.conv1), ("affine_", {}, block.affine1),
                     ("relu_", {}, None), ("con_4", _conv_settings(block.conv2), block.conv2),
                     ("affine_", {}, block.affine2)]  # fmt: skip
        if block.down:
            expected.append(("avg_pool_2", _pool_settings(2, 2), None))
        expected += [("add_prev_", {}, None), ("relu_", {}, None)]
    fc = embedding.fc
    expected.append(("avg_pool_2", _pool_settings(0, 1), None))  # 0: the whole activation
    expected.append(("fc_2", {"outputs": fc.out_features, "inputs": fc.in_features, "bias_mode": 1}, fc))
    return expected


def _shape_text(layer: DlibLayer) -> str:
    shown = {k: v for k, v in layer.settings.items() if k in ("filters", "nr", "stride_y", "outputs", "inputs")}
    return f"'{layer.name}' {shown}" if shown else f"'{layer.name}'"


def _copy_params(layer: DlibLayer, module: nn.Module, where: str) -> None:
    """dlib's parameter tensor is one flat block: conv filters (out, in, kh, kw) then biases; affine
    scales then shifts; fc weights as (inputs, outputs)."""
    flat = torch.from_numpy(np.ascontiguousarray(layer.params).reshape(-1))
    tensors = [p for p in (module.weight, module.bias) if p is not None]
    if flat.numel() != sum(t.numel() for t in tensors):
        raise DlibFormatError(f"{where} has {flat.numel()} parameters, expected {sum(t.numel() for t in tensors)}")
    with torch.no_grad():
        if isinstance(module, nn.Linear):  # y = x W with W (inputs, outputs); torch keeps W.T
            module.weight.copy_(flat.view(module.in_features, module.out_features).T)
            return
        module.weight.copy_(flat[: module.weight.numel()].view_as(module.weight))
        module.bias.copy_(flat[module.weight.numel() :].view_as(module.bias))


def convert_dlib_weights(path: Path) -> dict[str, torch.Tensor]:
    """The backbone state dict of dlib's face recognition ResNet from its .dat; DlibFormatError for any
    other file (another dlib network, a truncated file, not dlib's format)."""
    path = Path(path)
    network = read_network(path, layer_kinds(), NETWORK)
    size = (network.input.settings["nr"], network.input.settings["nc"])
    if size != (NATIVE_SIZE, NATIVE_SIZE):
        raise DlibFormatError(f"{path}: not {NETWORK}: its input is {size[0]}x{size[1]}, expected 150x150")
    with torch.random.fork_rng(devices=[]):  # every parameter is overwritten; keep the caller's RNG as it was
        backbone, _ = create_dlib_resnet_backbone()
    for index, (layer, (name, settings, module)) in enumerate(zip(network.layers, dlib_layers(backbone))):
        where = f"{path}: layer {index}"
        found = {key: layer.settings.get(key) for key in settings}
        if layer.name != name or found != settings:
            raise DlibFormatError(f"{where} is {_shape_text(layer)}, expected '{name}' {settings}: not {NETWORK}")
        if module is not None:
            _copy_params(layer, module, where)
    return backbone.state_dict()


# ----------------------------------------------------------------------------- registry


STATE_DICT_SUFFIXES = (".pth", ".pt", ".safetensors")


def read_dlib_resnet_file(path: Path) -> dict[str, torch.Tensor]:
    """dlib's own .dat, or its weights already converted and saved as a state dict."""
    return read_weights_file(path) if path.suffix in STATE_DICT_SUFFIXES else convert_dlib_weights(path)


# dlib's 128-D face embedding network; mean/std are dlib's (pixel - mean) / 256 in [0, 1] units.
register_backbone("dlib_resnet", BackboneSpec(
    create=create_dlib_resnet_backbone,
    mean=MEAN,
    std=STD,
    native_size=NATIVE_SIZE,
    classifier_prefix="classifier.",  # nothing: the embedding is the backbone's last block
    weights_package="face-recognition-models==0.3.0",  # CC0 models; its sdist ships the .dat
    weights_module="face_recognition_models",
    weights_file="models/dlib_face_recognition_resnet_model_v1.dat",
    convert=read_dlib_resnet_file,
    face_template="dlib_150",
    pretrained_on="face-recognition",
    min_input_size=MIN_INPUT_SIZE,
))
