"""Typed, immutable prediction results, and every way they are rendered.

A `Prediction` renders itself: `to_dict()` (nested, unrounded: the HTTP API), `rows()` (one flat,
rounded row per face: the CSV/JSON files and `predict --json`), `text_lines()` (the `predict`
console output) and `draw()` (an annotated copy of its image). The CLI, the file writers and the
server call these instead of formatting faces themselves.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

# Columns of a prediction row (Prediction.rows); a model with an age distribution adds age_low and age_high
# (its 80% interval), --age-groups adds age_group and p_age_<group>
ROW_FIELDS = ("path", "face_index", "x1", "y1", "x2", "y2", "score", "age", "gender", "p_female")
AGE_INTERVAL_LEVEL = 0.8  # the central share of the age distribution an interval holds (inference/age_interval.py)


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

    def as_tuple(self) -> tuple[int, int, int, int]:
        return (self.x1, self.y1, self.x2, self.y2)

    def scaled(self, sx: float, sy: float, width: int, height: int) -> "Box":
        """This box in an image `sx` x `sy` times the size, clipped to its `width` x `height`."""
        return Box(
            round(self.x1 * sx), round(self.y1 * sy), min(width, round(self.x2 * sx)), min(height, round(self.y2 * sy))
        )


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
    # [low, high] whole years holding the central 80% of the age distribution (inference/age_interval.py);
    # None where the model gives no distribution (a regression head, an ONNX file).
    age_interval: tuple[float, float] | None = None

    @property
    def gender(self) -> str:
        return "female" if self.p_female >= 0.5 else "male"

    @property
    def age_group(self) -> str | None:
        """The most probable group of the scheme, if one was asked for."""
        return None if self.age_groups is None else max(self.age_groups, key=self.age_groups.get)

    @property
    def label(self) -> str:
        """The short tag drawn on images: "F 34" / "M 27"."""
        return f"{'F' if self.gender == 'female' else 'M'} {self.age:.0f}"

    def to_dict(self) -> dict:
        """Unrounded; box as [x1, y1, x2, y2] or None; age_groups and crop only when set."""
        out = {
            "box": None if self.box is None else list(self.box.as_tuple()), "score": self.score,
            "age": self.age, "gender": self.gender, "p_female": self.p_female,
        }  # fmt: skip
        if self.age_groups is not None:
            out.update(age_group=self.age_group, age_groups=dict(self.age_groups))
        if self.crop is not None:
            out["crop"] = self.crop
        if self.age_interval is not None:
            out.update(age_interval=list(self.age_interval), age_interval_level=AGE_INTERVAL_LEVEL)
        return out

    def row(self, path: str, index: int) -> dict:
        """The flat, rounded row of ROW_FIELDS; box and score None (empty in CSV) when no detector ran."""
        x1, y1, x2, y2 = self.box.as_tuple() if self.box is not None else (None, None, None, None)
        row = {
            "path": path, "face_index": index, "x1": x1, "y1": y1, "x2": x2, "y2": y2,
            "score": None if self.score is None else round(self.score, 4),
            "age": round(self.age, 1), "gender": self.gender, "p_female": round(self.p_female, 4),
        }  # fmt: skip
        if self.age_interval is not None:
            row["age_low"], row["age_high"] = (round(bound) for bound in self.age_interval)
        if self.age_groups is not None:  # --age-groups: the likeliest group, then one column per group
            row["age_group"] = self.age_group
            row.update({f"p_age_{name}": round(p, 4) for name, p in self.age_groups.items()})
        return row


@dataclass(frozen=True)
class Prediction:
    """All faces found in one image, and the image itself where the predictor kept it (one image or
    arrays handed in; not a folder's images, which would fill memory), so it can draw and save itself."""

    source: str
    faces: tuple[FacePrediction, ...]
    image: np.ndarray | None = field(default=None, repr=False, compare=False)  # HxWx3 uint8 RGB

    def to_dict(self) -> dict:
        return {"source": self.source, "faces": [face.to_dict() for face in self.faces]}

    def rows(self) -> list[dict]:
        """One row per face (FacePrediction.row), in face order."""
        return [face.row(self.source, index) for index, face in enumerate(self.faces)]

    def text_lines(self) -> list[str]:
        """One console line per face, from its row: what `agegender predict` prints."""
        return [_row_text(row) for row in self.rows()]

    def scaled(self, sx: float, sy: float, width: int, height: int) -> "Prediction":
        """Boxes mapped into an image `sx` x `sy` times the size (e.g. the upload a shrunk copy came from);
        the image kept, of the other size, is dropped."""
        faces = tuple(f if f.box is None else replace(f, box=f.box.scaled(sx, sy, width, height)) for f in self.faces)
        return replace(self, faces=faces, image=None)

    def without_image(self) -> "Prediction":
        """The same faces without the image, for keeping many predictions."""
        return replace(self, image=None)

    def draw(self, rgb: np.ndarray | None = None, fps: float | None = None) -> np.ndarray:
        """A copy of the image predicted (`rgb`, or the one this prediction kept) with every boxed face
        and, if given, the frame rate."""
        from agegender.inference.draw import draw_tags

        rgb = self.image if rgb is None else rgb
        if rgb is None:
            raise ValueError(f"{self.source}: this prediction kept no image; pass the image to draw on")
        boxed = [(f.box.as_tuple(), f.label, f.gender) for f in self.faces if f.box is not None]
        return draw_tags(rgb, boxed, None if fps is None else f"{fps:.1f} fps")

    def save(self, path: Path | str, rgb: np.ndarray | None = None) -> Path:
        """The annotated image (`draw`) written as a JPEG or PNG file at `path`, atomically."""
        from PIL import Image

        from agegender.atomic_write import write_atomically

        path = Path(path)
        fmt = Image.registered_extensions().get(path.suffix.lower())
        if fmt is None:
            raise ValueError(f"{path}: unknown image suffix '{path.suffix}' (e.g. .jpg or .png)")
        image = Image.fromarray(self.draw(rgb))
        write_atomically(path, lambda temporary: image.save(temporary, format=fmt, quality=92))  # (JPEG's quality)
        return path


def _row_text(row: dict) -> str:
    where = ""
    if row["x1"] is not None:
        where = f" face {row['face_index']} at ({row['x1']},{row['y1']},{row['x2']},{row['y2']})"
    group = f", group {row['age_group']} (p {row['p_age_' + row['age_group']]:.2f})" if "age_group" in row else ""
    interval = f" ({row['age_low']}-{row['age_high']})" if "age_low" in row else ""
    return f"{row['path']}{where}: {row['gender']} (p_female {row['p_female']:.2f}), age {row['age']:.0f}{interval}{group}"
