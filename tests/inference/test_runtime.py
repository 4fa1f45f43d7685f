"""The runtime chosen for a model file, and the ONNX file cached per checkpoint (inference.runtime)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from agegender.export.onnx import export_onnx
from agegender.inference.predictor import Predictor
from agegender.inference.runtime import load_backend
from agegender.models.backends import OnnxBackend, OnnxModelError, TorchBackend

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
FACES = np.random.default_rng(0).integers(0, 256, (6, 32, 32, 3), dtype=np.uint8)


def _cached(cache_dir):
    return sorted((cache_dir / "onnx").glob("*.onnx"))


def test_auto_runs_a_checkpoint_on_onnxruntime_with_the_same_numbers(tiny_checkpoint, tmp_path):
    backend = load_backend(tiny_checkpoint, cache_dir=tmp_path)
    assert isinstance(backend, OnnxBackend) and backend.source == tiny_checkpoint
    onnx, torch = backend.predict(FACES), load_backend(tiny_checkpoint, "torch").predict(FACES)
    np.testing.assert_allclose(onnx.age, torch.age, atol=1e-3)
    np.testing.assert_allclose(onnx.p_female, torch.p_female, atol=1e-5)
    np.testing.assert_allclose(onnx.age_probs, torch.age_probs, atol=1e-5)  # intervals and groups need it


def test_the_cached_file_is_built_once(tiny_checkpoint, tmp_path, capsys):
    load_backend(tiny_checkpoint, cache_dir=tmp_path)
    assert "exported tiny.safetensors once" in capsys.readouterr().err
    (cached,) = _cached(tmp_path)
    built = cached.stat().st_mtime_ns
    load_backend(tiny_checkpoint, "onnx", cache_dir=tmp_path)
    assert cached.stat().st_mtime_ns == built and capsys.readouterr().err == ""


def test_a_truncated_cached_file_is_rebuilt(tiny_checkpoint, tmp_path):
    load_backend(tiny_checkpoint, cache_dir=tmp_path)
    (cached,) = _cached(tmp_path)
    cached.write_bytes(cached.read_bytes()[:200])
    assert isinstance(load_backend(tiny_checkpoint, cache_dir=tmp_path), OnnxBackend)
    assert cached.stat().st_size > 200


def test_a_cached_file_of_another_checkpoint_is_rebuilt(tiny_checkpoint, trained_run, tmp_path):
    load_backend(tiny_checkpoint, cache_dir=tmp_path)
    (cached,) = _cached(tmp_path)
    export_onnx(trained_run.best, cached)  # a foreign file under this checkpoint's name
    backend = load_backend(tiny_checkpoint, cache_dir=tmp_path)
    np.testing.assert_allclose(backend.predict(FACES).age, load_backend(tiny_checkpoint, "torch").predict(FACES).age, atol=1e-3)


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_an_unwritable_cache_falls_back_to_torch_with_one_warning(tiny_checkpoint, tmp_path, capsys):
    tmp_path.chmod(0o500)
    try:
        backend = load_backend(tiny_checkpoint, cache_dir=tmp_path)
        with pytest.raises(OnnxModelError, match="cannot write the ONNX cache"):
            load_backend(tiny_checkpoint, "onnx", cache_dir=tmp_path)
    finally:
        tmp_path.chmod(0o700)
    assert isinstance(backend, TorchBackend)
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith("warning:") and "running tiny.safetensors on PyTorch" in line


def test_a_cache_path_that_is_a_file_falls_back_to_torch(tiny_checkpoint, tmp_path, capsys):
    (tmp_path / "onnx").write_text("not a folder")  # fails for root too
    assert isinstance(load_backend(tiny_checkpoint, cache_dir=tmp_path), TorchBackend)
    assert "cannot write the ONNX cache" in capsys.readouterr().err


def test_predictors_on_both_runtimes_agree_with_mirror_averaging_and_intervals(trained_run):
    crops = [face for face in FACES]
    on_torch = Predictor.from_checkpoint(trained_run.best, runtime="torch", tta=True).model.predictions(crops)
    on_onnx = Predictor.from_checkpoint(trained_run.best, tta=True).model.predictions(crops)
    for a, b in zip(on_torch, on_onnx):
        assert a.age == pytest.approx(b.age, abs=1e-3) and a.p_female == pytest.approx(b.p_female, abs=1e-5)
        assert a.age_interval == pytest.approx(b.age_interval, abs=1e-3)


def _with_int8_companion(checkpoint, folder, faces_from=None):
    """A copy of `checkpoint` in `folder` with a static int8 companion made from `faces_from` (default: it)."""
    import shutil

    from agegender.inference.runtime import int8_companion_path

    copy = folder / checkpoint.name
    shutil.copy(checkpoint, copy)
    source = faces_from or copy
    export_onnx(source, int8_companion_path(copy), quantize="int8-static", calibration=FACES)
    return copy


def test_auto_runs_a_checkpoint_on_its_static_int8_companion(tiny_checkpoint, tmp_path, capsys):
    checkpoint = _with_int8_companion(tiny_checkpoint, tmp_path)
    backend = load_backend(checkpoint, cache_dir=tmp_path / "cache")
    assert isinstance(backend, OnnxBackend) and backend.source == checkpoint
    assert backend.info.meta["onnx"]["quantized"] == "int8-static"
    assert not (tmp_path / "cache").exists() and capsys.readouterr().err == ""  # nothing exported
    exact = load_backend(checkpoint, "torch").predict(FACES)
    np.testing.assert_allclose(backend.predict(FACES).p_female, exact.p_female, atol=0.05)
    float_graph = load_backend(checkpoint, "onnx", cache_dir=tmp_path / "cache")  # --runtime onnx: float32 as before
    assert float_graph.info.meta["onnx"]["quantized"] is None
    np.testing.assert_allclose(float_graph.predict(FACES).age, exact.age, atol=1e-3)


def test_a_companion_of_another_checkpoint_is_ignored_with_one_warning(tiny_checkpoint, trained_run, tmp_path, capsys):
    from agegender.inference.runtime import int8_companion_path

    checkpoint = tmp_path / "tiny.safetensors"
    checkpoint.write_bytes(tiny_checkpoint.read_bytes())
    export_onnx(trained_run.best, int8_companion_path(checkpoint), quantize="int8-static",
                calibration=np.zeros((4, 32, 32, 3), np.uint8))  # fmt: skip
    backend = load_backend(checkpoint, cache_dir=tmp_path / "cache")
    err = capsys.readouterr().err
    assert f"warning: ignoring {int8_companion_path(checkpoint)}: not a static int8 export of tiny.safetensors" in err
    assert backend.info.meta["onnx"]["quantized"] is None  # the float32 cached file instead
    int8_companion_path(checkpoint).write_bytes(b"truncated")
    load_backend(checkpoint, cache_dir=tmp_path / "cache")
    err = capsys.readouterr().err
    assert err.startswith(f"warning: {int8_companion_path(checkpoint)}: not a readable ONNX model") and "; ignoring it" in err
    assert err.count("\n") == 1


def test_the_bundled_model_runs_on_its_shipped_int8_companion_close_to_pytorch():
    from agegender.data.images import load_rgb
    from agegender.inference.runtime import int8_companion_path
    from agegender.models.backends import bundled_model_path

    assert int8_companion_path(bundled_model_path()).is_file(), "recipes/build_bundled_model.sh int8 builds it"
    default, exact = Predictor.from_checkpoint(), Predictor.from_checkpoint(runtime="torch")
    assert default.model.backend.info.meta["onnx"]["quantized"] == "int8-static" and default.model.source == bundled_model_path()
    image = load_rgb(EXAMPLES / "astronaut.jpg")
    (fast,), (slow,) = default.predict(image).faces, exact.predict(image).faces
    assert fast.gender == slow.gender and abs(fast.age - slow.age) < 2.0 and abs(fast.p_female - slow.p_female) < 0.05


def test_torch_bf16_runs_the_bundled_model_in_bfloat16_with_float32s_answers():
    import torch

    from agegender.data.images import load_rgb

    fast, exact = Predictor.from_checkpoint(runtime="torch-bf16"), Predictor.from_checkpoint(runtime="torch")
    assert fast.model.runtime == "torch-bf16" and next(fast.model.backend.model.parameters()).dtype == torch.bfloat16
    image = load_rgb(EXAMPLES / "astronaut.jpg")
    (face,), (reference,) = fast.predict(image).faces, exact.predict(image).faces
    assert isinstance(face.age, float) and face.gender == reference.gender
    assert abs(face.age - reference.age) < 1.5 and abs(face.p_female - reference.p_female) < 0.03
    assert face.age_interval == pytest.approx(reference.age_interval, abs=2.0)


def test_an_onnx_file_is_not_run_on_torch_bf16(tiny_checkpoint, tmp_path):
    from agegender.config import ConfigError

    export_onnx(tiny_checkpoint, tmp_path / "tiny.onnx")
    with pytest.raises(ConfigError, match="runs on onnxruntime .* not torch-bf16"):
        load_backend(tmp_path / "tiny.onnx", "torch-bf16")


@pytest.mark.parametrize("native", [True, False])
def test_without_onnxruntime_auto_runs_bfloat16_only_where_the_cpu_has_it(tiny_checkpoint, monkeypatch, capsys, native):
    import agegender.inference.runtime as runtime

    monkeypatch.setattr(runtime.importlib.util, "find_spec", lambda name: None)
    monkeypatch.setattr(runtime, "native_bfloat16", lambda: native)
    backend = load_backend(tiny_checkpoint)
    assert isinstance(backend, TorchBackend) and backend.runtime == ("torch-bf16" if native else "torch")
    assert capsys.readouterr().err == ""


def test_torch_bf16_on_a_cpu_without_bfloat16_units_warns_once(tiny_checkpoint, monkeypatch, capsys):
    import agegender.inference.runtime as runtime

    monkeypatch.setattr(runtime, "native_bfloat16", lambda: False)
    assert load_backend(tiny_checkpoint, "torch-bf16").runtime == "torch-bf16"
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith("warning: this CPU has no bfloat16 units")
