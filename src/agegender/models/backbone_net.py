"""A pretrained backbone's registry entry: the network built from its spec (Model B's heads on it)."""

from __future__ import annotations

from agegender.config import ModelConfig
from agegender.models.heads import AgeGenderNet
from agegender.models.registry import register_model
from agegender.models.spec import BackboneSpec


def create_backbone_net(spec: BackboneSpec, config: ModelConfig) -> AgeGenderNet:
    """The architecture only (random weights); pretrained.load_pretrained_weights loads the pretrained ones."""
    backbone, channels = spec.create()
    return AgeGenderNet(
        backbone,
        channels,
        mean=spec.mean,
        std=spec.std,
        heads=config,
        spec=spec,
    )


def register_backbone(name: str, spec: BackboneSpec) -> None:
    register_model(name, spec)(lambda config: create_backbone_net(spec, config))
