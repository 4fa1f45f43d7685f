from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest

from agegender.config import ConfigError
from agegender.data.images import load_rgb
from agegender.evaluation.evaluate import sample_split_faces
from agegender.export.onnx import export_onnx
from agegender.inference.predictor import Predictor
from agegender.models.backends import OnnxBackend, OnnxModelError

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@pytest.fixture(scope="module")
def exported(tiny_checkpoint, tmp_path_factory):
    out = tmp_path_factory.mktemp("onnx") / "tiny.onnx"
    return export_onnx(tiny_checkpoint, out)


def test_export_matches_pytorch(exported):
    assert exported.max_age_diff < 1e-3 and exported.max_p_female_diff < 1e-4
    assert "max abs difference" in exported.summary()


def test_metadata_makes_the_file_self_describing(exported, tiny_checkpoint):
    model = onnx.load(str(exported.path))
    meta = json.loads({p.key: p.value for p in model.metadata_props}["agegender"])
    assert meta["preprocessing"]["image_size"] == 32 and meta["label_stats"] == {"age_mean": 33.0}
    batch_dim = model.graph.input[0].type.tensor_type.shape.dim[0]
    assert batch_dim.dim_param == "batch"  # dynamic batch


def test_onnx_predictor_agrees_with_torch_predictor(exported, tiny_checkpoint):
    torch_predictor = Predictor.from_checkpoint(tiny_checkpoint)
    onnx_predictor = Predictor.from_checkpoint(exported.path, runtime="onnx")
    assert isinstance(onnx_predictor.model.backend, OnnxBackend) and onnx_predictor.model.image_size == 32
    faces = np.random.default_rng(1).integers(0, 256, (5, 32, 32, 3), dtype=np.uint8)
    on_torch, on_onnx = torch_predictor.model.forward(faces), onnx_predictor.model.forward(faces)
    for a, b in ((on_torch.age, on_onnx.age), (on_torch.p_female, on_onnx.p_female)):
        np.testing.assert_allclose(a, b, atol=1e-3)
    image = EXAMPLES / "astronaut.jpg"
    torch_faces, onnx_faces = torch_predictor.predict(image).faces, onnx_predictor.predict(image).faces
    assert [f.box for f in torch_faces] == [f.box for f in onnx_faces] and len(onnx_faces) == 1
    assert abs(torch_faces[0].age - onnx_faces[0].age) < 1e-3
    assert onnx_predictor.model.forward(faces[:0]).age.shape == (0,)


def test_int8_quantisation_is_close_and_smaller(tiny_checkpoint, exported, tmp_path):
    report = export_onnx(tiny_checkpoint, tmp_path / "int8.onnx", quantize="int8")
    assert report.quantized and report.bytes < exported.bytes
    assert report.max_age_diff < 1.0 and report.max_p_female_diff < 0.05
    assert OnnxBackend.from_file(report.path).predict(np.zeros((1, 32, 32, 3), np.uint8)).age.shape == (1,)


def test_int8_weights_fit_seven_bits_so_no_cpu_saturates_them(tiny_checkpoint, tmp_path):
    """x86 CPUs without VNNI sum pairs of uint8 x int8 products in saturating int16 (AVX2 vpmaddubsw):
    with 8-bit weights 2 x 255 x 127 > 32767 and the quantised model drifts on those machines only.
    7-bit weights (|w| <= 64) keep every pair inside int16 on any CPU."""
    report = export_onnx(tiny_checkpoint, tmp_path / "int8.onnx", quantize="int8")
    weights = _int8_weights(report.path)
    assert weights, "no int8 weights: nothing was quantised"
    largest = max(int(np.abs(w.astype(np.int32)).max()) for w in weights)
    assert 2 * 255 * largest <= 32767, largest


def _int8_weights(path: Path) -> list[np.ndarray]:
    graph = onnx.load(str(path)).graph
    return [onnx.numpy_helper.to_array(t) for t in graph.initializer if t.data_type == onnx.TensorProto.INT8]


def test_static_int8_is_an_integer_graph_calibrated_on_faces_and_close_to_float(trained_run, tmp_path):
    faces = sample_split_faces(Predictor.from_checkpoint(trained_run.best), trained_run.data.path, n=12)
    float_file = export_onnx(trained_run.best, tmp_path / "float.onnx")
    report = export_onnx(trained_run.best, tmp_path / "static.onnx", quantize="int8-static", calibration=faces)
    assert report.quantization == "int8-static" and "static-quantised" in report.summary()
    graph = onnx.load(str(report.path)).graph
    ops = {node.op_type for node in graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops  # activations quantised too, not only weights
    weights = _int8_weights(report.path)
    assert weights and max(int(np.abs(w.astype(np.int32)).max()) for w in weights) <= 64  # 7-bit: no CPU saturates
    backend = OnnxBackend.from_file(report.path)
    assert backend.info.meta["onnx"]["quantized"] == "int8-static"
    exact, quantised = OnnxBackend.from_file(float_file.path).predict(faces), backend.predict(faces)
    assert np.abs(exact.age - quantised.age).max() < 2.0 and np.abs(exact.p_female - quantised.p_female).max() < 0.05




def test_static_int8_needs_calibration_faces_and_only_it_takes_them(tiny_checkpoint, tmp_path):
    faces = np.zeros((2, 32, 32, 3), np.uint8)
    with pytest.raises(ConfigError, match="needs calibration faces"):
        export_onnx(tiny_checkpoint, tmp_path / "x.onnx", quantize="int8-static")
    with pytest.raises(ConfigError, match="int8-static quantisation only"):
        export_onnx(tiny_checkpoint, tmp_path / "x.onnx", quantize="int8", calibration=faces)
    assert not (tmp_path / "x.onnx").exists()


def test_cli_export_static_int8(trained_run, tmp_path, run_cli):
    out = tmp_path / "static.onnx"
    code, _, err = run_cli("export", "--model", trained_run.best, "--out", out, "--quantize", "int8-static")
    assert code == 2 and "--calibration-data" in err and not out.exists()
    code, stdout, err = run_cli("export", "--model", trained_run.best, "--out", out, "--quantize", "int8-static",
                                "--calibration-data", trained_run.data.path, "--calibration-faces", "8")  # fmt: skip
    assert code == 0, err
    assert "int8 static-quantised" in stdout and OnnxBackend.from_file(out).info.meta["onnx"]["quantized"] == "int8-static"


def test_files_that_are_not_agegender_onnx_models_give_clear_errors(tiny_checkpoint, tmp_path):
    with pytest.raises(OnnxModelError, match="not a readable ONNX model"):
        OnnxBackend.from_file(tiny_checkpoint)  # a safetensors file
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"\0\1\2 not onnx")
    with pytest.raises(OnnxModelError, match="not a readable ONNX model"):
        OnnxBackend.from_file(garbage)
    with pytest.raises(OnnxModelError, match="not found"):
        OnnxBackend.from_file(tmp_path / "missing.onnx")
    plain = onnx.helper.make_model(onnx.helper.make_graph(
        [onnx.helper.make_node("Identity", ["image"], ["age"])], "g",
        [onnx.helper.make_tensor_value_info("image", onnx.TensorProto.FLOAT, [1])],
        [onnx.helper.make_tensor_value_info("age", onnx.TensorProto.FLOAT, [1])],
    ))  # fmt: skip
    onnx.save(plain, str(tmp_path / "plain.onnx"))
    with pytest.raises(OnnxModelError, match="without agegender metadata"):
        OnnxBackend.from_file(tmp_path / "plain.onnx")
    with pytest.raises(ValueError, match="int8"):
        export_onnx(tiny_checkpoint, tmp_path / "x.onnx", quantize="int4")



def _with_metadata(source: Path, target: Path, change) -> Path:
    """A copy of an exported file whose agegender metadata went through `change` (a hostile edit)."""
    model = onnx.load(str(source))
    entry = next(p for p in model.metadata_props if p.key == "agegender")
    meta = json.loads(entry.value)
    change(meta)
    entry.value = json.dumps(meta)
    onnx.save(model, str(target))
    return target


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        (lambda m: m["preprocessing"].update(image_size=0), "field 'preprocessing.image_size': 0 is outside [16, 1024]"),
        (lambda m: m["config"]["model"].update(widths=[-5, 64]), "field 'config': model.widths: -5 is outside [1, 1024]"),
        (lambda m: m.pop("preprocessing"), "field 'preprocessing': missing"),
        (lambda m: m["onnx"].update(quantized="int3"), "field 'onnx.quantized': str 'int3' is not one of None, 'int8', 'int8-static'"),
    ],
)
def test_hostile_onnx_metadata_is_one_line_naming_the_field(exported, tmp_path, change, problem):
    path = _with_metadata(exported.path, tmp_path / "hostile.onnx", change)
    with pytest.raises(OnnxModelError) as caught:
        OnnxBackend.from_file(path)
    assert str(caught.value) == f"{path}: bad checkpoint metadata, {problem}"


def test_onnx_metadata_size_must_fit_the_graph(exported, tmp_path):
    def claim_48(meta):
        meta["preprocessing"]["image_size"] = meta["config"]["data"]["image_size"] = 48

    path = _with_metadata(exported.path, tmp_path / "resized.onnx", claim_48)
    with pytest.raises(OnnxModelError, match=r"resized.onnx: graph input shape \['batch', 3, 32, 32\] does not fit metadata image_size 48"):
        OnnxBackend.from_file(path)


def test_cli_export_and_predict_on_onnx(tiny_checkpoint, tmp_path, run_cli):
    out = tmp_path / "cli.onnx"
    code, stdout, err = run_cli("export", "--model", tiny_checkpoint, "--out", out)
    assert code == 0, err
    assert "max abs difference" in stdout and out.is_file()
    image = EXAMPLES / "astronaut.jpg"
    code, stdout, err = run_cli("predict", image, "--model", out, "--runtime", "onnx", "--json")
    assert code == 0, err
    assert len(json.loads(stdout)) == 1
    code, stdout, err = run_cli("predict", image, "--model", tiny_checkpoint, "--runtime", "onnx", "--json")
    assert code == 0 and len(json.loads(stdout)) == 1, err  # a checkpoint on onnx: through its cached ONNX file
    not_onnx = tmp_path / "not.onnx"
    not_onnx.write_bytes(b"not a protobuf")
    code, _, err = run_cli("predict", image, "--model", not_onnx)
    assert code == 2 and "not a readable ONNX model" in err
    code, _, err = run_cli("export", "--format", "tflite", "--out", tmp_path / "m.tflite")
    assert code == 2 and "choose onnx or safetensors-fp16" in err


def test_cli_export_float16_checkpoint_predicts_like_the_original(tiny_checkpoint, tmp_path, run_cli):
    out = tmp_path / "half.safetensors"
    code, stdout, err = run_cli("export", "--model", tiny_checkpoint, "--format", "safetensors-fp16", "--out", out)
    assert code == 0, err
    assert "float16 weights" in stdout and out.stat().st_size < tiny_checkpoint.stat().st_size
    face = EXAMPLES / "astronaut_face.jpg"
    original, half = (Predictor.from_checkpoint(p).predict(face, detect=False).faces[0] for p in (tiny_checkpoint, out))
    assert abs(original.age - half.age) < 0.5 and abs(original.p_female - half.p_female) < 0.01


def test_cli_export_float16_can_record_another_face_template(tiny_checkpoint, tmp_path, run_cli):
    out = tmp_path / "half.safetensors"
    code, _, err = run_cli("export", "--model", tiny_checkpoint, "--format", "safetensors-fp16", "--out", out,
                           "--face-template", "dlib_150")  # fmt: skip
    assert code == 0, err
    assert Predictor.from_checkpoint(out).model.face_crop.template == "dlib_150"
    assert Predictor.from_checkpoint(tiny_checkpoint).model.face_crop.template == "utkface"
    code, _, err = run_cli("export", "--model", tiny_checkpoint, "--format", "safetensors-fp16", "--out", out,
                           "--face-template", "nope")  # fmt: skip
    assert code == 2 and "--face-template" in err and "nope" in err


def test_cli_evaluate_on_onnx_matches_torch(tiny_checkpoint, utkface, tmp_path, run_cli):
    out = tmp_path / "eval.onnx"
    assert run_cli("export", "--model", tiny_checkpoint, "--out", out)[0] == 0
    reports = {}
    for runtime, model in (("torch", tiny_checkpoint), ("onnx", out)):
        code, stdout, err = run_cli(
            "evaluate", "--data", utkface.path, "--model", model, "--runtime", runtime, "--json"
        )
        assert code == 0, err
        reports[runtime] = json.loads(stdout)
    assert reports["onnx"]["n"] == reports["torch"]["n"] == len(utkface.parsed) - 2  # zero-byte and truncated skipped
    assert reports["onnx"]["age_mae"] == pytest.approx(reports["torch"]["age_mae"], abs=1e-3)
    assert reports["onnx"]["gender_accuracy"] == pytest.approx(reports["torch"]["gender_accuracy"])


def test_cli_export_can_make_mirror_averaging_the_files_default(tiny_checkpoint, tmp_path, run_cli):
    half, onnx = tmp_path / "half.safetensors", tmp_path / "model.onnx"
    for args in (("--format", "safetensors-fp16", "--out", half), ("--out", onnx)):
        code, _, err = run_cli("export", "--model", tiny_checkpoint, *args, "--tta")
        assert code == 0, err
    plain = Predictor.from_checkpoint(tiny_checkpoint)
    face = plain.model.prepare(load_rgb(EXAMPLES / "astronaut_face.jpg"))[None]  # (1, S, S, 3) at the model's size
    assert not plain.model.tta
    for path, runtime in ((half, "torch"), (onnx, "onnx")):
        default = Predictor.from_checkpoint(path, runtime=runtime)
        assert default.model.tta and not Predictor.from_checkpoint(path, runtime=runtime, tta=False).model.tta
        expected = Predictor.from_checkpoint(tiny_checkpoint, tta=True).model.forward(face)
        mirrored = default.model.forward(face)
        assert np.allclose(mirrored.age, expected.age, atol=0.5) and np.allclose(mirrored.p_female, expected.p_female, atol=0.01)
    both = Predictor.from_checkpoint(tiny_checkpoint, tta=True)
    assert not np.allclose(plain.model.forward(face).p_female, both.model.forward(face).p_female)  # mirroring changes it
