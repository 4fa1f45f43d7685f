"""Training's files besides the model file: the resume point of each epoch (its last weights and its
training state, written so that a kill anywhere leaves a consistent pair), the repair of a best
checkpoint a kill left behind, and a run's start from another checkpoint's weights (--init).

The model file format itself (read, validate, save, load) is models.checkpoint's.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from agegender.atomic_write import write_atomically
from agegender.models.checkpoint import (
    file_sha256,
    load_state_strictly,
    load_weights,
    read_meta,
    read_weights,
    save_checkpoint,
)
from agegender.models.metadata import CheckpointError


def init_from_checkpoint(model: nn.Module, path: Path, model_name: str) -> None:
    """Copy a checkpoint's weights into a freshly built model of the same name and shape (--init)."""
    path = Path(path)
    meta = read_meta(path)
    if "ensemble" in meta:
        raise CheckpointError(f"{path}: an ensemble checkpoint cannot start a run; --init one of its members")
    trained_as = meta.get("config", {}).get("model", {}).get("name")
    if trained_as != model_name:
        raise CheckpointError(f"{path}: --init checkpoint holds model '{trained_as}', this run trains '{model_name}'")
    state = read_weights(path)
    if getattr(model, "gender_sees_age", False):
        state = with_age_inputs_for_gender(state, model)
    load_state_strictly(model, state, path)


GENDER_INPUT_LAYER = "gender_head.mlp.1.weight"  # heads._mlp: Dropout, Linear, ...


def with_age_inputs_for_gender(state: dict[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    """A checkpoint whose gender head reads the features alone, for a model whose gender head also reads the
    age distribution (model.gender_sees_age): the new inputs start at weight zero, so the run starts from
    exactly the checkpoint's predictions and learns what the ages add."""
    old, wanted = state.get(GENDER_INPUT_LAYER), model.state_dict()[GENDER_INPUT_LAYER]
    if old is None or old.shape[0] != wanted.shape[0] or old.shape[1] >= wanted.shape[1]:
        return state  # a head that already reads the ages, or another shape: load_state_strictly names a mismatch
    added = old.new_zeros(old.shape[0], wanted.shape[1] - old.shape[1])
    return {**state, GENDER_INPUT_LAYER: torch.cat([old, added], dim=1)}


def save_resume_point(
    weights_path: Path, state_path: Path, model: nn.Module, meta: dict[str, Any], state: dict[str, Any]
) -> None:
    """An epoch's last weights and training state, written so that a kill anywhere leaves a consistent pair.

    The weights file comes first; the training state follows with its own copy of the same weights
    and the SHA-256 of that file. A kill between the two writes leaves the new weights file beside
    the previous epoch's state, which `load_resume_point` recognises by the digest and resumes
    from, using the weights inside the state.
    """
    save_checkpoint(weights_path, model, meta)
    weights = {name: tensor.detach().cpu().clone() for name, tensor in model.state_dict().items()}
    save_training_state(state_path, {**state, "weights": weights, "weights_sha256": file_sha256(weights_path)})


def load_resume_point(model: nn.Module, weights_path: Path, state_path: Path) -> tuple[dict[str, Any], str | None]:
    """Load the weights that belong to the training state into `model`; return the state and a note.

    The note (None when all is well) says what was repaired: a weights file from a later epoch
    than the state (killed between the two writes of `save_resume_point`), or a state saved before
    it carried its weights, whose pairing cannot be checked.
    """
    state = load_training_state(state_path)
    if "weights" not in state:  # saved by an older version: the weights file is all there is
        load_weights(model, weights_path)
        note = f"{state_path}: saved by an older version, so its match with {weights_path.name} cannot be checked"
        return state, note
    load_state_strictly(model, state["weights"], state_path)
    if file_sha256(weights_path) == state.get("weights_sha256"):
        return state, None
    return state, (
        f"{weights_path} is not the file the training state of epoch {state.get('epoch')} was saved with "
        f"(the run stopped between the two writes): resuming after epoch {state.get('epoch')} "
        "from the weights inside the training state"
    )


def repair_best(best_path: Path, last_path: Path, evaluated: nn.Module, best_epoch: int, epoch: int) -> str | None:
    """Write `best_path` from a resumed state's validated weights if a kill left it behind.

    Training writes the best checkpoint AFTER `save_resume_point`, so the best file is never ahead
    of the training state; a kill between the two leaves it behind exactly when the state's own
    epoch was its best, and then `evaluated` (the state's validated weights) is what belongs there.
    Returns a note when it rewrote the file.
    """
    if best_epoch != epoch or best_epoch == 0:
        return None
    try:
        if read_meta(best_path).get("epoch") == best_epoch:
            return None
    except CheckpointError:  # missing: killed before the run's first best checkpoint
        pass
    save_checkpoint(best_path, evaluated, {**read_meta(last_path), "epoch": best_epoch})
    return f"{best_path}: rewritten with the weights of epoch {best_epoch} (the run stopped before writing it)"


def save_training_state(path: Path, state: dict[str, Any]) -> None:
    """Optimizer, scheduler, early stopping and RNG state for --resume (tensors and plain values only)."""
    write_atomically(Path(path), lambda temporary: torch.save(state, temporary))


def load_training_state(path: Path) -> dict[str, Any]:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError as error:
        raise CheckpointError(f"{path}: training state not found (cannot resume)") from error
    except Exception as error:  # weights_only refuses arbitrary objects; corrupt zips raise RuntimeError
        raise CheckpointError(f"{path}: corrupt or unsafe training state ({error})") from error
