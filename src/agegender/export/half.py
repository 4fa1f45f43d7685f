"""Model files written for use elsewhere: float16 copies of a checkpoint, and the mirror-averaging
default a written file records (export.onnx writes the ONNX graph).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from agegender.data.align import FaceCropSpec
from agegender.models.checkpoint import METADATA_KEY, read_meta, read_weights, with_inference_default, write_safetensors


def save_half_checkpoint(source: Path, out: Path, face_crop: FaceCropSpec | None = None, tta: bool | None = None) -> Path:
    """A copy of a checkpoint with float16 weights: half the file, loaded back into float32 models
    (the bundled model ships this way). Integer buffers (BatchNorm counters) stay as they are.
    `face_crop`: the crop the copy records instead of the source's (one measured better for it);
    `tta`: the copy's default for mirror averaging (None: the source's)."""
    meta = read_meta(source)
    if face_crop is not None:
        meta["preprocessing"] = {**meta["preprocessing"], "face_crop": face_crop.to_dict()}
    meta = with_default_tta(meta, tta)
    half = {k: v.half() if v.dtype == torch.float32 else v for k, v in read_weights(source).items()}
    write_safetensors(out, half, {METADATA_KEY: json.dumps({**meta, "weights_dtype": "float16"})})
    return Path(out)


def with_default_tta(meta: dict[str, Any], tta: bool | None) -> dict[str, Any]:
    """`meta` recording whether predictors mirror-average by default (None: as it was)."""
    return meta if tta is None else with_inference_default(meta, "tta", tta)
