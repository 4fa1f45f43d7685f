"""Pretrained backbones: architecture smoke tests, weight loading from local files, clear errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from agegender.config import ModelConfig, RunConfig
from agegender.models import create_model, list_models, pretrained
from agegender.models.checkpoint import build_meta, load_checkpoint, save_checkpoint
from agegender.models.pretrained import (
    PretrainedWeightsError,
    default_weights_path,
    load_backbone_state,
    load_pretrained_weights,
)
from agegender.models.registry import UnknownModelError, model_spec, pretrained_models
from agegender.models.spec import backbone_spec

ASTRONAUT = Path(__file__).resolve().parents[2] / "examples" / "astronaut.jpg"
# Top-5 ImageNet classes of examples/astronaut.jpg at 224 px from the reference implementation
# (efficientnet-lite-pytorch 0.1.0, EfficientNet.from_pretrained('efficientnet-lite0')); our port
# matched its logits to 4e-6.
LITE0_REFERENCE_TOP5 = [450, 560, 573, 422, 830]
LITE0_REFERENCE_TOP1_P = 0.2848


def write_random_weights(name: str, path: Path, seed: int = 0) -> dict[str, torch.Tensor]:
    """A weights file laid out like the real one (reference key order + ImageNet classifier)."""
    torch.manual_seed(seed)
    backbone, channels = model_spec(name).create()
    state = {f"features.{k}": v.clone() for k, v in backbone.state_dict().items()}
    prefix = model_spec(name).classifier_prefix
    state[f"{prefix}weight"] = torch.randn(10, channels)
    state[f"{prefix}bias"] = torch.zeros(10)
    torch.save(state, path)
    return backbone.state_dict()


def imagenet_logits(name: str, size: int) -> torch.Tensor:
    spec = model_spec(name)
    path = default_weights_path(name)
    if path is None:
        pytest.skip(f"{spec.weights_package} is not installed")
    backbone, _ = spec.create()
    state, classifier = load_backbone_state(name, path)
    backbone.load_state_dict(state)
    image = Image.open(ASTRONAUT).convert("RGB").resize((size, size), Image.Resampling.BILINEAR)
    x = torch.from_numpy(np.array(image)).permute(2, 0, 1).float()[None] / 255  # (1, 3, S, S)
    x = (x - torch.tensor(spec.mean).view(1, 3, 1, 1)) / torch.tensor(spec.std).view(1, 3, 1, 1)
    with torch.no_grad():
        features = backbone.eval()(x).mean((2, 3))  # (1, 1280)
    weight, bias = classifier.values()
    return features @ weight.T + bias  # (1, 1000)


@pytest.mark.parametrize("name", pretrained_models())
def test_every_pretrained_entry_builds_and_predicts(name):
    assert name in list_models()
    model = create_model(ModelConfig(name=name, head_hidden=8)).eval()
    size = model_spec(name).min_input_size  # 32, except dlib_resnet
    with torch.no_grad():
        output = model(torch.rand(2, 3, size, size))
    assert output.age.shape == output.gender_logit.shape == (2,)
    assert torch.isfinite(output.age).all() and torch.isfinite(output.gender_logit).all()
    assert model.mean == model_spec(name).mean


def test_efficientnet_lite0_weights_reproduce_reference_imagenet_predictions():
    probabilities = imagenet_logits("efficientnet_lite0", 224).softmax(1)[0]
    assert probabilities.topk(5).indices.tolist() == LITE0_REFERENCE_TOP5
    assert float(probabilities.max()) == pytest.approx(LITE0_REFERENCE_TOP1_P, abs=1e-3)


def test_mobilenet_v2_weights_agree_with_efficientnet_on_the_astronaut():
    """Two independently written architectures put the same two ImageNet classes on top."""
    top = imagenet_logits("mobilenet_v2", 224).softmax(1)[0].topk(2).indices.tolist()
    assert top == LITE0_REFERENCE_TOP5[:2]


# torchvision's published parameter counts (whole ImageNet model) and its classifier's share
TORCHVISION_PARAMETERS = {
    "resnet18": (11_689_512, 512 * 1000 + 1000),
    "resnet34": (21_797_672, 512 * 1000 + 1000),
    "resnet50": (25_557_032, 2048 * 1000 + 1000),
    "vgg16": (138_357_544, (25088 * 4096 + 4096) + (4096 * 4096 + 4096) + (4096 * 1000 + 1000)),
    "mobilenet_v2": (3_504_872, 1280 * 1000 + 1000),
}


@pytest.mark.parametrize("name", sorted(TORCHVISION_PARAMETERS))
def test_torchvision_layout_backbones_have_torchvision_parameter_counts(name):
    total, classifier = TORCHVISION_PARAMETERS[name]
    backbone, _ = model_spec(name).create()
    assert sum(p.numel() for p in backbone.parameters()) == total - classifier


@pytest.mark.parametrize("name", ["efficientnet_lite0", "mobilenet_v2", "resnet18", "resnet50", "vgg16"])
def test_weights_option_loads_a_local_file(tmp_path, name):
    path = tmp_path / f"{name}.pth"
    expected = write_random_weights(name, path)
    model = create_model(ModelConfig(name=name))
    assert load_pretrained_weights(model, ModelConfig(name=name, weights=str(path))) == path
    for key, tensor in model.backbone.state_dict().items():
        assert torch.equal(tensor, expected[key])


def test_missing_weights_is_one_clear_error(monkeypatch):
    monkeypatch.setattr(pretrained, "default_weights_path", lambda name: None)
    model = create_model(ModelConfig(name="mobilenet_v2"))
    with pytest.raises(PretrainedWeightsError, match=r"no ImageNet weights for backbone 'mobilenet_v2'.*--weights PATH"):
        load_pretrained_weights(model, ModelConfig(name="mobilenet_v2"))
    with pytest.raises(PretrainedWeightsError, match="not found"):
        load_pretrained_weights(model, ModelConfig(name="mobilenet_v2", weights="/nonexistent/file.pth"))


def test_backbone_without_offline_weights_names_the_file_to_pass():
    model = create_model(ModelConfig(name="resnet50"))
    with pytest.raises(PretrainedWeightsError, match=r"'resnet50' ship offline: pass --weights PATH.*resnet50-0676ba61.pth"):
        load_pretrained_weights(model, ModelConfig(name="resnet50"))


def test_training_without_weights_fails_before_creating_the_run(monkeypatch, make_config, utkface, cache_dir, tmp_path):
    from dataclasses import replace

    from agegender.training.fit import fit

    monkeypatch.setattr(pretrained, "default_weights_path", lambda name: None)
    config = make_config(utkface.path, cache_dir)
    config = replace(config, model=replace(config.model, name="efficientnet_lite0"))
    with pytest.raises(PretrainedWeightsError, match="no ImageNet weights for backbone 'efficientnet_lite0'"):
        fit(config, tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_weights_of_another_architecture_are_refused(tmp_path):
    path = tmp_path / "mobilenet.pth"
    write_random_weights("mobilenet_v2", path)
    model = create_model(ModelConfig(name="efficientnet_lite0"))
    with pytest.raises(PretrainedWeightsError, match="do not fit backbone 'efficientnet_lite0'.*another architecture"):
        load_pretrained_weights(model, ModelConfig(name="efficientnet_lite0", weights=str(path)))
    lite1 = tmp_path / "lite1.pth"
    write_random_weights("efficientnet_lite1", lite1)
    with pytest.raises(PretrainedWeightsError, match="do not fit backbone 'efficientnet_lite0'"):
        load_pretrained_weights(model, ModelConfig(name="efficientnet_lite0", weights=str(lite1)))


def test_unreadable_weights_file_is_refused(tmp_path):
    path = tmp_path / "junk.pth"
    path.write_bytes(b"not a weights file")
    model = create_model(ModelConfig(name="efficientnet_lite0"))
    with pytest.raises(PretrainedWeightsError, match="not a readable weights file"):
        load_pretrained_weights(model, ModelConfig(name="efficientnet_lite0", weights=str(path)))


def test_custom_model_refuses_weights(tmp_path):
    with pytest.raises(PretrainedWeightsError, match="no pretrained backbone"):
        load_pretrained_weights(create_model(ModelConfig()), ModelConfig(weights=str(tmp_path / "w.pth")))


def test_unknown_backbone_lists_the_known_ones():
    with pytest.raises(UnknownModelError, match=r"efficientnet_lite9.*did you mean.*known models:.*mobilenet_v2"):
        create_model(ModelConfig(name="efficientnet_lite9"))


def test_checkpoint_of_a_pretrained_model_loads_without_the_imagenet_file(tmp_path, monkeypatch):
    config = RunConfig(model=ModelConfig(name="efficientnet_lite0", head_hidden=8, weights="/gone/lite0.pth"))
    model = create_model(config.model).eval()
    save_checkpoint(tmp_path / "best.safetensors", model, build_meta(model, config, label_stats={}))
    monkeypatch.setattr(pretrained, "default_weights_path", lambda name: None)
    loaded = load_checkpoint(tmp_path / "best.safetensors")
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(loaded.model(x).age, model(x).age)
    assert loaded.meta["preprocessing"]["mean"] == [0.5, 0.5, 0.5]


# ----------------------------------------------------------------------------- dlib_resnet (face-pretrained)


def test_dlib_resnet_without_its_package_says_how_to_install_it(monkeypatch):
    monkeypatch.setattr(pretrained, "default_weights_path", lambda name: None)
    model = create_model(ModelConfig(name="dlib_resnet"))
    with pytest.raises(PretrainedWeightsError, match=r"no face-recognition weights for backbone 'dlib_resnet': install "
                       r"them with `pip install --no-deps face-recognition-models==0.3.0`"):  # fmt: skip
        load_pretrained_weights(model, ModelConfig(name="dlib_resnet"))


def test_dlib_resnet_reads_a_dat_or_the_same_weights_converted_to_safetensors(tmp_path):
    from safetensors.torch import save_file

    from tests.models.test_dlib_resnet import write_dlib_resnet_dat

    expected = write_dlib_resnet_dat(tmp_path / "face.dat").state_dict()
    save_file(expected, str(tmp_path / "face.safetensors"))
    for name in ("face.dat", "face.safetensors"):
        model = create_model(ModelConfig(name="dlib_resnet"))
        assert load_pretrained_weights(model, ModelConfig(name="dlib_resnet", weights=str(tmp_path / name))) == tmp_path / name
        for key, tensor in model.backbone.state_dict().items():
            assert torch.equal(tensor, expected[key]), (name, key)


def test_dlib_resnet_refuses_foreign_files_with_one_line(tmp_path):
    model = create_model(ModelConfig(name="dlib_resnet"))
    (tmp_path / "junk.dat").write_bytes(b"\x01\x01\x01\x0dloss_met")  # cut inside the loss layer's name
    with pytest.raises(PretrainedWeightsError, match=r"junk.dat: file ends inside loss layer; is it truncated\?") as error:
        load_pretrained_weights(model, ModelConfig(name="dlib_resnet", weights=str(tmp_path / "junk.dat")))
    assert "\n" not in str(error.value)
    write_random_weights("resnet18", tmp_path / "resnet18.safetensors.pth")
    with pytest.raises(PretrainedWeightsError, match="do not fit backbone 'dlib_resnet'"):
        load_pretrained_weights(model, ModelConfig(name="dlib_resnet", weights=str(tmp_path / "resnet18.safetensors.pth")))


def test_dlib_resnet_entry_describes_its_input():
    spec = model_spec("dlib_resnet")
    assert (spec.native_size, spec.face_template, spec.min_input_size) == (150, "dlib_150", 103)
    model = create_model(ModelConfig(name="dlib_resnet"))
    assert model.mean == spec.mean and backbone_spec(model).min_input_size == 103
