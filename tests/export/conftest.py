from __future__ import annotations

from pathlib import Path

import pytest

from agegender.config import DataConfig, ModelConfig, RunConfig
from agegender.models.checkpoint import build_meta, save_checkpoint
from agegender.models.registry import create_model


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory) -> Path:
    model = create_model(ModelConfig(widths=(8, 16)))
    config = RunConfig(data=DataConfig(image_size=32), model=ModelConfig(widths=(8, 16)))
    path = tmp_path_factory.mktemp("model") / "tiny.safetensors"
    save_checkpoint(path, model, build_meta(model, config, label_stats={"age_mean": 33.0}))
    return path
