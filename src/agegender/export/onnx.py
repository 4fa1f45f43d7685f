"""ONNX export and the onnxruntime predictor.

The exported graph is a wrapper around the checkpoint's model that takes float32 (B, 3, S, S)
RGB in [0, 1] (exactly `data.transforms.to_model_input`, so pixel conversion keeps one owner)
and returns (age in years, P(female)), with a dynamic batch axis. Normalisation is inside the
model, so it is inside the graph too. The checkpoint's metadata (config, preprocessing, label
statistics) is stored as JSON in the ONNX `metadata_props`, so `OnnxPredictor` needs nothing
but the .onnx file.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from agegender.atomic_write import write_atomically
from agegender.config import ConfigError, RunConfig
from agegender.data.align import FaceCropSpec
from agegender.data.transforms import to_model_input
from agegender.inference.detect import DEFAULT_DETECTOR
from agegender.inference.predictor import Predictor
from agegender.models.checkpoint import METADATA_KEY, CheckpointError, read_face_crop
from agegender.models.metadata import validate_meta

INPUT_NAME = "image"
OUTPUT_NAMES = ("age", "p_female")
OPSET = 17
# A correct export differs from PyTorch only by float rounding; more than this means a broken graph.
MAX_AGE_DIFF = 1e-3  # years
MAX_P_DIFF = 1e-4


class OnnxModelError(CheckpointError):
    """A file that is not an agegender ONNX model, or an export that does not match PyTorch."""


class AgeGenderOnnxWrapper(nn.Module):
    """float (B, 3, S, S) in [0, 1] -> (age (B,), P(female) (B,))."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        output = self.model(image)
        return output.age, torch.sigmoid(output.gender_logit)


@dataclass(frozen=True)
class ExportReport:
    path: Path
    bytes: int
    max_age_diff: float  # years, onnxruntime vs PyTorch on the check batch
    max_p_female_diff: float
    quantized: bool

    def summary(self) -> str:
        kind = "int8 dynamic-quantised" if self.quantized else "float32"
        return (
            f"wrote {self.path} ({kind}, {self.bytes / 1e6:.2f} MB); onnxruntime vs PyTorch max abs difference: "
            f"age {self.max_age_diff:.2e} years, p_female {self.max_p_female_diff:.2e}"
        )


@dataclass(frozen=True)
class ExportedModelInfo:
    """What an ONNX file says about the checkpoint it came from (mirrors LoadedCheckpoint, minus weights)."""

    config: RunConfig
    meta: dict[str, Any]

    @property
    def image_size(self) -> int:
        return int(self.meta["preprocessing"]["image_size"])

    @property
    def face_crop(self) -> FaceCropSpec:
        return read_face_crop(self.meta)


def export_onnx(
    checkpoint: Path | None, out: Path, *, quantize: str | None = None, check_batch: int = 8, seed: int = 0
) -> ExportReport:
    """Export a checkpoint (None: the bundled model) to ONNX, then compare onnxruntime with PyTorch.

    `quantize="int8"` applies onnxruntime dynamic quantisation (int8 weights); the comparison then
    reports the quantisation error instead of failing on it.
    """
    if quantize not in (None, "int8"):
        raise ConfigError(f"unknown quantisation '{quantize}'; the only choice is int8")
    predictor = Predictor.from_checkpoint(checkpoint)
    loaded = predictor.checkpoint
    wrapper = AgeGenderOnnxWrapper(loaded.model.to(memory_format=torch.contiguous_format)).eval()
    size = loaded.image_size
    example = torch.rand(2, 3, size, size, generator=torch.Generator().manual_seed(seed))
    meta = {**loaded.meta, "onnx": {"input": INPUT_NAME, "outputs": list(OUTPUT_NAMES), "quantized": quantize}}
    out = Path(out)
    write_atomically(out, lambda temporary: _write_onnx(wrapper, example, temporary, meta, quantize))
    wrapper.eval()  # the exporter restores the mode it found on the wrapper; be explicit anyway
    age_diff, p_diff = _compare_with_torch(wrapper, OnnxPredictor.from_file(out), size, check_batch, seed)
    if quantize is None and (age_diff > MAX_AGE_DIFF or p_diff > MAX_P_DIFF):
        out.unlink()
        raise OnnxModelError(
            f"exported graph disagrees with PyTorch (age {age_diff:.2e} years, p_female {p_diff:.2e}); file removed"
        )
    return ExportReport(out, out.stat().st_size, age_diff, p_diff, quantize is not None)


def _write_onnx(wrapper: nn.Module, example: torch.Tensor, path: str, meta: dict, quantize: str | None) -> None:
    import onnx

    dynamic = {name: {0: "batch"} for name in (INPUT_NAME, *OUTPUT_NAMES)}
    with warnings.catch_warnings():
        # The TorchScript exporter is deprecated in favour of the dynamo one, which needs onnxscript
        # (not installed); the TorchScript one handles this plain CNN exactly.
        warnings.simplefilter("ignore")
        torch.onnx.export(
            wrapper, (example,), path, dynamo=False, input_names=[INPUT_NAME], output_names=list(OUTPUT_NAMES),
            dynamic_axes=dynamic, opset_version=OPSET,
        )  # fmt: skip
    if quantize == "int8":
        from onnxruntime.quantization import QuantType, quantize_dynamic
        from onnxruntime.quantization.shape_inference import quant_pre_process

        prepared = path + ".prepared.onnx"
        try:
            quant_pre_process(path, prepared)  # shape inference + graph cleanup, as onnxruntime recommends
            # reduce_range: 7-bit weights. Without VNNI, x86 CPUs multiply uint8 activations by int8
            # weights in pairs summed into saturating int16 (AVX2 vpmaddubsw): 2 x 255 x 127 overflows
            # it and ages came out up to 9 years off on such machines; 2 x 255 x 64 does not.
            quantize_dynamic(prepared, path, weight_type=QuantType.QInt8, reduce_range=True)
        finally:
            Path(prepared).unlink(missing_ok=True)
    model = onnx.load(path)
    del model.metadata_props[:]
    entry = model.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, json.dumps(meta)
    onnx.save(model, path)


@torch.no_grad()
def _compare_with_torch(wrapper: nn.Module, onnx_predictor: "OnnxPredictor", size: int, n: int, seed: int):
    faces = np.random.default_rng(seed).integers(0, 256, (n, size, size, 3), dtype=np.uint8)
    torch_age, torch_p = wrapper(to_model_input(faces, channels_last=False))
    onnx_age, onnx_p = onnx_predictor.predict_faces(faces)
    return float(np.abs(onnx_age - torch_age.numpy()).max()), float(np.abs(onnx_p - torch_p.numpy()).max())


class OnnxPredictor(Predictor):
    """`Predictor` on onnxruntime: same detection, cropping, TTA and streaming; the model is the .onnx file."""

    runtime = "onnx"

    def __init__(self, session, info: ExportedModelInfo, source: Path, **options):
        self.session = session
        self.checkpoint = info
        self.model = None
        self.image_size = info.image_size
        self.source = source
        detector, margin = options.pop("detector", DEFAULT_DETECTOR), options.pop("margin", None)
        self._configure(
            detector, margin, options.pop("tta", False), options.pop("crop", None), options.pop("age_groups", None)
        )
        if options:
            raise TypeError(f"unexpected options {sorted(options)}")

    @classmethod
    def from_file(cls, path: Path | str, *, threads: int | None = None, **options) -> "OnnxPredictor":
        path = Path(path)
        session = create_session(path, threads)
        return cls(session, read_onnx_info(session, path), path, **options)

    @classmethod
    def from_checkpoint(cls, path: Path | str | None = None, **options) -> "OnnxPredictor":
        if path is None:
            raise OnnxModelError(
                "the onnx runtime needs a model file: create one with `agegender export --format onnx`"
            )
        return cls.from_file(path, **options)

    def predict_faces(self, faces: np.ndarray, batch_size: int = 256) -> tuple[np.ndarray, np.ndarray]:
        """(age, P(female)) for uint8 (N, S, S, 3) faces already at the model's size."""
        ages, p_female = [], []
        for begin in range(0, len(faces), batch_size):
            batch = to_model_input(faces[begin : begin + batch_size], channels_last=False).numpy()  # (B, 3, S, S)
            age, p = self.session.run(list(OUTPUT_NAMES), {INPUT_NAME: batch})
            ages.append(age)
            p_female.append(p)
        if not ages:
            return np.zeros(0, np.float32), np.zeros(0, np.float32)
        return np.concatenate(ages), np.concatenate(p_female)


def create_session(path: Path, threads: int | None = None):
    import onnxruntime as ort

    if not path.is_file():
        raise OnnxModelError(f"{path}: ONNX model not found")
    options = ort.SessionOptions()
    if threads is not None:
        options.intra_op_num_threads = threads
    try:
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as error:  # onnxruntime raises InvalidProtobuf, Fail, InvalidGraph, ...
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise OnnxModelError(f"{path}: not a readable ONNX model ({first_line})") from error


def read_onnx_info(session, path: Path) -> ExportedModelInfo:
    raw = session.get_modelmeta().custom_metadata_map.get(METADATA_KEY)
    if raw is None:
        raise OnnxModelError(f"{path}: ONNX model without agegender metadata (export it with `agegender export`)")
    try:
        meta = json.loads(raw)
        config = validate_meta(meta, path)  # the checkpoint schema (models/metadata.py): same fields, same bounds
    except json.JSONDecodeError as error:
        raise OnnxModelError(f"{path}: corrupt agegender metadata in ONNX model ({error})") from error
    except CheckpointError as error:
        raise OnnxModelError(str(error)) from None
    info = ExportedModelInfo(config, meta)
    names = [i.name for i in session.get_inputs()], [o.name for o in session.get_outputs()]
    if names != ([INPUT_NAME], list(OUTPUT_NAMES)):
        raise OnnxModelError(f"{path}: unexpected graph inputs/outputs {names}")
    _check_input_size(session.get_inputs()[0].shape, info.image_size, path)
    return info


def _check_input_size(shape: list, image_size: int, path: Path) -> None:
    """The graph's (batch, 3, S, S) input must be the size its metadata promises (dynamic axes pass)."""
    expected = (None, 3, image_size, image_size)
    if len(shape) != 4 or any(isinstance(dim, int) and dim != want for dim, want in zip(shape[1:], expected[1:])):
        raise OnnxModelError(f"{path}: graph input shape {shape} does not fit metadata image_size {image_size}")

