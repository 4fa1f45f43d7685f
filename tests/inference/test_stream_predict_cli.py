"""The `agegender predict` verb on images, folders, a video file and a missing webcam."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"



def _save(image: Image.Image, path: Path) -> None:
    image.save(path)


@pytest.fixture()
def photo_folder(tmp_path) -> Path:
    """Readable photos in every awkward pixel format, plus files that cannot be read."""
    folder = tmp_path / "photos"
    (folder / "nested").mkdir(parents=True)
    photo = Image.open(EXAMPLES / "astronaut.jpg").convert("RGB")
    photo.save(folder / "astronaut.jpg")
    photo.convert("CMYK").save(folder / "cmyk.jpg")
    photo.convert("RGBA").save(folder / "nested" / "alpha.png")
    photo.save(folder / "nested" / "astronaut.jpg")  # same name as the one above: both annotated copies kept
    photo.convert("L").save(folder / "gray.jpg")
    Image.fromarray(np.asarray(photo.convert("L"), np.uint16) * 257).save(folder / "gray16.png")
    Image.new("RGB", (200, 150), (128, 128, 128)).save(folder / "no_face.png")
    buffer = io.BytesIO()
    photo.save(buffer, "JPEG")
    (folder / "truncated.jpg").write_bytes(buffer.getvalue()[:5000])
    (folder / "zero.jpg").write_bytes(b"")
    (folder / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x13" * 200)
    return folder


def test_folder_predict_writes_csv_and_annotated_images_and_counts_skips(tiny_checkpoint, photo_folder, tmp_path, run_cli):
    output, save_dir = tmp_path / "preds.csv", tmp_path / "annotated"
    code, _, err = run_cli("predict", photo_folder, "--model", tiny_checkpoint,
                           "--save-dir", save_dir, "--output", output)  # fmt: skip
    assert code == 0, err
    assert "7 images predicted" in err and "3 unreadable skipped" in err
    rows = list(csv.DictReader(output.open()))
    assert list(rows[0]) == ["path", "face_index", "x1", "y1", "x2", "y2", "score", "age", "gender", "p_female",
                             "age_low", "age_high"]
    names = {Path(r["path"]).name for r in rows}
    assert {"astronaut.jpg", "cmyk.jpg", "alpha.png"} <= names and "no_face.png" not in names
    assert len(list(save_dir.glob("*_pred*.jpg"))) == 7 and (save_dir / "astronaut_pred_2.jpg").is_file()


def test_no_detect_keeps_one_face_per_image_and_json(tiny_checkpoint, tmp_path, run_cli):
    output = tmp_path / "preds.json"
    code, out, err = run_cli("predict", EXAMPLES / "astronaut_face.jpg", "--no-detect",
                             "--model", tiny_checkpoint, "--json", "--output", output)  # fmt: skip
    assert code == 0, err
    rows = json.loads(out)
    assert len(rows) == 1 and rows[0]["x1"] is None and {"path", "age", "gender", "p_female"} <= set(rows[0])
    assert json.loads(output.read_text()) == rows


def test_video_in_annotated_video_out(tiny_checkpoint, tmp_path, run_cli):
    import cv2

    face = cv2.resize(np.asarray(Image.open(EXAMPLES / "astronaut_face.jpg")), (120, 120))
    video = tmp_path / "in.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 8.0, (256, 192))
    for i in range(5):
        frame = np.full((192, 256, 3), 100, np.uint8)
        frame[30:150, 20 + 15 * i : 140 + 15 * i] = face
        writer.write(frame)
    writer.release()
    output = tmp_path / "out.mp4"
    code, out, err = run_cli("predict", video, "--model", tiny_checkpoint, "--output", output, "--json")
    assert code == 0, err
    assert "5 frames" in err
    rows = json.loads(out)
    assert len(rows) >= 4 and rows[0]["path"].endswith("in.avi#0") and rows[0]["x1"] is not None
    capture = cv2.VideoCapture(str(output))
    assert capture.isOpened() and int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) == 5
    capture.release()


def test_stream_inputs_fail_clearly(monkeypatch, tiny_checkpoint, tmp_path, run_cli):
    code, _, err = run_cli("predict", "--webcam", "97", "--model", tiny_checkpoint, "--output", tmp_path / "w.mp4")
    assert code == 2 and "no camera with index 97" in err
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    code, _, err = run_cli("predict", "--webcam", "0", "--model", tiny_checkpoint)
    assert code == 2 and "--output" in err
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"not a video at all")
    code, _, err = run_cli("predict", broken, "--model", tiny_checkpoint, "--output", tmp_path / "o.mp4")
    assert code == 2 and "broken.mp4" in err
    code, _, err = run_cli("predict", EXAMPLES, "--model", tiny_checkpoint, "--detector", "nope")
    assert code == 2 and "unknown face detector" in err
