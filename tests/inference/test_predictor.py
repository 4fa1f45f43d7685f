"""Predictor on a checkpoint trained once per session (tests/conftest.py: trained_run)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from agegender.data.align import DEFAULT_FACE_CROP, FaceCropSpec
from agegender.data.cache import load_face
from agegender.data.images import ImageLoadError, load_rgb, resize_square
from agegender.data.samples import MAX_AGE
from agegender.inference.predictions import FacePrediction, Prediction
from agegender.inference.predictor import Predictor, bundled_model_path, count_box_fallbacks, resolve_face_crop
from agegender.inference.streams.frames import Frame
from agegender.models.checkpoint import CheckpointError


@pytest.fixture(scope="module")
def predictor(trained_run) -> Predictor:
    return Predictor.from_checkpoint(trained_run.best, runtime="torch")


def test_from_checkpoint_reads_its_own_preprocessing(predictor, trained_run):
    assert predictor.model.image_size == 32
    assert predictor.model.source == trained_run.best
    assert predictor.model.info.config == trained_run.config
    assert predictor.model.runtime == "torch" and not predictor.model.backend.model.training


def test_from_checkpoint_accepts_a_string(trained_run):
    assert Predictor.from_checkpoint(str(trained_run.best)).model.image_size == 32


def test_predict_faces_shapes_and_ranges(predictor):
    faces = np.random.default_rng(0).integers(0, 256, size=(4, 32, 32, 3), dtype=np.uint8)
    outputs = predictor.model.forward(faces)
    ages, p_female = outputs.age, outputs.p_female
    assert ages.shape == (4,) and p_female.shape == (4,)
    assert ((ages >= 0) & (ages <= MAX_AGE)).all()
    assert ((p_female >= 0) & (p_female <= 1)).all()


def test_cropped_file_uses_the_training_preprocessing(predictor, trained_run):
    # The face a --no-detect prediction sees must be exactly the face training decoded.
    path = trained_run.data.path / trained_run.data.good[3]
    prediction = predictor.predict(path, detect=False)
    assert isinstance(prediction, Prediction)
    assert prediction.source == str(path)
    (face,) = prediction.faces
    outputs = predictor.model.forward(load_face(path, 32)[None])
    ages, p_female = outputs.age, outputs.p_female
    assert face.age == pytest.approx(float(ages[0]), abs=1e-5)
    assert face.p_female == pytest.approx(float(p_female[0]), abs=1e-6)
    assert face.box is None and face.score is None


def test_predict_crops_resizes_any_size(predictor, trained_run):
    path = trained_run.data.path / trained_run.data.good[0]
    rgb = load_rgb(path)  # 48 x 48
    results = predictor.model.predictions([rgb, resize_square(rgb, 100), rgb[:20, :30]])
    assert len(results) == 3 and all(isinstance(r, FacePrediction) for r in results)
    outputs = predictor.model.forward(predictor.model.prepare(rgb)[None])
    ages, _ = outputs.age, outputs.p_female
    assert results[0].age == pytest.approx(float(ages[0]), abs=1e-5)


def test_predict_crops_of_nothing(predictor):
    assert predictor.model.predictions([]) == []


def test_unreadable_file(predictor, trained_run):
    path = trained_run.data.path / trained_run.data.zero_byte
    with pytest.raises(ImageLoadError, match="empty file"):
        predictor.predict(path, detect=False)


def test_gender_threshold():
    assert FacePrediction(age=30.0, p_female=0.5).gender == "female"
    assert FacePrediction(age=30.0, p_female=0.4999).gender == "male"


def test_corrupt_checkpoint(tmp_path):
    path = tmp_path / "broken.safetensors"
    path.write_bytes(b"\x00" * 100)
    with pytest.raises(CheckpointError, match="broken.safetensors"):
        Predictor.from_checkpoint(path)


@pytest.mark.skipif(
    not bundled_model_path().is_file(),
    reason=f"bundled model {bundled_model_path().name} has not been trained and added to src/agegender/assets yet",
)
def test_bundled_model_loads_and_predicts(trained_run):
    predictor = Predictor.from_checkpoint()
    assert predictor.model.source == bundled_model_path()
    prediction = predictor.predict(trained_run.data.path / trained_run.data.good[0], detect=False)
    assert 0 <= prediction.faces[0].age <= MAX_AGE
    meta = predictor.model.info.meta
    assert {"config", "preprocessing", "label_stats", "package_version"} <= set(meta)


@pytest.mark.skipif(not bundled_model_path().is_file(), reason="bundled model not present")
def test_bundled_model_is_the_documented_network_and_reads_the_example_photo_right():
    predictor = Predictor.from_checkpoint()
    meta = predictor.model.info.meta
    config = meta["config"]  # as recipes/build_bundled_model.sh builds it: dlib's network, no teacher
    assert (config["model"]["name"], config["data"]["image_size"], config["train"].get("teacher")) == ("dlib_resnet", 150, None)
    assert "ensemble" not in meta and meta["weights_dtype"] == "float16"
    assert predictor.model.face_crop.template == "utkface"  # the framing of its training chips (docs/every_face.md)
    assert bundled_model_path().stat().st_size < 12 * 2**20  # float16 keeps the package small
    (face,) = predictor.predict(Path(__file__).parents[2] / "examples" / "astronaut.jpg").faces
    # Eileen Collins, about 42 in the photo: the model is sure of her gender and, like every dlib run,
    # reads her younger.
    assert face.gender == "female" and face.p_female > 0.8 and 20 <= face.age <= 55


def test_predict_aligns_faces_and_marks_box_fallbacks(trained_run, stub_detector):
    aligned = Predictor.from_checkpoint(trained_run.best, detector=stub_detector, crop="aligned")
    photo = np.full((64, 64, 3), 90, np.uint8)
    prediction = aligned.predict(photo)
    assert [f.crop for f in prediction.faces] == ["box", "aligned"]  # the stub's small face has no keypoints
    assert count_box_fallbacks(prediction, aligned.model.face_crop) == 1
    big = stub_detector.detect(photo)[1]
    by_hand = aligned.model.predictions([aligned.model.crop(photo, [big], aligned.detector)[0].image])[0]
    assert prediction.faces[1].age == pytest.approx(by_hand.age, abs=1e-5)
    boxed = Predictor.from_checkpoint(trained_run.best, detector=stub_detector, crop="box")
    prediction = boxed.predict(photo)
    assert [f.crop for f in prediction.faces] == ["box", "box"] and count_box_fallbacks(prediction, boxed.model.face_crop) == 0


def test_stream_results_count_fallbacks_per_frame(trained_run, stub_detector):
    predictor = Predictor.from_checkpoint(trained_run.best, detector=stub_detector, crop="aligned")
    frames = [np.full((64, 64, 3), 90, np.uint8), np.zeros((64, 64, 3), np.uint8)]
    assert [r.box_fallbacks for r in predictor.predict_stream(frames)] == [1, 0]


def test_crop_overrides_and_margins(trained_run, stub_detector):
    stored = Predictor.from_checkpoint(trained_run.best).model.info.face_crop
    assert stored == DEFAULT_FACE_CROP  # what new UTKFace-trained checkpoints record
    assert resolve_face_crop(stored, None, None) == stored
    assert resolve_face_crop(stored, "box", None) == FaceCropSpec("box", "utkface", None)
    assert resolve_face_crop(FaceCropSpec("aligned", "utkface", 0.1), "box", None).margin is None
    assert resolve_face_crop(stored, "aligned", 0.05).margin == 0.05
    assert resolve_face_crop(stored, FaceCropSpec("aligned", "dlib_150"), None).template == "dlib_150"
    with pytest.raises(ValueError, match="unknown crop method 'tight'"):
        Predictor.from_checkpoint(trained_run.best, crop="tight")
    box = Predictor.from_checkpoint(trained_run.best, detector=stub_detector, crop="box")
    assert box.model.margin_for(box.detector) == stub_detector.margin  # the detector's, unless given
    assert Predictor.from_checkpoint(trained_run.best, detector=stub_detector, crop="box", margin=0.4).model.margin_for(stub_detector) == 0.4
    aligned = Predictor.from_checkpoint(trained_run.best, detector=stub_detector, crop="aligned", margin=0.1)
    assert aligned.model.face_crop.margin == 0.1 and aligned.model.margin_for(aligned.detector) == stub_detector.margin  # the fallback's box margin


def test_the_public_surface_is_five_names():
    public = {name for name in vars(Predictor) if not name.startswith("_")}
    assert public == {"from_checkpoint", "predict", "predict_stream", "model", "detector"}


def test_predict_takes_an_image_a_frame_a_list_or_a_folder(trained_run, stub_detector, tmp_path):
    predictor = Predictor.from_checkpoint(trained_run.best, runtime="torch", detector=stub_detector)
    files = [trained_run.data.path / name for name in trained_run.data.good[:3]]
    for file in files:
        (tmp_path / file.name).write_bytes(file.read_bytes())
    one = [predictor.predict(file) for file in files]
    assert all(isinstance(p, Prediction) and len(p.faces) == 2 and p.image is not None for p in one)
    listed = predictor.predict(files)
    folder = predictor.predict(tmp_path)
    assert [p.rows() for p in listed] == [p.rows() for p in one]  # rounded: batches of 1 and 3 differ in float noise
    by_name = {Path(p.source).name: p for p in folder}  # the folder's copies, listed in name order
    for file, listed_one in zip(files, listed):
        assert [row | {"path": ""} for row in by_name[file.name].rows()] == [row | {"path": ""} for row in listed_one.rows()]
    assert all(p.image is not None for p in listed) and all(p.image is None for p in folder)  # a folder keeps no image
    frame = Frame(load_rgb(files[0]), "camera", 7)
    assert predictor.predict(frame).source == "camera" and predictor.predict(frame).faces == one[0].faces  # the same batch of one


def test_a_prediction_draws_and_saves_the_image_it_kept(trained_run, stub_detector, tmp_path):
    predictor = Predictor.from_checkpoint(trained_run.best, runtime="torch", detector=stub_detector)
    path = trained_run.data.path / trained_run.data.good[0]
    prediction = predictor.predict(path)
    drawn = prediction.draw()
    assert drawn.shape == load_rgb(path).shape and not np.array_equal(drawn, load_rgb(path))  # boxes drawn
    saved = prediction.save(tmp_path / "out.png")
    assert np.array_equal(load_rgb(saved), drawn)
    with pytest.raises(ValueError, match="kept no image"):
        prediction.without_image().draw()
    with pytest.raises(ValueError, match="unknown image suffix"):
        prediction.save(tmp_path / "out.txt")
