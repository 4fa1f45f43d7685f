"""evaluate_photos(): photos, not crops, with a stub detector (tests/conftest.py: StubFaceDetector)."""

from __future__ import annotations

import io
import math

import numpy as np
import pytest
from rich.console import Console

from agegender.data.images import load_rgb
from agegender.evaluation import photos
from agegender.evaluation.photos import end_to_end_accuracy, evaluate_photos, largest_detection, print_detection_summary
from agegender.inference.predictor import Predictor


@pytest.fixture
def predictor(trained_run, stub_detector) -> Predictor:
    return Predictor.from_checkpoint(trained_run.best, detector=stub_detector, crop="aligned")


def by_hand(predictor: Predictor, folder) -> dict[str, tuple[float, float]]:
    """(age, P(female)) of the largest face of each photo with one, predicted one photo at a time."""
    predicted = {}
    for name in folder.genders:
        if name in folder.no_face:
            continue
        rgb = load_rgb(folder.path / name)
        crop = predictor.model.crop(rgb, [largest_detection(predictor.detector.detect(rgb))], predictor.detector)[0]
        face = predictor.model.predictions([crop.image])[0]
        predicted[name] = (face.age, face.p_female)
    return predicted


def test_photos_are_detected_scored_and_missed_faces_count_as_errors(predictor, photo_folder):
    result = evaluate_photos(predictor, photo_folder.path)
    summary, report = result.detection, result.report
    assert [s.path for s in result.undecodable] == [str(photo_folder.path / photo_folder.unreadable)]
    assert summary.images == len(photo_folder.genders) == 7
    assert summary.no_face == 1 and summary.no_face_files == photo_folder.no_face
    assert summary.several_faces == 6  # the stub finds two faces wherever it finds one
    assert summary.box_fallbacks == len(photo_folder.no_keypoints)
    assert summary.crop == {"method": "aligned", "template": "utkface", "margin": None}
    assert report.n == 6
    expected = by_hand(predictor, photo_folder)
    assert report.age_mae == pytest.approx(np.mean([abs(age - 30) for age, _ in expected.values()]), rel=1e-5)
    right = {name: (p >= 0.5) == photo_folder.genders[name] for name, (_, p) in expected.items()}
    assert report.gender_accuracy == pytest.approx(np.mean(list(right.values())))
    assert summary.end_to_end_gender_accuracy == pytest.approx(sum(right.values()) / 7)  # the missed photo: wrong
    women = [n for n, g in photo_folder.genders.items() if g == 1]
    assert summary.end_to_end_per_gender["female"] == pytest.approx(sum(right.get(n, False) for n in women) / len(women))
    assert list(report.per_gender) == ["male", "female"]


def test_batches_give_the_same_answers(predictor, photo_folder, monkeypatch):
    whole = evaluate_photos(predictor, photo_folder.path)
    monkeypatch.setattr(photos, "BATCH_FACES", 2)
    batched = evaluate_photos(predictor, photo_folder.path)
    assert batched.report == whole.report and batched.detection == whole.detection


def test_photos_are_searched_one_detector_call_per_chunk(predictor, photo_folder, monkeypatch):
    whole = evaluate_photos(predictor, photo_folder.path)
    calls = []
    detect_batch = predictor.detector.detect_batch
    monkeypatch.setattr(predictor.detector, "detect_batch", lambda frames: calls.append(len(frames)) or detect_batch(frames))
    monkeypatch.setattr(photos, "CHUNK_IMAGES", 3)
    chunked = evaluate_photos(predictor, photo_folder.path)
    assert calls == [3, 3, 1]  # the 7 readable photos (the unreadable one is skipped before detection)
    assert chunked.report == whole.report and chunked.detection == whole.detection


def test_box_crops_never_count_as_fallbacks(trained_run, stub_detector, photo_folder):
    box = Predictor.from_checkpoint(trained_run.best, detector=stub_detector, crop="box")
    summary = evaluate_photos(box, photo_folder.path).detection
    assert summary.box_fallbacks == 0 and summary.crop["method"] == "box"


def test_no_readable_photo_is_an_error(predictor, tmp_path):
    (tmp_path / "a.png").write_bytes(b"junk")
    (tmp_path / "labels.csv").write_text("filename,gender\na.png,male\n")
    with pytest.raises(ValueError, match="no readable images"):
        evaluate_photos(predictor, tmp_path)


def test_end_to_end_accuracy_counts_nan_as_wrong_and_skips_unlabelled():
    assert end_to_end_accuracy([1, 0, 1, None], np.array([0.9, 0.2, math.nan, 0.1])) == pytest.approx(2 / 3)
    assert end_to_end_accuracy([None], np.array([0.5])) is None


def test_summary_prints_the_missed_photos(predictor, photo_folder):
    buffer = io.StringIO()
    print_detection_summary(evaluate_photos(predictor, photo_folder.path).detection, Console(file=buffer, width=200))
    text = buffer.getvalue()
    assert "no face in 1" in text and "p5.png" in text and "End to end (no face = wrong)" in text
