from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from agegender.data.images import load_rgb
from agegender.inference.predictions import Box, FacePrediction
from agegender.inference.predictor import Predictor
from agegender.inference.streams.frames import Frame, ImageSource, SourceError, VideoSource, WebcamSource
from agegender.inference.streams.tracking import FaceTracker, box_iou

EXAMPLES = Path(__file__).resolve().parents[3] / "examples"


@pytest.fixture(scope="module")
def predictor(tiny_checkpoint) -> Predictor:
    return Predictor.from_checkpoint(tiny_checkpoint)


@pytest.fixture(scope="module")
def astronaut_video(tmp_path_factory) -> Path:
    """Eight 320x240 frames: the astronaut's face sliding right, written with cv2.VideoWriter."""
    import cv2

    face = load_rgb(EXAMPLES / "astronaut.jpg")[30:230, 120:320]  # (200, 200, 3)
    face = cv2.resize(face, (140, 140))
    path = tmp_path_factory.mktemp("video") / "astronaut.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (320, 240))
    for i in range(8):
        frame = np.full((240, 320, 3), 110, np.uint8)
        frame[50:190, 40 + 10 * i : 180 + 10 * i] = face
        writer.write(frame[:, :, ::-1].copy())
    writer.release()
    return path


def test_predict_finds_the_face_and_tta_averages_the_mirror(predictor):
    image = EXAMPLES / "astronaut.jpg"
    plain = predictor.predict(image)
    assert plain.source == str(image) and len(plain.faces) == 1 and plain.faces[0].box is not None
    mirrored = predictor.predict(load_rgb(image)[:, ::-1].copy()).faces[0]
    tta = Predictor(predictor.model.backend, tta=True).predict(image).faces[0]
    # The flip average lies between the original and (approximately) the mirrored face's prediction.
    low, high = sorted((plain.faces[0].age, mirrored.age))
    assert low - 0.5 <= tta.age <= high + 0.5
    assert predictor.predict(np.full((100, 100, 3), 90, np.uint8)).faces == ()  # zero faces is fine


def test_tracker_matches_by_iou_and_smooths():
    tracker = FaceTracker(smoothing=0.5)
    first = tracker.update([FacePrediction(20, 0.0, box=Box(0, 0, 10, 10)), FacePrediction(60, 1.0, box=Box(50, 50, 60, 60))])
    second = tracker.update([FacePrediction(70, 1.0, box=Box(51, 50, 61, 60)), FacePrediction(40, 0.0, box=Box(1, 0, 11, 10))])
    assert [t.track_id for t in second] == [first[1].track_id, first[0].track_id]
    assert second[0].face.age == pytest.approx(65) and second[1].face.age == pytest.approx(30)
    assert second[0].face.box == Box(51, 50, 61, 60)  # the box is the current one, not smoothed
    new = tracker.update([FacePrediction(5, 0.5, box=Box(200, 200, 220, 220))])
    assert new[0].track_id not in (first[0].track_id, first[1].track_id) and new[0].face.age == 5
    assert [t.missed for t in new] == [0, 1, 1]  # the two lost faces are held for a frame or two
    assert [t.missed for t in tracker.update([])] == [1, 2, 2]
    assert [t.missed for t in tracker.update([])] == [2]  # the others are no longer shown
    assert box_iou(Box(0, 0, 10, 10), Box(5, 0, 15, 10)) == pytest.approx(1 / 3)


def test_predict_stream_on_a_video_file_tracks_one_face(predictor, astronaut_video):
    source = VideoSource(astronaut_video)
    assert source.frame_size == (320, 240) and source.fps == pytest.approx(10.0)
    results = predictor.predict_stream(source)
    assert not isinstance(results, (list, tuple))  # a generator: frames are not accumulated
    results = list(results)
    assert len(results) == 8 and [r.frame.index for r in results] == list(range(8))
    with_face = [r for r in results if r.prediction.faces]
    assert len(with_face) >= 6
    assert len({r.track_ids[0] for r in with_face}) == 1  # the same track throughout


def test_predict_stream_accepts_plain_arrays(predictor):
    frames = (np.full((60, 80, 3), v, np.uint8) for v in (10, 20))
    results = list(predictor.predict_stream(frames, smooth=False))
    assert [r.frame.source for r in results] == ["<stream>", "<stream>"] and results[0].track_ids == ()


def test_unreadable_videos_and_missing_webcams_fail_clearly_and_fast(tmp_path):
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"\0\0\0\x18ftypmp42" + b"garbage" * 100)
    with pytest.raises(SourceError, match="broken.mp4"):
        VideoSource(bad)
    with pytest.raises(SourceError, match="not found"):
        VideoSource(tmp_path / "missing.mp4")
    start = time.perf_counter()
    with pytest.raises(SourceError, match="webcam:97"):
        WebcamSource(97, timeout=3.0)
    assert time.perf_counter() - start < 5


def test_image_source_skips_unreadable_files_through_the_callback(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "good.jpg").write_bytes((EXAMPLES / "astronaut_face.jpg").read_bytes())
    (tmp_path / "bad.jpg").write_bytes(b"nope")
    errors = []
    frames = list(ImageSource([tmp_path], on_error=errors.append))
    assert [Path(f.source).name for f in frames] == ["good.jpg"] and isinstance(frames[0], Frame)
    assert len(errors) == 1 and "bad.jpg" in str(errors[0])
