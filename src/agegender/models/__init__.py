"""Model registry, architectures and checkpoints."""

from agegender.models import custom as _custom  # noqa: F401  (registers "custom")
from agegender.models import levi_hassner as _levi_hassner  # noqa: F401  (registers "levi_hassner")
from agegender.models import pretrained as _pretrained  # noqa: F401  (registers every BACKBONES entry)
from agegender.models.registry import create_model, list_models, register_model

__all__ = ["create_model", "list_models", "register_model"]
