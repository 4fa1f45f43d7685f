"""Drawing tags onto frames: a box with a label per face ("F 34"), an optional corner note (fps).

Knows nothing of result types (results.Prediction.draw calls it), so results import it and not
the other way round.
"""

from __future__ import annotations

from typing import Iterable

import numpy as np

FEMALE_COLOUR = (230, 80, 160)  # RGB
MALE_COLOUR = (60, 140, 255)
NOTE_COLOUR = (40, 40, 40)

Tag = tuple[tuple[int, int, int, int], str, str]  # (x1, y1, x2, y2) box, label, gender ("female" | "male")


def draw_tags(rgb: np.ndarray, tags: Iterable[Tag], note: str | None = None) -> np.ndarray:
    """A copy of `rgb` (HxWx3 uint8) with every tagged box and, if given, a note in the top-left corner."""
    import cv2

    canvas = np.ascontiguousarray(rgb).copy()
    height, width = canvas.shape[:2]
    thickness = max(1, round(min(height, width) / 300))
    font_scale = max(0.4, min(height, width) / 900)
    for (x1, y1, x2, y2), label, gender in tags:
        colour = FEMALE_COLOUR if gender == "female" else MALE_COLOUR
        cv2.rectangle(canvas, (x1, y1), (x2 - 1, y2 - 1), colour, thickness)
        _draw_text(canvas, label, (x1, y1), colour, font_scale, thickness)
    if note is not None:
        _draw_text(canvas, note, (0, 0), NOTE_COLOUR, font_scale, thickness, below=True)
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
