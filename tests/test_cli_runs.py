"""Folder runs: batched across images, the same predictions as one image at a time."""

from __future__ import annotations

import numpy as np
import pytest

from agegender.cli_runs import InputError, PredictInputs, plan_inputs, predict_images
from agegender.inference.predictor import Predictor
from agegender.inference.streams.frames import Frame, chunk_frames


def _faces_close(batched, single) -> None:
    assert [f.box for f in batched.faces] == [f.box for f in single.faces]
    assert [f.crop for f in batched.faces] == [f.crop for f in single.faces]
    for a, b in zip(batched.faces, single.faces):
        assert a.age == pytest.approx(b.age, abs=1e-4) and a.p_female == pytest.approx(b.p_female, abs=1e-5)


def test_detected_folder_in_chunks_matches_one_image_at_a_time(tiny_checkpoint, photo_folder, stub_detector):
    predictor = Predictor.from_checkpoint(tiny_checkpoint, detector=stub_detector, crop="aligned")
    reports = []
    run = predict_images(predictor, [photo_folder.path], chunk_size=3, progress=lambda n, faces: reports.append((n, faces)))
    readable = sorted(photo_folder.genders)
    assert [p.source.rsplit("/", 1)[1] for p in run.predictions] == readable
    assert len(run.skipped) == 1 and photo_folder.unreadable in run.skipped[0]
    for prediction in run.predictions:
        _faces_close(prediction, predictor.predict(prediction.source))
    # Progress: the unreadable file alone, then chunks of at most 3 images with the faces found in them
    assert sum(n for n, _ in reports) == len(readable) + 1 and max(n for n, _ in reports) == 3
    assert sum(faces for _, faces in reports) == sum(len(p.faces) for p in run.predictions) == 2 * 6  # p5 is black
    assert run.box_fallbacks == 1 + 6  # the stub's small face never has keypoints; p6's big one neither


def test_cropped_folder_in_chunks_matches_one_file_at_a_time(tiny_checkpoint, faces_dir):
    predictor = Predictor.from_checkpoint(tiny_checkpoint)
    reports = []
    run = predict_images(predictor, [faces_dir], detect=False, chunk_size=2, progress=lambda n, f: reports.append((n, f)))
    assert reports == [(2, 2), (1, 1)]
    for prediction in run.predictions:
        _faces_close(prediction, predictor.predict(prediction.source, detect=False))
    assert run.face_crop is None and "3 images predicted, 3 faces, 0 unreadable skipped" == run.summary()


def test_chunks_are_bounded_in_images_and_pixels():
    frames = [Frame(np.zeros((side, side, 3), np.uint8), str(i), i) for i, side in enumerate([10, 10, 10, 30, 10])]
    assert [[f.index for f in c] for c in chunk_frames(frames, max_images=2)] == [[0, 1], [2, 3], [4]]
    # 250 pixels: three 10x10 images do not fit together, and the 30x30 one goes alone
    assert [[f.index for f in c] for c in chunk_frames(frames, 8, max_pixels=250)] == [[0, 1], [2], [3], [4]]


def test_inputs_are_checked_and_folders_listed_once(faces_dir, tmp_path):
    inputs = plan_inputs([faces_dir, faces_dir / "face_0.jpg"])
    assert [p.name for p in inputs.images] == ["face_0.jpg", "face_1.jpg", "face_2.jpg", "face_0.jpg"]
    (tmp_path / "clip.mp4").write_bytes(b"")
    assert plan_inputs([tmp_path / "clip.mp4"]) == PredictInputs(video=tmp_path / "clip.mp4")
    with pytest.raises(InputError, match="nope.jpg: input not found"):
        plan_inputs([faces_dir, tmp_path / "nope.jpg"])
    assert plan_inputs([], webcam=0).is_stream
    with pytest.raises(InputError, match="give images, folders or a video file"):
        plan_inputs([])
    with pytest.raises(InputError, match="predicted on its own"):
        plan_inputs([tmp_path / "clip.mp4"], detect=False)
    with pytest.raises(InputError, match="predicted on its own"):
        plan_inputs([faces_dir], webcam=0)
