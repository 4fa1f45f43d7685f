"""Predictor: a checkpoint (the bundled one by default) turned into age/gender predictions."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import numpy as np
import torch

from agegender.data.images import load_rgb, resize_square
from agegender.models.checkpoint import LoadedCheckpoint, load_checkpoint
from agegender.results import FacePrediction, Prediction
from agegender.training.loop import predict_arrays

BUNDLED_MODEL = "model_a.safetensors"


def bundled_model_path() -> Path:
    return Path(str(resources.files("agegender") / "assets" / BUNDLED_MODEL))


class Predictor:
    """Age and P(female) for face images, with the checkpoint's own preprocessing."""

    def __init__(self, checkpoint: LoadedCheckpoint, source: Path):
        self.checkpoint = checkpoint
        self.model = checkpoint.model.to(memory_format=torch.channels_last).eval()
        self.image_size = checkpoint.image_size
        self.source = source

    @classmethod
    def from_checkpoint(cls, path: Path | str | None = None) -> "Predictor":
        """Load `path`, or the model bundled with the package when None."""
        path = Path(path) if path is not None else bundled_model_path()
        return cls(load_checkpoint(path), path)

    def prepare_face(self, rgb: np.ndarray) -> np.ndarray:
        """An RGB face crop -> the model's uint8 input size (the same resize training used)."""
        return resize_square(rgb, self.image_size)

    def predict_faces(self, faces: np.ndarray, batch_size: int = 256) -> tuple[np.ndarray, np.ndarray]:
        """(age, P(female)) for uint8 (N, S, S, 3) faces already at the model's size."""
        return predict_arrays(self.model, faces, batch_size=batch_size)

    def predict_crops(self, crops: list[np.ndarray]) -> list[FacePrediction]:
        if not crops:
            return []
        ages, p_female = self.predict_faces(np.stack([self.prepare_face(c) for c in crops]))
        return [FacePrediction(age=float(a), p_female=float(p)) for a, p in zip(ages, p_female)]

    def predict_cropped_file(self, path: Path) -> Prediction:
        """Treat a whole image file as one already-cropped face (--no-detect)."""
        face = load_rgb(path, target_size=self.image_size)
        return Prediction(source=str(path), faces=tuple(self.predict_crops([face])))
