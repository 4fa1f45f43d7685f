from __future__ import annotations

import pytest
import torch

from agegender.config import ModelConfig
from agegender.models import create_model
from agegender.models.pretrained import PretrainedWeightsError, load_pretrained_weights
from agegender.models.registry import is_pretrained, model_spec

# Whole ImageNet models: timm's legacy_xception / torchvision's efficientnet_b0 counts (checked against
# both libraries by tools/check_imagenet_backbones.py) and the published sizes they round to.
PUBLISHED = {
    "xception": (22_855_952, 2048 * 1000 + 1000, 22.9),
    "efficientnet_b0": (5_288_548, 1280 * 1000 + 1000, 5.3),
}


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_parameter_counts_with_the_imagenet_classifier_match_the_published_ones(name):
    total, classifier, published_millions = PUBLISHED[name]
    backbone, _ = model_spec(name).create()
    assert sum(p.numel() for p in backbone.parameters()) + classifier == total
    assert round(total / 1e6, 1) == published_millions


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_entries_train_in_two_phases_and_ask_for_weights_in_one_line(name):
    assert is_pretrained(name)
    model = create_model(ModelConfig(name=name))
    with pytest.raises(PretrainedWeightsError, match=rf"'{name}' ship offline: pass --weights PATH") as error:
        load_pretrained_weights(model, ModelConfig(name=name))
    assert "\n" not in str(error.value)


def cadene_style_file(path, seed: int = 0) -> dict[str, torch.Tensor]:
    """Xception weights as Cadene's file has them: other names, 2-D pointwise kernels, no BatchNorm
    counters, an `fc` classifier."""
    torch.manual_seed(seed)
    backbone, _ = model_spec("xception").create()
    expected = {k: torch.randn_like(v) if v.is_floating_point() else v for k, v in backbone.state_dict().items()}
    state = {}
    for index, (key, tensor) in enumerate(expected.items()):
        if not key.endswith("num_batches_tracked"):
            state[f"layer{index}.{'pointwise' if 'pointwise' in key else 'x'}"] = (
                tensor.flatten(1) if "pointwise" in key else tensor
            )
    state["fc.weight"], state["fc.bias"] = torch.randn(1000, 2048), torch.zeros(1000)
    torch.save(state, path)
    return expected


def test_xception_reads_a_cadene_style_file_in_order(tmp_path):
    path = tmp_path / "xception-43020ad28.pth"
    expected = cadene_style_file(path)
    model = create_model(ModelConfig(name="xception"))
    load_pretrained_weights(model, ModelConfig(name="xception", weights=str(path)))
    for key, tensor in model.backbone.state_dict().items():
        if key.endswith("num_batches_tracked"):
            assert int(tensor) == 0
        else:
            assert torch.equal(tensor, expected[key])


def test_efficientnet_b0_refuses_weights_of_another_architecture(tmp_path):
    path = tmp_path / "xception.pth"
    cadene_style_file(path)
    model = create_model(ModelConfig(name="efficientnet_b0"))
    with pytest.raises(
        PretrainedWeightsError,
        match=r"xception.pth: weights do not fit backbone 'efficientnet_b0'.*another architecture",
    ):
        load_pretrained_weights(model, ModelConfig(name="efficientnet_b0", weights=str(path)))
