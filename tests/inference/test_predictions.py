"""Results render themselves: dicts for the API, rows for CSV/JSON, console lines, drawing."""

from __future__ import annotations

import pytest

from agegender.inference.predictions import ROW_FIELDS, Box, FacePrediction, Prediction

FACE = FacePrediction(33.46, 0.81234, box=Box(10, 20, 50, 60), score=0.98765, crop="aligned")


def test_to_dict_is_unrounded_and_nested():
    assert Prediction("a.jpg", (FACE,)).to_dict() == {
        "source": "a.jpg",
        "faces": [{"box": [10, 20, 50, 60], "score": 0.98765, "age": 33.46, "gender": "female", "p_female": 0.81234,
                   "crop": "aligned"}],
    }  # fmt: skip
    grouped = FacePrediction(5.0, 0.2, age_groups={"0-9": 0.9, "10+": 0.1}).to_dict()
    assert grouped["box"] is None and grouped["age_group"] == "0-9" and grouped["age_groups"] == {"0-9": 0.9, "10+": 0.1}


def test_rows_are_flat_rounded_and_numbered():
    rows = Prediction("a.jpg", (FACE, FacePrediction(70.0, 0.1))).rows()
    assert list(rows[0]) == list(ROW_FIELDS)
    assert rows[0] == {"path": "a.jpg", "face_index": 0, "x1": 10, "y1": 20, "x2": 50, "y2": 60, "score": 0.9877,
                       "age": 33.5, "gender": "female", "p_female": 0.8123}  # fmt: skip
    assert rows[1]["face_index"] == 1 and rows[1]["x1"] is None and rows[1]["score"] is None
    grouped = FacePrediction(5.0, 0.2, age_groups={"0-9": 0.9, "10+": 0.1}).row("b.jpg", 0)
    assert grouped["age_group"] == "0-9" and grouped["p_age_10+"] == 0.1


def test_text_lines_say_where_and_what():
    (line,) = Prediction("a.jpg", (FACE,)).text_lines()
    assert line == "a.jpg face 0 at (10,20,50,60): female (p_female 0.81), age 34"
    grouped = Prediction("b.jpg", (FacePrediction(5.0, 0.2, age_groups={"0-9": 0.9, "10+": 0.1}),)).text_lines()
    assert grouped == ["b.jpg: male (p_female 0.20), age 5, group 0-9 (p 0.90)"]


def test_scaled_maps_boxes_into_the_bigger_image_and_clips():
    scaled = Prediction("a.jpg", (FACE, FacePrediction(1.0, 0.5))).scaled(2.0, 1.5, 90, 200)
    assert scaled.faces[0].box == Box(20, 30, 90, 90) and scaled.faces[1].box is None
    assert scaled.faces[0].age == FACE.age and FACE.box == Box(10, 20, 50, 60)  # the original is untouched


@pytest.mark.parametrize(("p_female", "gender"), [(0.0, "male"), (0.4999, "male"), (0.5, "female"), (1.0, "female")])
def test_gender_is_female_from_one_half(p_female, gender):
    assert FacePrediction(30.0, p_female).gender == gender
