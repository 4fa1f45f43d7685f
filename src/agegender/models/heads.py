"""The two task heads and the network that joins them to a backbone."""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

import torch
from torch import nn

from agegender.config import ConfigError, ModelConfig
from agegender.data.samples import MAX_AGE

if TYPE_CHECKING:
    from agegender.models.spec import BackboneSpec


class ModelOutput(NamedTuple):
    gender_logit: torch.Tensor  # (B,) logit of P(female)
    age: torch.Tensor  # (B,) years
    age_logits: torch.Tensor | None = None  # (B, MAX_AGE + 1) for the bins head: trains its distribution


def _mlp(in_features: int, hidden: int, out_features: int, dropout: float) -> nn.Sequential:
    return nn.Sequential(
        nn.Dropout(dropout),
        nn.Linear(in_features, hidden),
        nn.ReLU(inplace=True),
        nn.Dropout(dropout),
        nn.Linear(hidden, out_features),
    )


class GenderHead(nn.Module):
    def __init__(self, in_features: int, hidden: int, dropout: float):
        super().__init__()
        self.mlp = _mlp(in_features, hidden, 1, dropout)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.mlp(features).squeeze(1)  # (B,)


class AgeBinsHead(nn.Module):
    """Age as the expected value of a softmax over 1-year bins (DEX-style).

    Bounded to 0..MAX_AGE by construction and measured better than a single regression output.
    """

    def __init__(self, in_features: int, hidden: int, dropout: float):
        super().__init__()
        self.mlp = _mlp(in_features, hidden, MAX_AGE + 1, dropout)
        self.register_buffer("centres", torch.arange(MAX_AGE + 1, dtype=torch.float32), persistent=False)

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self.mlp(features)  # (B, MAX_AGE + 1)
        return logits.softmax(dim=1) @ self.centres, logits  # (B,), (B, MAX_AGE + 1)


class AgeRegressionHead(nn.Module):
    """One linear output, scaled around a typical adult age so training starts near the mean."""

    def __init__(self, in_features: int, hidden: int, dropout: float, offset: float = 33.0, scale: float = 20.0):
        super().__init__()
        self.mlp = _mlp(in_features, hidden, 1, dropout)
        self.offset, self.scale = offset, scale

    def forward(self, features: torch.Tensor) -> tuple[torch.Tensor, None]:
        return self.mlp(features).squeeze(1) * self.scale + self.offset, None  # (B,), no distribution


def create_age_head(kind: str, in_features: int, hidden: int, dropout: float) -> nn.Module:
    heads = {"bins": AgeBinsHead, "regression": AgeRegressionHead}
    if kind not in heads:
        raise ValueError(f"unknown age head '{kind}'; choose one of {', '.join(heads)}")
    return heads[kind](in_features, hidden, dropout)


class Normalize(nn.Module):
    """Per-channel (x - mean) / std, stored with the model so every runtime applies it identically."""

    def __init__(self, mean: tuple[float, ...], std: tuple[float, ...]):
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


class AgeGenderNet(nn.Module):
    """normalise -> backbone -> global average pool -> (gender head, age head).

    Input: float (B, 3, H, W) RGB in [0, 1]. Output: ModelOutput(gender_logit, age in years).
    """

    def __init__(
        self,
        backbone: nn.Module,
        feature_channels: int,
        *,
        mean: tuple[float, ...],
        std: tuple[float, ...],
        heads: ModelConfig,
        spec: BackboneSpec | None = None,
    ):
        """`heads`: the model config's head settings (head_hidden, dropout, age_head, gender_sees_age)."""
        super().__init__()
        if heads.gender_sees_age and heads.age_head != "bins":
            raise ConfigError(f"model.gender_sees_age needs model.age_head=bins (an age distribution), not '{heads.age_head}'")
        self.spec = spec  # the registry entry a pretrained backbone was built from (models/spec.py)
        self.normalize = Normalize(mean, std)
        self.backbone = backbone
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.gender_sees_age = heads.gender_sees_age
        gender_inputs = feature_channels + (MAX_AGE + 1 if heads.gender_sees_age else 0)
        self.gender_head = GenderHead(gender_inputs, heads.head_hidden, heads.dropout)
        self.age_head = create_age_head(heads.age_head, feature_channels, heads.head_hidden, heads.dropout)
        self.mean, self.std = tuple(mean), tuple(std)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.pool(self.backbone(self.normalize(x))).flatten(1)  # (B, C)

    def heads(self, features: torch.Tensor) -> ModelOutput:
        age, age_logits = self.age_head(features)
        gender_inputs = features
        if self.gender_sees_age:
            gender_inputs = torch.cat([features, age_logits.detach().softmax(dim=1)], dim=1)
        return ModelOutput(self.gender_head(gender_inputs), age, age_logits)

    def forward(self, x: torch.Tensor) -> ModelOutput:
        return self.heads(self.features(x))
