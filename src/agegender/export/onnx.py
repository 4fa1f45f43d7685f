"""ONNX export: writes the graph and checks it against PyTorch (inference.backends.OnnxBackend runs it).

The exported graph is a wrapper around the checkpoint's model that takes float32 (B, 3, S, S)
RGB in [0, 1] (exactly `data.transforms.to_model_input`, so pixel conversion keeps one owner)
and returns (age in years, P(female)) and, for a model with a bins head, the age distribution
(B, MAX_AGE + 1) that age intervals and age groups need, with a dynamic batch axis. Normalisation is inside the
model, so it is inside the graph too. The checkpoint's metadata (config, preprocessing, label
statistics) is stored as JSON in the ONNX `metadata_props`, with the sha256 of the checkpoint file
it came from (`onnx.source_sha256`, which inference.runtime's cache checks), so `OnnxBackend`
needs nothing but the .onnx file.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from agegender.atomic_write import write_atomically
from agegender.data.transforms import to_model_input
from agegender.export.half import with_default_tta
from agegender.export.quantize import check_quantization, quantize_graph
from agegender.models.backends import (  # noqa: F401  (OnnxModelError: re-exported, export raises it too)
    INPUT_NAME,
    OUTPUT_NAMES,
    PROBS_NAME,
    OnnxBackend,
    OnnxModelError,
    bundled_model_path,
)
from agegender.models.checkpoint import METADATA_KEY, file_sha256, load_checkpoint

OPSET = 17
# A correct export differs from PyTorch only by float rounding; more than this means a broken graph.
MAX_AGE_DIFF = 1e-3  # years
MAX_P_DIFF = 1e-4


class AgeGenderOnnxWrapper(nn.Module):
    """float (B, 3, S, S) in [0, 1] -> (age (B,), P(female) (B,)[, age distribution (B, MAX_AGE + 1)])."""

    def __init__(self, model: nn.Module, with_probs: bool):
        super().__init__()
        self.model = model
        self.with_probs = with_probs

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, ...]:
        output = self.model(image)
        if not self.with_probs:
            return output.age, torch.sigmoid(output.gender_logit)
        return output.age, torch.sigmoid(output.gender_logit), output.age_logits.softmax(dim=1)


@dataclass(frozen=True)
class ExportReport:
    path: Path
    bytes: int
    max_age_diff: float  # years, onnxruntime vs PyTorch on the check batch
    max_p_female_diff: float
    quantization: str | None  # None (float32) | "int8" | "int8-static" (export.quantize)

    @property
    def quantized(self) -> bool:
        return self.quantization is not None

    def summary(self) -> str:
        kind = {None: "float32", "int8": "int8 dynamic-quantised", "int8-static": "int8 static-quantised (QDQ)"}[
            self.quantization
        ]
        faces = " on its calibration faces" if self.quantization == "int8-static" else ""
        return (
            f"wrote {self.path} ({kind}, {self.bytes / 1e6:.2f} MB); onnxruntime vs PyTorch max abs difference{faces}: "
            f"age {self.max_age_diff:.2e} years, p_female {self.max_p_female_diff:.2e}"
        )


def export_onnx(
    checkpoint: Path | None, out: Path, *, quantize: str | None = None, calibration: np.ndarray | None = None,
    tta: bool | None = None, check_batch: int = 8, seed: int = 0,
) -> ExportReport:  # fmt: skip
    """Export a checkpoint (None: the bundled model) to ONNX, then compare onnxruntime with PyTorch.

    `quantize` ("int8" dynamic or "int8-static", export.quantize) writes an int8 graph; static
    quantisation measures activation ranges on `calibration`, uint8 (N, S, S, 3) faces at the model's
    size (evaluation.evaluate.sample_split_faces). The comparison then reports the quantisation error instead
    of failing on it. `tta`: the file's default for mirror averaging (None: the checkpoint's).
    """
    check_quantization(quantize, calibration)
    source = Path(checkpoint) if checkpoint is not None else bundled_model_path()
    loaded = load_checkpoint(source)
    size = loaded.image_size
    example = torch.rand(2, 3, size, size, generator=torch.Generator().manual_seed(seed))
    model = loaded.model.to(memory_format=torch.contiguous_format).eval()
    with torch.no_grad():
        with_probs = model(example).age_logits is not None
    wrapper = AgeGenderOnnxWrapper(model, with_probs).eval()
    outputs = [*OUTPUT_NAMES, PROBS_NAME] if with_probs else list(OUTPUT_NAMES)
    onnx = {"input": INPUT_NAME, "outputs": outputs, "quantized": quantize, "source_sha256": file_sha256(source)}
    meta = with_default_tta({**loaded.meta, "onnx": onnx}, tta)
    out = Path(out)
    write_atomically(
        out, lambda temporary: _write_onnx(wrapper, example, temporary, meta, outputs, quantize, calibration)
    )
    wrapper.eval()  # the exporter restores the mode it found on the wrapper; be explicit anyway
    # Noise is enough to catch a broken float graph; a quantised one is held to real faces (its calibration set)
    faces = calibration[:64] if calibration is not None else _noise_faces(check_batch, size, seed)
    age_diff, p_diff = _compare_with_torch(wrapper, OnnxBackend.from_file(out), faces)
    if quantize is None and (age_diff > MAX_AGE_DIFF or p_diff > MAX_P_DIFF):
        out.unlink()
        raise OnnxModelError(
            f"exported graph disagrees with PyTorch (age {age_diff:.2e} years, p_female {p_diff:.2e}); file removed"
        )
    return ExportReport(out, out.stat().st_size, age_diff, p_diff, quantize)


def _write_onnx(
    wrapper: nn.Module, example: torch.Tensor, path: str, meta: dict, outputs: list[str], quantize: str | None,
    calibration: np.ndarray | None,
) -> None:  # fmt: skip
    import onnx

    dynamic = {name: {0: "batch"} for name in (INPUT_NAME, *outputs)}
    with warnings.catch_warnings():
        # The TorchScript exporter is deprecated in favour of the dynamo one, which needs onnxscript
        # (not installed); the TorchScript one handles this plain CNN exactly.
        warnings.simplefilter("ignore")
        torch.onnx.export(
            wrapper, (example,), path, dynamo=False, input_names=[INPUT_NAME], output_names=outputs,
            dynamic_axes=dynamic, opset_version=OPSET,
        )  # fmt: skip
    if quantize is not None:
        quantize_graph(path, quantize, calibration)
    model = onnx.load(path)
    del model.metadata_props[:]
    entry = model.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, json.dumps(meta)
    onnx.save(model, path)


def _noise_faces(n: int, size: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


@torch.no_grad()
def _compare_with_torch(wrapper: nn.Module, onnx_backend: OnnxBackend, faces: np.ndarray):
    torch_age, torch_p, *torch_probs = wrapper(to_model_input(faces, channels_last=False))
    onnx = onnx_backend.predict(faces)
    p_diff = float(np.abs(onnx.p_female - torch_p.numpy()).max())
    if torch_probs:  # the distribution: a probability per bin, held to P(female)'s tolerance
        p_diff = max(p_diff, float(np.abs(onnx.age_probs - torch_probs[0].numpy()).max()))
    return float(np.abs(onnx.age - torch_age.numpy()).max()), p_diff
