from __future__ import annotations

import numpy as np

from agegender.inference.predictions import Box, FacePrediction, Prediction


def test_labels_read_gender_letter_and_whole_years():
    assert FacePrediction(age=33.6, p_female=0.9).label == "F 34"
    assert FacePrediction(age=27.2, p_female=0.1).label == "M 27"


def test_drawing_returns_an_annotated_copy():
    frame = np.zeros((120, 160, 3), np.uint8)
    faces = (
        FacePrediction(30, 0.8, box=Box(40, 50, 90, 100), score=0.9),
        FacePrediction(30, 0.2, box=None),  # no box (--no-detect): nothing to draw
    )
    drawn = Prediction("x", faces).draw(frame, fps=12.5)
    assert frame.max() == 0  # the input is not modified
    assert drawn.shape == frame.shape and drawn.dtype == np.uint8
    assert drawn[75, 40].any() and not drawn[75, 65].any()  # box edge drawn, inside left alone
    assert drawn[5:20, 5:40].any()  # fps tag in the corner


def test_face_boxes_at_the_image_edges_do_not_fail():
    frame = np.zeros((50, 50, 3), np.uint8)
    faces = (FacePrediction(30, 0.5, box=Box(0, 0, 50, 50)),)
    assert Prediction("x", faces).draw(frame).any()
