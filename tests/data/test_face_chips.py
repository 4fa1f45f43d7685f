from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from agegender.data.align import FaceCropSpec, crop_face
from agegender.data.face_chips import chip_name, crop_folder
from agegender.data.images import load_rgb
from agegender.data.readers import DataError, read_folder


def rows_of(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as handle:
        return list(csv.DictReader(handle))


def test_chips_of_labelled_photos_carry_every_label_column(photo_folder, stub_detector, tmp_path):
    run = crop_folder(photo_folder.path, tmp_path / "chips", stub_detector, template="dlib_150")
    labels = {row["filename"]: row for row in rows_of(tmp_path / "chips" / "labels.csv")}
    assert sorted(labels) == [f"p{i}.png.jpg" for i in range(5)]
    assert labels["p3.png.jpg"]["identity"] == "person_3" and labels["p3.png.jpg"]["age"] == "30"
    assert labels["p3.png.jpg"]["gender"] == "female" and labels["p3.png.jpg"]["source_file"].endswith("p3.png")
    assert (run.written, run.kept, run.chips) == (5, 0, 5)
    reasons = {Path(s.path).name: s.reason for s in run.skipped}
    assert reasons["p5.png"] == "no face found" and reasons["p6.png"] == "no usable keypoints"
    assert reasons["broken.png"].startswith("unreadable")
    assert {Path(row["file"]).name for row in rows_of(tmp_path / "chips" / "skipped.csv")} == set(reasons)
    assert "5 chips" in run.summary_line() and "1 no face found; 1 no usable keypoints; 1 unreadable" in run.summary_line()
    chips = read_folder(tmp_path / "chips")  # the chips are a labelled folder themselves
    assert len(chips.samples) == 5 and all(s.identity for s in chips.samples)


def test_chip_is_the_aligned_crop_prediction_makes(photo_folder, stub_detector, tmp_path):
    crop_folder(photo_folder.path, tmp_path / "chips", stub_detector, template="dlib_150")
    rgb = load_rgb(photo_folder.path / "p1.png")
    face = max(stub_detector.detect(rgb), key=lambda d: d.box.width * d.box.height)
    box = (face.box.x1, face.box.y1, face.box.x2, face.box.y2)
    expected = crop_face(rgb, box, face.keypoints, FaceCropSpec("aligned", "dlib_150"), 0.2)
    chip = np.asarray(Image.open(tmp_path / "chips" / "p1.png.jpg"), dtype=np.float64)
    assert expected.method == "aligned" and chip.shape == expected.image.shape == (150, 150, 3)
    assert np.abs(chip - expected.image).mean() < 3  # JPEG's loss only


def test_repeated_run_keeps_the_chips_and_makes_the_missing_ones(photo_folder, stub_detector, tmp_path):
    out = tmp_path / "chips"
    crop_folder(photo_folder.path, out, stub_detector)
    kept = (out / "p0.png.jpg").stat().st_mtime_ns
    (out / "p2.png.jpg").unlink()  # as if interrupted before this photo
    run = crop_folder(photo_folder.path, out, stub_detector)
    assert (run.written, run.kept) == (1, 4)
    assert (out / "p0.png.jpg").stat().st_mtime_ns == kept
    assert len(rows_of(out / "labels.csv")) == 5


def test_utkface_names_become_labels_csv_columns(utkface, stub_detector, tmp_path):
    run = crop_folder(utkface.path, tmp_path / "chips", stub_detector, template="utkface", size=64)
    chips = read_folder(tmp_path / "chips")
    original = {s.path.name: s for s in read_folder(utkface.path).samples}
    assert len(chips.samples) == run.chips == len(utkface.parsed) - 2  # the empty and the truncated file skipped
    for sample in chips.samples:
        source = original[sample.path.name]
        assert (sample.age, sample.gender, sample.race) == (source.age, source.gender, source.race)
    assert Image.open(chips.samples[0].path).size == (64, 64)
    assert len(run.unlabelled) == 2  # the malformed names


def test_another_template_needs_another_folder(photo_folder, stub_detector, tmp_path):
    crop_folder(photo_folder.path, tmp_path / "chips", stub_detector, template="dlib_150")
    with pytest.raises(DataError, match="holds chips made with"):
        crop_folder(photo_folder.path, tmp_path / "chips", stub_detector, template="utkface")


@pytest.mark.parametrize("inside", [".", "chips"])
def test_chips_are_not_written_into_the_source(photo_folder, stub_detector, inside):
    with pytest.raises(DataError, match="outside the source folder"):
        crop_folder(photo_folder.path, photo_folder.path / inside, stub_detector)


@pytest.mark.parametrize(("name", "chip"), [("a.jpg", "a.jpg"), ("b.JPEG", "b.JPEG"), ("sub/c.png", "sub/c.png.jpg")])
def test_chip_name(name, chip):
    assert chip_name(Path(name)) == Path(chip)
