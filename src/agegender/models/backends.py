"""Inference backends: one protocol, a PyTorch and an onnxruntime implementation.

A backend turns uint8 (N, S, S, 3) RGB faces, already at the model's input size, into age,
P(female) and, where the model has a bins head, the age distribution (`FaceOutputs`). It also
says what its model file describes (`info`: config, meta, image_size, face_crop). Detection,
cropping, test-time augmentation and results belong to `inference.predictor.Predictor`, which
takes any backend (as ultralytics' AutoBackend hides runtimes behind one forward call).

ONNX files are written by `export.onnx`; their layout (input/output names, the metadata key) is
read here, so reading a model never imports the exporter.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from torch import nn

from agegender.data.samples import MAX_AGE
from agegender.data.transforms import to_model_input
from agegender.models.checkpoint import METADATA_KEY, CheckpointError, CheckpointInfo, LoadedCheckpoint, load_checkpoint
from agegender.models.metadata import validate_meta

BUNDLED_MODEL = "bundled_model.safetensors"  # Model B on dlib's face recogniser, float16 (recipes/build_bundled_model.sh)
# The exported graph's interface (export.onnx writes it, OnnxBackend reads it)
INPUT_NAME = "image"
OUTPUT_NAMES = ("age", "p_female")
PROBS_NAME = "age_probs"  # a third output where the model has a bins head (files exported before it lack it)
# Inputs per forward pass (with mirror averaging, half of them mirror images): 32 ran faster than 64, 128 or
# 256 on onnxruntime int8 and PyTorch float32 and bfloat16 alike (the bundled model, one thread: 3%, 8% and
# 10-20% over 64), its activations staying closer to the CPU's caches (bench_inference.py --batch-sweep).
BATCH_SIZE = 32


def bundled_model_path() -> Path:
    return Path(str(resources.files("agegender") / "assets" / BUNDLED_MODEL))


@dataclass(frozen=True)
class FaceOutputs:
    age: np.ndarray  # (N,) years
    p_female: np.ndarray  # (N,)
    age_probs: np.ndarray | None  # (N, MAX_AGE + 1) softmax over 1-year bins; None: no bins head

    @classmethod
    def empty(cls) -> "FaceOutputs":
        return cls(np.zeros(0, np.float32), np.zeros(0, np.float32), None)


class InferenceBackend(Protocol):
    runtime: str  # "torch" | "torch-bf16" | "onnx"
    source: Path  # the model file
    info: CheckpointInfo  # what the model file says of itself (a LoadedCheckpoint, or an ONNX file's metadata)

    def predict(self, faces: np.ndarray, batch_size: int = BATCH_SIZE, mirrored: bool = False) -> FaceOutputs:
        """uint8 (N, S, S, 3) RGB faces at info.image_size -> age, P(female), optional age distribution;
        `mirrored`: each face's outputs averaged with its mirror image's (a pass holds both)."""
        ...


def mirror_mean(outputs: np.ndarray) -> np.ndarray:
    """(2N, ...) outputs of N faces then their mirror images -> (N, ...) their means."""
    n = len(outputs) // 2
    return (outputs[:n] + outputs[n:]) / 2


def faces_per_pass(batch_size: int, mirrored: bool) -> int:
    """Faces per model pass of `batch_size` inputs: half as many with their mirror images beside them."""
    return max(1, batch_size // 2) if mirrored else batch_size


@torch.no_grad()
def predict_outputs(
    model: nn.Module, images: np.ndarray, batch_size: int = BATCH_SIZE, channels_last: bool = True, mirrored: bool = False
) -> FaceOutputs:
    """Age, P(female) and, for a bins head, the age distribution of uint8 (N, S, S, 3) faces, without augmentation
    (`mirrored`: averaged with each face's mirror image)."""
    model.eval()
    weights = next(model.parameters())  # inputs follow the weights' device and precision (bfloat16 included)
    average = mirror_mean if mirrored else (lambda outputs: outputs)
    ages, p_female, probs = [], [], []
    step = faces_per_pass(batch_size, mirrored)
    for begin in range(0, len(images), step):
        x = to_model_input(images[begin : begin + step], channels_last, with_mirrors=mirrored)
        output = model(x.to(weights.device, weights.dtype))
        ages.append(average(output.age.float().cpu().numpy()))
        p_female.append(average(torch.sigmoid(output.gender_logit).float().cpu().numpy()))
        if output.age_logits is not None:
            probs.append(average(output.age_logits.float().softmax(dim=1).cpu().numpy()))
    if not ages:
        return FaceOutputs.empty()
    return FaceOutputs(np.concatenate(ages), np.concatenate(p_female), np.concatenate(probs) if probs else None)


def predict_arrays(
    model: nn.Module, images: np.ndarray, batch_size: int = BATCH_SIZE, channels_last: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """(age in years, P(female)) for uint8 (N, S, S, 3) faces, without augmentation."""
    predictions = predict_outputs(model, images, batch_size, channels_last)
    return predictions.age, predictions.p_female


class ModelOutputError(CheckpointError):
    """A model file whose network gives outputs no model can mean (NaN, a probability of 5, an age of -4e8)."""


AGE_RANGE = (-20.0, 200.0)  # a regression head may stray a little past 0-116; beyond this the file is broken


def checked_outputs(outputs: FaceOutputs, n: int, source: Path) -> FaceOutputs:
    """`outputs` of `n` faces, as (n,) arrays, if every value is one a model can mean; else one error line."""
    age, p_female = np.asarray(outputs.age), np.asarray(outputs.p_female)
    if age.size != n or p_female.size != n:
        raise ModelOutputError(f"{source}: the model gave {age.size} ages and {p_female.size} probabilities for {n} faces")
    age, p_female = age.reshape(n), p_female.reshape(n)
    problems = [
        (not np.isfinite(age).all(), "an age that is not a number"),
        (not np.isfinite(p_female).all(), "a probability that is not a number"),
        (np.isfinite(age).all() and ((age < AGE_RANGE[0]) | (age > AGE_RANGE[1])).any(), f"an age outside {AGE_RANGE}"),
        (np.isfinite(p_female).all() and ((p_female < -1e-4) | (p_female > 1 + 1e-4)).any(), "P(female) outside 0-1"),
    ]
    found = [text for bad, text in problems if bad]
    if found:
        raise ModelOutputError(f"{source}: the model gave {found[0]}; the file is broken or not an age/gender model")
    return FaceOutputs(age, p_female, outputs.age_probs)


def probe(backend: "InferenceBackend") -> None:
    """One grey face through a freshly loaded model: a broken file fails at load, not mid-run."""
    size = backend.info.image_size
    backend.predict(np.full((1, size, size, 3), 128, np.uint8))


def native_bfloat16() -> bool:
    """Whether this CPU multiplies bfloat16 in hardware (AMX tiles or AVX512-BF16), where oneDNN's bfloat16
    convolutions run about twice as fast as float32; elsewhere they are emulated and slower."""
    checks = ("_is_amx_tile_supported", "_is_avx512_bf16_supported")  # private, but torch's only CPU-feature query
    return any(getattr(torch.cpu, name, lambda: False)() for name in checks)


PRECISIONS = {"float32": torch.float32, "bfloat16": torch.bfloat16}


class TorchBackend:
    """A .safetensors checkpoint run by PyTorch (channels-last, eval mode), in float32 or bfloat16: the
    weights and activations cast to bfloat16 (runtime "torch-bf16"), outputs returned as float32."""

    def __init__(self, checkpoint: LoadedCheckpoint, source: Path, precision: str = "float32"):
        if precision not in PRECISIONS:
            raise ValueError(f"unknown precision '{precision}'; choose one of {', '.join(PRECISIONS)}")
        self.info = checkpoint
        self.source = Path(source)
        self.runtime = "torch" if precision == "float32" else "torch-bf16"
        self.model = checkpoint.model.to(PRECISIONS[precision], memory_format=torch.channels_last).eval()

    @classmethod
    def from_file(cls, path: Path | str | None = None, precision: str = "float32") -> "TorchBackend":
        """`path`, or the model bundled with the package when None."""
        path = Path(path) if path is not None else bundled_model_path()
        backend = cls(load_checkpoint(path), path, precision)
        probe(backend)
        return backend

    def predict(self, faces: np.ndarray, batch_size: int = BATCH_SIZE, mirrored: bool = False) -> FaceOutputs:
        outputs = predict_outputs(self.model, faces, batch_size, mirrored=mirrored)
        return checked_outputs(outputs, len(faces), self.source)


class OnnxModelError(CheckpointError):
    """A file that is not an agegender ONNX model, or an export that does not match PyTorch."""


class ExportedModelInfo(CheckpointInfo):
    """What an ONNX file says about the checkpoint it came from (a LoadedCheckpoint minus the weights)."""


class OnnxBackend:
    """An exported .onnx file run by onnxruntime: age, P(female) and, where the file has it, the age distribution.

    `source` is the file named to the user: the .onnx file, or the checkpoint a cached one was built from.
    """

    runtime = "onnx"

    def __init__(self, session, info: ExportedModelInfo, source: Path):
        self.session = session
        self.info = info
        self.source = Path(source)
        self.outputs = [o.name for o in session.get_outputs()]

    @classmethod
    def from_file(cls, path: Path | str, *, threads: int | None = None, source: Path | None = None) -> "OnnxBackend":
        path = Path(path)
        session = create_session(path, threads)
        backend = cls(session, read_onnx_info(session, path), source or path)
        probe(backend)
        return backend

    def predict(self, faces: np.ndarray, batch_size: int = BATCH_SIZE, mirrored: bool = False) -> FaceOutputs:
        runs, step = [], faces_per_pass(batch_size, mirrored)
        for begin in range(0, len(faces), step):
            batch = to_model_input(faces[begin : begin + step], channels_last=False, with_mirrors=mirrored).numpy()
            runs.append(self.session.run(self.outputs, {INPUT_NAME: batch}))  # each (B, ...), B = step or 2 x step
        if not runs:
            return FaceOutputs.empty()
        try:
            if mirrored:
                runs = [[mirror_mean(np.asarray(output)) for output in run] for run in runs]
            age, p_female = (np.concatenate([run[k].reshape(-1) for run in runs]) for k in (0, 1))
            probs = np.concatenate([run[2] for run in runs]) if len(self.outputs) == 3 else None
        except (ValueError, AttributeError, TypeError) as error:  # outputs that are not arrays of numbers
            raise ModelOutputError(f"{self.source}: the model's outputs are not per-face numbers ({error})") from None
        if probs is not None and probs.shape != (len(faces), MAX_AGE + 1):
            raise ModelOutputError(f"{self.source}: the age distribution has shape {probs.shape}, not ({len(faces)}, {MAX_AGE + 1})")
        return checked_outputs(FaceOutputs(age, p_female, probs), len(faces), self.source)


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
    if names not in (([INPUT_NAME], list(OUTPUT_NAMES)), ([INPUT_NAME], [*OUTPUT_NAMES, PROBS_NAME])):
        raise OnnxModelError(f"{path}: unexpected graph inputs/outputs {names}")
    _check_input_size(session.get_inputs()[0].shape, info.image_size, path)
    return info


def _check_input_size(shape: list, image_size: int, path: Path) -> None:
    """The graph's (batch, 3, S, S) input must be the size its metadata promises (dynamic axes pass)."""
    expected = (None, 3, image_size, image_size)
    if len(shape) != 4 or any(isinstance(dim, int) and dim != want for dim, want in zip(shape[1:], expected[1:])):
        raise OnnxModelError(f"{path}: graph input shape {shape} does not fit metadata image_size {image_size}")
