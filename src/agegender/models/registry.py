"""Name -> (model factory, spec) registry, filled by each architecture's module when it is imported.
Registration is the only import-time side effect; a pretrained entry's spec (models/spec.py) is the one
table of what that model needs."""

from __future__ import annotations

import difflib
from typing import Callable

from torch import nn

from agegender.config import ConfigError, ModelConfig
from agegender.models.spec import BackboneSpec

ModelFactory = Callable[[ModelConfig], nn.Module]
_FACTORIES: dict[str, ModelFactory] = {}
_SPECS: dict[str, BackboneSpec] = {}  # pretrained entries only


class UnknownModelError(ConfigError):
    """A model name no architecture module registered."""


def register_model(name: str, spec: BackboneSpec | None = None) -> Callable[[ModelFactory], ModelFactory]:
    """File `factory` under `name`; `spec` for a pretrained backbone (its factory builds from it)."""

    def decorator(factory: ModelFactory) -> ModelFactory:
        if name in _FACTORIES:
            raise ValueError(f"model '{name}' is already registered")
        _FACTORIES[name] = factory
        if spec is not None:
            _SPECS[name] = spec
        return factory

    return decorator


def list_models() -> list[str]:
    return sorted(_FACTORIES)


def pretrained_models() -> list[str]:
    """Names whose backbone has pretrained weights (trained in two phases)."""
    return sorted(_SPECS)


def is_pretrained(name: str) -> bool:
    return name in _SPECS


def model_spec(name: str) -> BackboneSpec:
    """A pretrained entry's spec, for code that holds a name and no network (weights files, tools)."""
    if name not in _SPECS:
        raise UnknownModelError(f"model '{name}' has no pretrained backbone; pretrained models: {', '.join(pretrained_models())}")
    return _SPECS[name]


def check_model_name(name: str) -> None:
    """One config-style error line for a name no model is registered under (config.py cannot ask:
    this module imports it), e.g. for `train` before any data is read."""
    if name not in _FACTORIES:
        raise UnknownModelError(f"model.name: unknown value '{name}'{_did_you_mean(name)}; choose one of {', '.join(list_models())}")


def _did_you_mean(name: str) -> str:
    close = difflib.get_close_matches(name, _FACTORIES, n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""


def create_model(config: ModelConfig) -> nn.Module:
    if config.name not in _FACTORIES:
        raise UnknownModelError(f"unknown model '{config.name}'{_did_you_mean(config.name)}; known models: {', '.join(list_models())}")
    return _FACTORIES[config.name](config)
