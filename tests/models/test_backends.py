"""Inference backends behind one protocol."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from agegender.config import ConfigError
from agegender.inference.predictor import Predictor
from agegender.inference.runtime import load_backend
from agegender.models.backends import TorchBackend


def test_torch_backend_outputs_do_not_depend_on_the_batch_size(tiny_checkpoint):
    backend = load_backend(tiny_checkpoint, "torch")
    assert isinstance(backend, TorchBackend) and backend.runtime == "torch" and backend.info.image_size == 32
    faces = np.random.default_rng(0).integers(0, 256, (5, 32, 32, 3), dtype=np.uint8)
    small, large = backend.predict(faces, batch_size=2), backend.predict(faces)
    assert small.age.shape == small.p_female.shape == (5,)
    np.testing.assert_allclose(small.age, large.age, atol=1e-4)
    np.testing.assert_allclose(small.p_female, large.p_female, atol=1e-5)
    empty = backend.predict(faces[:0])
    assert empty.age.shape == (0,) and empty.age_probs is None


@pytest.mark.parametrize("runtime", ["torch", "onnx"])
def test_mirrored_outputs_are_the_means_of_each_face_and_its_mirror_image(tiny_checkpoint, runtime, tmp_path):
    backend = load_backend(tiny_checkpoint, runtime, cache_dir=tmp_path)
    faces = np.random.default_rng(1).integers(0, 256, (5, 32, 32, 3), dtype=np.uint8)
    # batch 4: two faces and their mirrors per pass, so the last pass holds one face
    both, plain, mirror = backend.predict(faces, 4, mirrored=True), backend.predict(faces), backend.predict(faces[:, :, ::-1])
    assert both.age.shape == both.p_female.shape == (5,)
    np.testing.assert_allclose(both.age, (plain.age + mirror.age) / 2, atol=1e-4)
    np.testing.assert_allclose(both.p_female, (plain.p_female + mirror.p_female) / 2, atol=1e-5)
    if plain.age_probs is not None:
        np.testing.assert_allclose(both.age_probs, (plain.age_probs + mirror.age_probs) / 2, atol=1e-5)
    assert not np.allclose(plain.p_female, mirror.p_female)  # the mirror images do change the outputs


def test_predictor_takes_any_backend(tiny_checkpoint):
    class Constant:
        """A backend that is not a model at all: every face is 40 and female."""

        runtime, source, info = "constant", tiny_checkpoint, TorchBackend.from_file(tiny_checkpoint).info

        def predict(self, faces, batch_size=256, mirrored=False):
            from agegender.models.backends import FaceOutputs

            return FaceOutputs(np.full(len(faces), 40.0), np.full(len(faces), 0.9), None)

    predictor = Predictor(Constant(), tta=True)
    (face,) = predictor.model.predictions([np.zeros((50, 40, 3), np.uint8)])
    assert (face.age, face.gender, predictor.model.runtime, predictor.model.image_size) == (40.0, "female", "constant", 32)


def test_unknown_runtime_and_an_onnx_file_on_torch_are_clear(tmp_path):
    with pytest.raises(ConfigError, match="unknown runtime 'tflite'; choose one of auto, torch, torch-bf16, onnx"):
        load_backend(None, "tflite")
    with pytest.raises(ConfigError, match="model.onnx: an ONNX file runs on onnxruntime"):
        load_backend(tmp_path / "model.onnx", "torch")


def test_importing_the_predictor_does_not_import_training_or_export():
    code = (
        "import sys, agegender.inference.predictor, agegender.cli_runs; "
        "print(sorted(m for m in sys.modules if m.startswith(('agegender.training', 'agegender.export'))))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert result.stdout.strip() == "[]"


def test_a_checkpoint_whose_network_gives_nan_is_refused_at_load(tiny_checkpoint, tmp_path, run_cli):
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    from agegender.models.backends import ModelOutputError

    weights = load_file(str(tiny_checkpoint))
    with safe_open(str(tiny_checkpoint), "pt") as opened:  # the metadata, kept as it is
        metadata = opened.metadata()
    broken = tmp_path / "nan.safetensors"
    save_file({k: v * float("nan") if v.is_floating_point() else v for k, v in weights.items()}, str(broken), metadata)
    with pytest.raises(ModelOutputError, match=f"{broken}: the model gave an age that is not a number"):
        load_backend(broken, "torch")
    with pytest.raises(ModelOutputError, match=f"{broken}: the model gave an age that is not a number"):
        load_backend(broken)  # on onnxruntime: the export's own check refuses it first
    code, _, err = run_cli("predict", tmp_path, "--model", broken, "--no-detect")
    assert code == 2 and "the file is broken" in err


@pytest.mark.parametrize(
    ("age", "p_female", "message"),
    [
        (np.array([30.0, 40.0]), np.array([0.2, 5.38]), "P(female) outside 0-1"),
        (np.array([-379817408.0, 40.0]), np.array([0.2, 0.3]), "an age outside"),
        (np.ones((2, 3)), np.array([0.2, 0.3]), "6 ages and 2 probabilities for 2 faces"),
    ],
)
def test_outputs_no_model_can_mean_are_one_error_naming_the_file(tmp_path, age, p_female, message):
    from agegender.models.backends import FaceOutputs, ModelOutputError, checked_outputs

    with pytest.raises(ModelOutputError, match=f"model.onnx: .*{message}".replace("(", "\\(").replace(")", "\\)")):
        checked_outputs(FaceOutputs(age, p_female, None), 2, tmp_path / "model.onnx")
