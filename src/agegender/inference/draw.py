"""Drawing predictions onto frames: a box and an "F 34" / "M 27" label per face, optional fps."""

from __future__ import annotations

import numpy as np

from agegender.results import FacePrediction, Prediction

FEMALE_COLOUR = (230, 80, 160)  # RGB
MALE_COLOUR = (60, 140, 255)


def face_label(face: FacePrediction) -> str:
    return f"{'F' if face.gender == 'female' else 'M'} {face.age:.0f}"


def draw_prediction(rgb: np.ndarray, prediction: Prediction, fps: float | None = None) -> np.ndarray:
    """A copy of `rgb` (HxWx3 uint8) with every boxed face and, if given, the frame rate drawn on it."""
    import cv2

    canvas = np.ascontiguousarray(rgb).copy()
    height, width = canvas.shape[:2]
    thickness = max(1, round(min(height, width) / 300))
    font_scale = max(0.4, min(height, width) / 900)
    for face in prediction.faces:
        if face.box is None:
            continue
        colour = FEMALE_COLOUR if face.gender == "female" else MALE_COLOUR
        box = face.box
        cv2.rectangle(canvas, (box.x1, box.y1), (box.x2 - 1, box.y2 - 1), colour, thickness)
        _draw_text(canvas, face_label(face), (box.x1, box.y1), colour, font_scale, thickness)
    if fps is not None:
        _draw_text(canvas, f"{fps:.1f} fps", (0, 0), (40, 40, 40), font_scale, thickness, below=True)
    return canvas


def _draw_text(canvas, text, anchor, colour, font_scale, thickness, below: bool = False) -> None:
    """White text on a filled `colour` tag above the anchor (or below it, when there is no room)."""
    import cv2

    font = cv2.FONT_HERSHEY_SIMPLEX
    (text_w, text_h), baseline = cv2.getTextSize(text, font, font_scale, thickness)
    x, y = anchor
    pad = thickness + 1
    top = y - text_h - baseline - 2 * pad
    if below or top < 0:
        top = y
    cv2.rectangle(canvas, (x, top), (x + text_w + 2 * pad, top + text_h + baseline + 2 * pad), colour, -1)
    cv2.putText(canvas, text, (x + pad, top + pad + text_h), font, font_scale, (255, 255, 255), thickness, cv2.LINE_AA)
