"""Name -> model factory registry. Registration is the only import-time side effect."""

from __future__ import annotations

import difflib
from typing import Callable

from torch import nn

from agegender.config import ConfigError, ModelConfig

ModelFactory = Callable[[ModelConfig], nn.Module]
_FACTORIES: dict[str, ModelFactory] = {}


class UnknownModelError(ConfigError):
    """A model name no architecture module registered."""


def register_model(name: str) -> Callable[[ModelFactory], ModelFactory]:
    def decorator(factory: ModelFactory) -> ModelFactory:
        if name in _FACTORIES:
            raise ValueError(f"model '{name}' is already registered")
        _FACTORIES[name] = factory
        return factory

    return decorator


def list_models() -> list[str]:
    return sorted(_FACTORIES)


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
