"""Name -> model factory registry. Registration is the only import-time side effect."""

from __future__ import annotations

import difflib
from typing import Callable

from torch import nn

from agegender.config import ModelConfig
from agegender.errors import UserInputError

ModelFactory = Callable[[ModelConfig], nn.Module]
_FACTORIES: dict[str, ModelFactory] = {}


class UnknownModelError(UserInputError):
    pass


def register_model(name: str) -> Callable[[ModelFactory], ModelFactory]:
    def decorator(factory: ModelFactory) -> ModelFactory:
        if name in _FACTORIES:
            raise ValueError(f"model '{name}' is already registered")
        _FACTORIES[name] = factory
        return factory

    return decorator


def list_models() -> list[str]:
    return sorted(_FACTORIES)


def create_model(config: ModelConfig) -> nn.Module:
    if config.name not in _FACTORIES:
        close = difflib.get_close_matches(config.name, _FACTORIES, n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise UnknownModelError(f"unknown model '{config.name}'{hint}; known models: {', '.join(list_models())}")
    return _FACTORIES[config.name](config)
