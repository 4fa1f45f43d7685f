"""Outputs are checked before the work starts, written atomically, and never replace an input."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import pytest

from agegender.outputs import OutputError, check_output_dir, check_output_file


def test_an_output_that_is_an_input_is_refused(tmp_path):
    photo = tmp_path / "x.csv"
    photo.write_text("keep me")
    with pytest.raises(OutputError, match="is one of the inputs"):
        check_output_file(tmp_path / "." / "x.csv", "--output", (".csv",), [photo])
    assert photo.read_text() == "keep me"


@pytest.mark.parametrize(("name", "message"), [("x.jpg", "must end in .csv or .json"), ("", "is a folder")])
def test_a_file_output_needs_its_suffix_and_must_not_be_a_folder(tmp_path, name, message):
    with pytest.raises(OutputError, match=message):
        check_output_file(tmp_path / name, "--output", (".csv", ".json"))


def test_an_unwritable_place_is_refused_without_making_anything(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(OutputError, match="is a file, not a folder"):
        check_output_file(blocker / "sub" / "x.csv", "--output", (".csv",))
    with pytest.raises(OutputError, match="is a file; give a folder"):
        check_output_dir(blocker, "--save-dir")
    check_output_dir(tmp_path / "new" / "deeper", "--out")
    assert not (tmp_path / "new").exists()  # checked, not made


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux /proc")
def test_proc_is_refused_up_front():
    with pytest.raises(OutputError, match="cannot write in /proc"):
        check_output_file(Path("/proc/x.csv"), "--output", (".csv",))


def test_predict_never_overwrites_its_input_and_refuses_before_predicting(run_cli, tiny_checkpoint, faces_dir):
    face = next(faces_dir.iterdir())
    before = face.read_bytes()
    code, out, err = run_cli("predict", faces_dir, "--model", tiny_checkpoint, "--no-detect", "--output", face)
    assert code == 2 and face.read_bytes() == before
    assert "--output" in err and "must end in .csv or .json" in err and "predicted" not in err


def test_a_file_name_that_is_not_utf8_survives_into_the_csv(run_cli, tiny_checkpoint, faces_dir, tmp_path):
    source = next(faces_dir.iterdir())
    odd = os.fsencode(faces_dir) + b"/bad_\xff.jpg"
    os.rename(source, odd)
    output = tmp_path / "rows.csv"
    code, _, err = run_cli("predict", faces_dir, "--model", tiny_checkpoint, "--no-detect", "--output", output)
    assert code == 0, err
    with open(output, newline="", encoding="utf-8", errors="surrogateescape") as handle:
        paths = [os.fsencode(row["path"]) for row in csv.DictReader(handle)]
    assert odd in paths and len(paths) == 3


def test_serve_refuses_a_port_out_of_range(run_cli):
    code, _, err = run_cli("serve", "--port", "70000")
    assert code == 2 and "--port" in err
