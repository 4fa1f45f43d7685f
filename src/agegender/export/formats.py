"""Every output format `agegender export` writes, behind one table: the file suffix, the options the
format takes, and the function that writes it and says what it wrote in one line."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from agegender.config import ConfigError
from agegender.data.align import FaceCropSpec

# int8-static: a few hundred chips fix the activation ranges; more gave no better accuracy (docs/quantization.md)
DEFAULT_CALIBRATION_FACES = 300


@dataclass(frozen=True)
class ExportRequest:
    source: Path  # the checkpoint
    out: Path
    tta: bool | None = None  # the written file's mirror-averaging default (None: the source's)
    quantize: str | None = None  # onnx: None | "int8" | "int8-static"
    calibration_data: tuple[Path, ...] = ()  # int8-static: labelled folders whose train split calibrates it
    calibration_faces: int = DEFAULT_CALIBRATION_FACES
    face_template: str | None = None  # safetensors-fp16: the template the copy records
    # int8-static: the faces drawn from calibration_data, by a caller above the export layer (the CLI, with
    # evaluation.evaluate.sample_split_faces), so that export imports neither prediction nor evaluation
    calibration: np.ndarray | None = None


@dataclass(frozen=True)
class ExportFormat:
    suffix: str
    write: Callable[[ExportRequest], str]  # -> one line saying what was written
    options: frozenset[str] = field(default_factory=frozenset)  # ExportRequest fields it takes, besides tta


def _write_onnx(request: ExportRequest) -> str:
    from agegender.export.onnx import export_onnx

    if request.calibration_data and request.calibration is None:
        raise ConfigError("--calibration-data: no calibration faces were drawn (draw_calibration_faces)")
    report = export_onnx(request.source, request.out, quantize=request.quantize, calibration=request.calibration, tta=request.tta)
    return report.summary()


def _write_half(request: ExportRequest) -> str:
    from agegender.export.half import save_half_checkpoint

    try:
        crop = None if request.face_template is None else FaceCropSpec("aligned", request.face_template)
    except ValueError as error:  # an unknown template
        raise ConfigError(f"--face-template: {error}") from None
    written = save_half_checkpoint(request.source, request.out, crop, request.tta)
    mb = 2**20
    return f"{written}: float16 weights, {written.stat().st_size / mb:.1f} MB (from {request.source.stat().st_size / mb:.1f} MB)"


FORMATS: dict[str, ExportFormat] = {
    "onnx": ExportFormat(".onnx", _write_onnx, frozenset({"quantize", "calibration_data"})),
    "safetensors-fp16": ExportFormat(".safetensors", _write_half, frozenset({"face_template"})),
}


def export_format(name: str, request: ExportRequest) -> ExportFormat:
    """The format called `name`, once the request holds no option it does not take (one error line)."""
    if name not in FORMATS:
        raise ConfigError(f"unknown format '{name}'; choose {' or '.join(FORMATS)}")
    given = {"quantize": request.quantize is not None, "calibration_data": bool(request.calibration_data),
             "face_template": request.face_template is not None}  # fmt: skip
    for option, present in given.items():
        if present and option not in FORMATS[name].options:
            takers = [other for other, spec in FORMATS.items() if option in spec.options]
            raise ConfigError(f"--{option.replace('_', '-')} applies to --format {' or '.join(takers)}")
    if (request.quantize == "int8-static") != bool(request.calibration_data):
        raise ConfigError("--quantize int8-static and --calibration-data go together")
    return FORMATS[name]
