"""int8 quantisation of an exported ONNX graph, with onnxruntime's quantisation tools.

Two kinds (`export --quantize`):
- `int8`: dynamic. Weights are stored as int8 and each activation is quantised on the fly from its own
  range, so no data is needed; onnxruntime runs it as float work plus conversions, and it is not faster
  than float32 for these CNNs.
- `int8-static`: QDQ with per-channel int8 weights and uint8 activations whose ranges were measured once
  on calibration faces (a few hundred training chips), so onnxruntime fuses every convolution into one
  integer kernel (VNNI's `vpdpbusd` where the CPU has it). This is the one that is faster
  (benchmarks/bench_quantized.py measures both against float32 on accuracy and speed).

Both use 7-bit weights (`reduce_range`): x86 CPUs without VNNI sum pairs of uint8 x int8 products in
saturating int16 (AVX2 `vpmaddubsw`), and 2 x 255 x 127 overflows it (ages drifted by years on such
machines); 2 x 255 x 64 does not, so one file gives the same numbers on every CPU.
"""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path

import numpy as np

from agegender.config import ConfigError
from agegender.data.transforms import to_model_input
from agegender.models.backends import INPUT_NAME
from agegender.models.metadata import QUANTIZATIONS

CALIBRATION_BATCH = 20


def check_quantization(quantize: str | None, calibration: np.ndarray | None) -> None:
    """One error line for an unknown kind or static quantisation without calibration faces."""
    if quantize is not None and quantize not in QUANTIZATIONS:
        raise ConfigError(f"unknown quantisation '{quantize}'; choose one of {', '.join(QUANTIZATIONS)}")
    if quantize == "int8-static" and (calibration is None or len(calibration) == 0):
        raise ConfigError("int8-static quantisation needs calibration faces (export --calibration-data FOLDER)")
    if quantize != "int8-static" and calibration is not None:
        raise ConfigError("calibration faces apply to int8-static quantisation only")


def quantize_graph(path: str, quantize: str, calibration: np.ndarray | None) -> None:
    """Replace the float32 graph at `path` by its quantised form."""
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.quantization.shape_inference import quant_pre_process

    prepared = path + ".prepared.onnx"
    try:
        with _root_warnings_silenced():
            quant_pre_process(path, prepared)  # shape inference + graph cleanup, as onnxruntime recommends
            if quantize == "int8":
                quantize_dynamic(prepared, path, weight_type=QuantType.QInt8, reduce_range=True)
            else:
                _quantize_static(prepared, path, calibration)
    finally:
        Path(prepared).unlink(missing_ok=True)


def _quantize_static(prepared: str, path: str, faces: np.ndarray) -> None:
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    quantize_static(
        prepared, path, _CalibrationFaces(faces), quant_format=QuantFormat.QDQ, per_channel=True,
        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, reduce_range=True,
        calibrate_method=CalibrationMethod.MinMax,
    )  # fmt: skip


@contextlib.contextmanager
def _root_warnings_silenced():
    """onnxruntime's quantiser logs on the root logger, e.g. that a rank-1 constant (the age bins of the
    expected-age product) has no channel axis to quantise per channel; it then quantises it per tensor."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


class _CalibrationFaces:
    """onnxruntime's CalibrationDataReader protocol over uint8 (N, S, S, 3) faces, a batch at a time."""

    def __init__(self, faces: np.ndarray):
        self._starts = iter(range(0, len(faces), CALIBRATION_BATCH))
        self._faces = faces

    def get_next(self) -> dict | None:
        start = next(self._starts, None)
        if start is None:
            return None
        batch = self._faces[start : start + CALIBRATION_BATCH]
        return {INPUT_NAME: to_model_input(batch, channels_last=False).numpy()}
