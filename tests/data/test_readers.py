from __future__ import annotations

import os
from pathlib import Path

import pytest

from agegender.data.readers import (
    DataError,
    ReadResult,
    Skipped,
    gender_name,
    parse_utkface_name,
    read_folder,
    read_folders,
    read_labels_csv,
    read_utkface,
)
from agegender.data.samples import FaceSample


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("23_1_2_20170116174525125.jpg.chip.jpg", (23, 1, 2)),
        ("0_0_4_20170110213000000.jpg", (0, 0, 4)),
        ("116_1_0_20170120134639935.jpg.chip.jpg", (116, 1, 0)),
        ("45_0_3_20170119171516563.JPG.CHIP.JPG", (45, 0, 3)),
    ],
)
def test_parse_utkface_name(name, expected):
    assert parse_utkface_name(name) == expected


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("39_1_20170116174525125.jpg.chip.jpg", "malformed"),  # race missing
        ("24_0_1_20170116220224657 .jpg.chip.jpg", "malformed"),  # stray space
        ("61_3_20170109150557335.jpg.chip.jpg", "malformed"),  # gender 3
        ("25_0_5_20170116220224657.jpg.chip.jpg", "malformed"),  # race 5
        ("117_0_0_20170116220224657.jpg.chip.jpg", "age 117 outside 0-116"),
        ("portrait.jpg", "malformed"),
    ],
)
def test_parse_utkface_name_rejects(name, reason):
    result = parse_utkface_name(name)
    assert isinstance(result, str)
    assert reason in result


def test_read_utkface_parses_labels_and_lists_malformed(utkface):
    result = read_utkface(utkface.path)
    assert result.format == "utkface"
    names = sorted(s.path.name for s in result.samples)
    assert names == sorted(utkface.parsed)  # zero-byte and truncated files are decoded later, not here
    assert sorted(Path(s.path).name for s in result.skipped) == sorted(utkface.malformed)
    by_name = {s.path.name: s for s in result.samples}
    first, sixth = utkface.good[0], utkface.good[5]  # "1_0_0_...", "22_1_0_..."
    assert by_name[first] == FaceSample(path=utkface.path / first, age=1.0, gender=0, race=0, age_group=None)
    assert by_name[sixth] == FaceSample(path=utkface.path / sixth, age=22.0, gender=1, race=0, age_group=None)


def test_read_utkface_rejects_ages_over_116(utkface):
    (utkface.path / "117_0_0_20170116220224657.jpg.chip.jpg").write_bytes(b"x")
    result = read_utkface(utkface.path)
    reasons = {Path(s.path).name: s.reason for s in result.skipped}
    assert reasons["117_0_0_20170116220224657.jpg.chip.jpg"] == "age 117 outside 0-116"
    assert len(result.samples) == len(utkface.parsed)


def test_summary_line_counts_and_names_skipped(utkface):
    line = read_folder(utkface.path).summary_line()
    assert line.startswith(f"{len(utkface.parsed)} labelled images (utkface), 2 skipped (")
    for name in utkface.malformed:
        assert name in line


def test_summary_line_caps_the_listing():
    skipped = [Skipped(f"/d/bad_{i}.jpg", "malformed") for i in range(8)]
    line = ReadResult([], skipped).summary_line()
    assert "8 skipped" in line
    assert "bad_4.jpg" in line and "bad_5.jpg" not in line
    assert line.endswith("; ... 3 more)")


def test_summary_line_none_skipped():
    assert ReadResult([FaceSample(Path("a.jpg"), 1.0, 0)]).summary_line() == "1 labelled images (utkface), none skipped"


def test_labels_csv_parsing(labels_folder):
    result = read_folder(labels_folder.path)
    assert result.format == "labels.csv"
    by_name = {s.path.name: s for s in result.samples}
    assert len(by_name) == labels_folder.n_usable
    assert by_name["img_00.jpg"] == FaceSample(labels_folder.path / "img_00.jpg", 25.0, 0, 0, "20-29")
    assert by_name["img_01.jpg"] == FaceSample(labels_folder.path / "img_01.jpg", 31.0, 1, 1, "30-39")
    # missing values are None, never a sentinel; race names are case-insensitive
    assert by_name["img_02.jpg"] == FaceSample(labels_folder.path / "img_02.jpg", None, 1, 2, None)
    assert by_name["img_03.jpg"] == FaceSample(labels_folder.path / "img_03.jpg", 40.0, None, None, "40-49")
    # gender words
    assert [by_name[n].gender for n in ("img_06.jpg", "img_07.jpg", "img_08.jpg", "img_09.jpg", "img_10.jpg")] == [
        1, 0, 0, 1, 0,
    ]  # fmt: skip
    # race names and indices
    assert [by_name[n].race for n in ("img_06.jpg", "img_07.jpg", "img_10.jpg", "img_11.jpg")] == [3, 4, 0, 1]


def test_labels_csv_bad_rows_are_skipped_with_line_numbers(labels_folder):
    result = read_labels_csv(labels_folder.path)
    got = {Path(s.path).name: s.reason for s in result.skipped}
    assert set(got) == set(labels_folder.bad_lines.values())
    for line, name in labels_folder.bad_lines.items():
        assert got[name].startswith(f"line {line}: ")
    assert "not-a-number" in got["img_04.jpg"] or "could not convert" in got["img_04.jpg"]
    assert "not found" in got["missing.jpg"]
    assert "no age, gender or age_group" in got["img_05.jpg"]


@pytest.mark.parametrize(
    ("row", "reason"),
    [
        ("a.jpg,200,male,,0", "age 200 outside 0-116"),
        ("a.jpg,-1,male,,0", "outside"),
        ("a.jpg,30,robot,,0", "gender 'robot'"),
        ("a.jpg,30,male,,Martian", "race 'Martian'"),
        ("a.jpg,30,male,,7", "race '7'"),
        (",30,male,,0", "empty filename"),
    ],
)
def test_labels_csv_invalid_values(tmp_path, row, reason):
    (tmp_path / "a.jpg").write_bytes(b"x")
    (tmp_path / "b.jpg").write_bytes(b"x")
    (tmp_path / "labels.csv").write_text(f"filename,age,gender,age_group,race\n{row}\nb.jpg,30,male,,0\n")
    result = read_folder(tmp_path)
    assert [s.path.name for s in result.samples] == ["b.jpg"]
    assert len(result.skipped) == 1
    assert result.skipped[0].reason.startswith("line 2: ")
    assert reason in result.skipped[0].reason


def test_labels_csv_with_bom_and_only_age_group(tmp_path):
    (tmp_path / "a.jpg").write_bytes(b"x")
    (tmp_path / "labels.csv").write_text("\ufefffilename,age_group\na.jpg,\"(25, 32)\"\n", encoding="utf-8")
    result = read_folder(tmp_path)
    assert result.samples == [FaceSample(tmp_path / "a.jpg", age_group="(25, 32)")]


def test_labels_csv_without_filename_column(tmp_path):
    (tmp_path / "a.jpg").write_bytes(b"x")
    (tmp_path / "labels.csv").write_text("file,age\na.jpg,3\n")
    with pytest.raises(DataError, match=r"labels\.csv: needs a 'filename' column.*found: age, file"):
        read_folder(tmp_path)


def test_labels_csv_without_label_columns(tmp_path):
    (tmp_path / "labels.csv").write_text("filename,notes\na.jpg,hi\n")
    with pytest.raises(DataError, match="at least one of age"):
        read_folder(tmp_path)


def test_labels_csv_without_usable_rows(tmp_path):
    (tmp_path / "labels.csv").write_text("filename,age\nmissing.jpg,3\n")
    with pytest.raises(DataError, match=r"no usable labelled images \(1 skipped\)"):
        read_folder(tmp_path)


def test_missing_folder(tmp_path):
    with pytest.raises(DataError, match="nowhere: data folder not found"):
        read_folder(tmp_path / "nowhere")


def test_path_is_a_file(tmp_path):
    (tmp_path / "f.jpg").write_bytes(b"x")
    with pytest.raises(DataError, match="not a folder"):
        read_folder(tmp_path / "f.jpg")


def test_empty_folder(tmp_path):
    (tmp_path / "notes.txt").write_text("no images here")
    with pytest.raises(DataError, match="no image files found"):
        read_folder(tmp_path)


def test_folder_without_parseable_labels(tmp_path):
    for name in ("holiday.jpg", "me.png"):
        (tmp_path / name).write_bytes(b"x")
    with pytest.raises(DataError, match="no parseable labels"):
        read_folder(tmp_path)


def test_utkface_like_folder_where_every_name_is_malformed(tmp_path):
    (tmp_path / "39_1_20170116174525125.jpg.chip.jpg").write_bytes(b"x")
    with pytest.raises(DataError, match=r"no usable labelled images \(1 skipped\)"):
        read_folder(tmp_path)


def test_gender_name():
    assert [gender_name(0), gender_name(1), gender_name(None)] == ["male", "female", None]


LOOP_NAME = "20_0_0_20170101.jpg.chip.jpg"


def _unreadable_utkface_files(folder: Path) -> dict[str, str]:
    """Files named like UTKFace images that no reader may open: name -> the reason they are skipped."""
    (folder / LOOP_NAME).symlink_to(LOOP_NAME)  # a link to itself
    (folder / "21_1_0_20170101.jpg.chip.jpg").symlink_to(folder / "gone.jpg")
    os.mkfifo(folder / "22_0_1_20170101.jpg.chip.jpg")  # opening it to read would block forever
    return {
        LOOP_NAME: "cannot read file (Too many levels of symbolic links)",
        "21_1_0_20170101.jpg.chip.jpg": "broken symbolic link",
        "22_0_1_20170101.jpg.chip.jpg": "not a regular file",
    }


def test_unreadable_files_named_like_utkface_are_skipped_and_counted(utkface):
    expected = _unreadable_utkface_files(utkface.path)
    result = read_folder(utkface.path)
    got = {Path(s.path).name: s.reason for s in result.skipped}
    assert {name: got[name] for name in expected} == expected
    assert not {s.path.name for s in result.samples} & set(expected)
    assert len(result.samples) == len(utkface.parsed)  # the readable ones are all still there


def test_labels_csv_rows_outside_the_folder_are_skipped(tmp_path, face_bytes):
    folder, elsewhere = tmp_path / "data", tmp_path / "elsewhere"
    folder.mkdir(), elsewhere.mkdir()
    for target in (folder / "in.jpg", elsewhere / "x.jpg"):
        target.write_bytes(face_bytes(30, 0, seed=1))
    outside = elsewhere / "x.jpg"
    (folder / "labels.csv").write_text(f"filename,age\nin.jpg,30\n../elsewhere/x.jpg,31\n{outside},32\nsub/../in.jpg,33\n")
    result = read_labels_csv(folder)
    assert [s.path for s in result.samples] == [folder / "in.jpg"]
    reasons = [s.reason for s in result.skipped]
    assert reasons == [
        f"line 3: path '../elsewhere/x.jpg' leaves the data folder (absolute or with '..'); list files inside {folder}",
        f"line 4: path '{outside}' leaves the data folder (absolute or with '..'); list files inside {folder}",
        f"line 5: path 'sub/../in.jpg' leaves the data folder (absolute or with '..'); list files inside {folder}",
    ]


def test_labels_csv_row_naming_a_symlink_loop_is_skipped(tmp_path):
    (tmp_path / "loop.jpg").symlink_to("loop.jpg")
    (tmp_path / "labels.csv").write_text("filename,age\nloop.jpg,30\n")
    with pytest.raises(DataError, match=r"no usable labelled images \(1 skipped\)"):
        read_folder(tmp_path)
    assert read_labels_csv(tmp_path).skipped[0].reason == (
        "line 2: file listed in labels.csv is unusable: cannot read file (Too many levels of symbolic links)"
    )


def test_labels_csv_unreadable_age_group_is_skipped(tmp_path, face_bytes):
    (tmp_path / "a.jpg").write_bytes(face_bytes(25, 1, seed=2))
    (tmp_path / "labels.csv").write_text("filename,age_group\na.jpg,twenties\na.jpg,20-29\n")
    result = read_labels_csv(tmp_path)
    assert [s.age_group for s in result.samples] == ["20-29"]
    assert result.skipped[0].reason.startswith("line 2: unparseable age group: 'twenties'")


def test_labels_csv_that_is_not_text(tmp_path):
    (tmp_path / "labels.csv").write_bytes(b"filename,age\n\xff\xfe\x00\x81 binary")
    with pytest.raises(DataError, match=r"labels.csv: cannot read as CSV text \("):
        read_folder(tmp_path)


def test_labels_csv_identity_is_read(photo_folder):
    samples = read_folder(photo_folder.path).samples
    assert {s.path.name: s.identity for s in samples}["p3.png"] == "person_3"


def test_read_folders_keeps_each_folders_labels(utkface, photo_folder):
    read = read_folders([utkface.path, photo_folder.path])
    assert len(read.samples) == len(utkface.parsed) + 8  # 7 photos and broken.png (decoding, not reading, finds it broken)
    photos = [s for s in read.samples if s.path.parent == photo_folder.path]
    assert photos and all(s.race is None and s.identity for s in photos)  # no race there: left missing, never guessed
    assert read.format == "utkface + labels.csv"
    line = read.summary_line()
    assert line.startswith(f"{len(read.samples)} labelled images from 2 folders")
    assert f"{utkface.path}: {len(utkface.parsed)} labelled images (utkface)" in line
    assert "labels: age 8, gender 8, identity 8" in line and "race 0" not in line


def test_read_folders_of_one_folder_is_read_folder(utkface):
    assert read_folders([utkface.path]) == read_folder(utkface.path)


def test_read_folders_refuses_a_folder_given_twice(utkface):
    with pytest.raises(DataError, match="given twice"):
        read_folders([utkface.path, utkface.path / ".." / utkface.path.name])


def test_read_folders_names_a_bad_folder(utkface, tmp_path):
    with pytest.raises(DataError, match="nowhere: data folder not found"):
        read_folders([utkface.path, tmp_path / "nowhere"])


def test_labels_csv_split_column_is_read_and_checked(tmp_path):
    for name in ("a.jpg", "b.jpg", "c.jpg", "d.jpg"):
        (tmp_path / name).write_bytes(name.encode())
    (tmp_path / "labels.csv").write_text("filename,age,gender,split\na.jpg,30,male,Test\nb.jpg,30,male,\n"
                                         "c.jpg,30,male,holdout\nd.jpg,30,male,train\n")  # fmt: skip
    result = read_folder(tmp_path)
    assert {s.path.name: s.split for s in result.samples} == {"a.jpg": "test", "b.jpg": None, "d.jpg": "train"}
    assert "line 4: split 'holdout' is not one of train, val, test" in result.skipped[0].reason


def test_a_file_listed_twice_in_labels_csv_is_one_sample_with_its_first_labels(tmp_path):
    (tmp_path / "a.jpg").write_bytes(b"a")
    (tmp_path / "labels.csv").write_text("filename,age,gender\na.jpg,30,male\n./a.jpg,31,female\n")
    result = read_folder(tmp_path)
    assert [(s.age, s.gender) for s in result.samples] == [(30.0, 0)]
    assert "line 3: a.jpg is listed again (first at line 2)" in result.skipped[0].reason
