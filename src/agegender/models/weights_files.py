"""Reading a pretrained backbone's weights file: the one reader and the one error every backbone uses.

Its own module, so that backbone modules (cydral_resnet, dlib_resnet) read their files without importing
models.pretrained, which finds and loads every backbone's weights.
"""

from __future__ import annotations

from pathlib import Path

import torch

from agegender.errors import UserInputError


class PretrainedWeightsError(UserInputError):
    """Pretrained weights are unavailable, unreadable, or for another architecture."""


def read_weights_file(path: Path) -> dict[str, torch.Tensor]:
    """A state dict from .pth/.pt (tensors only: weights_only refuses code) or .safetensors."""
    path = Path(path)
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # corrupt zips, pickles with code, wrong format: all one message
        raise PretrainedWeightsError(f"{path}: not a readable weights file ({error})") from error
    state = state.get("state_dict", state) if isinstance(state, dict) else state
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise PretrainedWeightsError(f"{path}: not a weights file (expected a mapping of names to tensors)")
    return state
