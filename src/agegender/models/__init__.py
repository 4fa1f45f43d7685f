"""Model registry, architectures and checkpoints."""

from agegender.models import classic_backbones as _classic  # noqa: F401  (registers resnet18/34/50, vgg16)
from agegender.models import custom as _custom  # noqa: F401  (registers "custom")
from agegender.models import cydral_gender as _cydral_gender  # noqa: F401  (registers "cydral_gender")
from agegender.models import cydral_resnet as _cydral_resnet  # noqa: F401  (registers "cydral_resnet10")
from agegender.models import dlib_resnet as _dlib_resnet  # noqa: F401  (registers "dlib_resnet")
from agegender.models import imagenet_backbones as _imagenet  # noqa: F401  (registers xception, efficientnet_b0)
from agegender.models import levi_hassner as _levi_hassner  # noqa: F401  (registers "levi_hassner")
from agegender.models import mobile_backbones as _mobile  # noqa: F401  (registers efficientnet_lite0/1/2, mobilenet_v2)
from agegender.models.registry import create_model, list_models, register_model

__all__ = ["create_model", "list_models", "register_model"]
