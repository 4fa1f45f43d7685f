"""Model registry, architectures and checkpoints."""

from agegender.models import custom as _custom  # noqa: F401  (registers "custom")
from agegender.models.registry import create_model, list_models, register_model

__all__ = ["create_model", "list_models", "register_model"]
