"""Typed, immutable prediction results."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Box:
    """A face box in pixel coordinates of the source image (x1, y1 inclusive; x2, y2 exclusive)."""

    x1: int
    y1: int
    x2: int
    y2: int

    @property
    def width(self) -> int:
        return self.x2 - self.x1

    @property
    def height(self) -> int:
        return self.y2 - self.y1


@dataclass(frozen=True)
class FacePrediction:
    """Age and gender of one face."""

    age: float
    p_female: float
    box: Box | None = None
    score: float | None = None  # detector confidence; None when no detector ran
    # Probability of each group of the requested age-group scheme (--age-groups), youngest first;
    # None when no scheme was asked for.
    age_groups: dict[str, float] | None = None
    # The crop made for this face (data.align): "aligned", or "box" (asked for, or the fallback when
    # an aligned crop had no usable keypoints); None when no detector ran.
    crop: str | None = None

    @property
    def gender(self) -> str:
        return "female" if self.p_female >= 0.5 else "male"

    @property
    def age_group(self) -> str | None:
        """The most probable group of the scheme, if one was asked for."""
        return None if self.age_groups is None else max(self.age_groups, key=self.age_groups.get)


@dataclass(frozen=True)
class Prediction:
    """All faces found in one image."""

    source: str
    faces: tuple[FacePrediction, ...]
