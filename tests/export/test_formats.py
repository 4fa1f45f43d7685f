"""The export verb's one table of formats (export.formats): each format takes only its own options."""

from __future__ import annotations

import pytest

from agegender.config import ConfigError
from agegender.export.formats import FORMATS, ExportRequest, export_format


def test_every_format_names_its_suffix_and_writer():
    assert {name: spec.suffix for name, spec in FORMATS.items()} == {"onnx": ".onnx", "safetensors-fp16": ".safetensors"}
    assert all(callable(spec.write) for spec in FORMATS.values())


@pytest.mark.parametrize(
    ("name", "changes", "message"),
    [
        ("tflite", {}, "unknown format 'tflite'; choose onnx or safetensors-fp16"),
        ("safetensors-fp16", {"quantize": "int8"}, "--quantize applies to --format onnx"),
        ("safetensors-fp16", {"calibration_data": ("faces",)}, "--calibration-data applies to --format onnx"),
        ("onnx", {"face_template": "dlib_150"}, "--face-template applies to --format safetensors-fp16"),
    ],
)
def test_an_option_of_another_format_is_one_error_line(tmp_path, name, changes, message):
    request = ExportRequest(tmp_path / "model.safetensors", tmp_path / "out", **changes)
    with pytest.raises(ConfigError) as caught:
        export_format(name, request)
    assert str(caught.value) == message


def test_cli_refuses_a_format_option_before_writing_anything(run_cli, tiny_checkpoint, tmp_path):
    out = tmp_path / "half.safetensors"
    code, _, err = run_cli("export", "--model", tiny_checkpoint, "--format", "safetensors-fp16", "--quantize", "int8", "--out", out)
    assert code == 2 and "--quantize applies to --format onnx" in err and not out.exists()
