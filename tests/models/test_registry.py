from __future__ import annotations

import pytest
import torch

import agegender.models  # noqa: F401  (registers the built-in models)
from agegender.config import ModelConfig
from agegender.models import registry
from agegender.models.heads import ModelOutput
from agegender.models.registry import UnknownModelError, check_model_name, create_model, list_models, register_model
from agegender.models.spec import backbone_spec


@pytest.fixture
def scratch_registry(monkeypatch):
    """A copy of the registry, so test registrations never leak into other tests."""
    monkeypatch.setattr(registry, "_FACTORIES", dict(registry._FACTORIES))


def test_custom_is_registered():
    assert "custom" in list_models()
    assert list_models() == sorted(list_models())


def test_duplicate_registration_raises(scratch_registry):
    original = registry._FACTORIES["custom"]
    with pytest.raises(ValueError, match="model 'custom' is already registered"):
        register_model("custom")(lambda config: torch.nn.Identity())
    assert registry._FACTORIES["custom"] is original


def test_registered_factory_is_used(scratch_registry):
    seen = []

    @register_model("test-identity")
    def factory(config: ModelConfig) -> torch.nn.Module:
        seen.append(config)
        return torch.nn.Identity()

    config = ModelConfig(name="test-identity")
    assert isinstance(create_model(config), torch.nn.Identity)
    assert seen == [config]
    assert "test-identity" in list_models()


def test_unknown_model_suggests_and_lists_known_ones():
    with pytest.raises(UnknownModelError) as error:
        create_model(ModelConfig(name="custon"))
    message = str(error.value)
    assert "unknown model 'custon'" in message
    assert "did you mean 'custom'" in message
    assert f"known models: {', '.join(list_models())}" in message


def test_an_unknown_model_name_is_one_config_style_line():
    with pytest.raises(UnknownModelError) as error:  # a ConfigError: the CLI prints it as one line
        check_model_name("custon")
    assert str(error.value) == f"model.name: unknown value 'custon' (did you mean 'custom'?); choose one of {', '.join(list_models())}"
    check_model_name("custom")  # a registered name passes


def test_unknown_model_without_close_match():
    with pytest.raises(UnknownModelError, match=r"unknown model 'zzzzzz'; known models"):
        create_model(ModelConfig(name="zzzzzz"))


def _create_or_skip(name: str) -> torch.nn.Module:
    try:
        return create_model(ModelConfig(name=name))
    except Exception as error:  # pretrained backbones may need a local weights file
        if "weights" in str(error).lower():
            pytest.skip(f"{name}: needs pretrained weights that are not available here ({error})")
        raise


@pytest.mark.parametrize("name", list_models())
def test_every_registered_model_runs_forward_at_32px(name):
    torch.manual_seed(0)
    model = _create_or_skip(name).eval()
    size = max(32, getattr(backbone_spec(model), "min_input_size", 32))  # dlib_resnet's stride-2 convolutions need 103 px
    with torch.no_grad():
        output = model(torch.rand(2, 3, size, size))
    assert isinstance(output, ModelOutput)
    assert output.gender_logit.shape == (2,) and output.age.shape == (2,)
    assert torch.isfinite(output.gender_logit).all() and torch.isfinite(output.age).all()
    assert hasattr(model, "mean") and hasattr(model, "std")  # checkpoints record preprocessing from these
