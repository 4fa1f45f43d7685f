"""Training's resume files (training.resume_points): the training state is plain tensors and values,
and loading it never runs code."""

from __future__ import annotations

import pathlib

import pytest
import torch

from agegender.models.metadata import CheckpointError
from agegender.training.resume_points import load_training_state, save_training_state
from tests.models.test_checkpoint import trained_looking_model


def test_training_state_round_trip(tmp_path):
    model = trained_looking_model()
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.01)
    model(torch.rand(2, 3, 32, 32)).age.sum().backward()
    optimizer.step()
    generator = torch.Generator().manual_seed(5)
    state = {
        "epoch": 4,
        "optimizer": optimizer.state_dict(),
        "early_stopping": {"best": 0.5, "best_epoch": 2, "bad_epochs": 1},
        "generator": generator.get_state(),
    }
    path = tmp_path / "last_state.pt"
    save_training_state(path, state)
    loaded = load_training_state(path)  # weights_only=True inside
    assert loaded["epoch"] == 4 and loaded["early_stopping"] == state["early_stopping"]
    torch.testing.assert_close(loaded["generator"], state["generator"])
    fresh = torch.optim.AdamW(model.parameters(), lr=0.01)
    fresh.load_state_dict(loaded["optimizer"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last_state.pt"]


class _Payload:
    """Unpickling this would touch a marker file: a stand-in for arbitrary code execution."""

    def __init__(self, marker: pathlib.Path):
        self.marker = marker

    def __reduce__(self):
        return (pathlib.Path.touch, (self.marker,))


def test_training_state_with_arbitrary_objects_is_refused(tmp_path):
    marker = tmp_path / "executed"
    path = tmp_path / "evil_state.pt"
    torch.save({"epoch": 1, "payload": _Payload(marker)}, path)
    with pytest.raises(CheckpointError, match="evil_state.pt: corrupt or unsafe training state"):
        load_training_state(path)
    assert not marker.exists()


def test_missing_training_state(tmp_path):
    with pytest.raises(CheckpointError, match="training state not found"):
        load_training_state(tmp_path / "last_state.pt")


def test_corrupt_training_state(tmp_path):
    path = tmp_path / "last_state.pt"
    path.write_bytes(b"PK\x03\x04 definitely not a zip")
    with pytest.raises(CheckpointError, match="last_state.pt: corrupt or unsafe"):
        load_training_state(path)
