"""crop_folder(): labelled photos -> aligned face chips with the same labels (`agegender crop`).

Each photo's LARGEST face is found by a detector (BlazeFace by default) and warped onto a face
template by data.align (the same alignment prediction uses), so a model trained on the chips
sees faces framed as it will at prediction time. The chips go to OUT under the photo's relative
path (as .jpg) with a labels.csv that carries over every column of the source's labels.csv
(identity included) or, for a UTKFace folder, the labels in its file names; a `source_file`
column names the photo each chip came from.

Photos without a face, without usable keypoints (no aligned crop is possible: a box crop would be
framed differently from the other chips) or that cannot be decoded are skipped and listed in
OUT/skipped.csv. Photos are read one at a time (memory stays bounded whatever the folder's size);
a chip already in OUT is kept and not recomputed, so an interrupted run continues where it
stopped, and a finished one repeated changes nothing (OUT/crop.json records the template and size
the chips were made with; another template or size needs another folder).
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import numpy as np
from PIL import Image

from agegender.atomic_write import write_atomically
from agegender.data.align import align_face, get_template, largest_detection, usable_keypoints
from agegender.data.images import ImageLoadError, load_rgb
from agegender.data.readers import LABELS_FILE, DataError, Skipped, read_folder
from agegender.data.samples import GENDER_NAMES, RACE_NAMES, FaceSample

if TYPE_CHECKING:  # the detector is handed in (by the `crop` verb); data sits below inference
    from agegender.inference.detectors.base import FaceDetector

SKIPPED_FILE = "skipped.csv"
SETTINGS_FILE = "crop.json"
SOURCE_COLUMN = "source_file"
CHIP_QUALITY = 95  # JPEG quality of the chips: visually lossless, a quarter of PNG's size


@dataclass(frozen=True)
class CropRun:
    """What `crop_folder` did; `skipped` holds the photos without a chip and why."""

    out: Path
    written: int  # chips made by this run
    kept: int  # chips already in OUT (an earlier, interrupted or repeated run)
    skipped: list[Skipped]
    unlabelled: list[Skipped]  # the source reader's own skips (bad names, bad labels.csv rows)
    template: str
    size: int

    @property
    def chips(self) -> int:
        return self.written + self.kept

    def summary_line(self) -> str:
        reasons: dict[str, int] = {}
        for skip in self.skipped:
            reason = skip.reason.split(" (")[0]  # "unreadable (truncated ...)" counts as "unreadable"
            reasons[reason] = reasons.get(reason, 0) + 1
        why = "".join(f"; {count} {reason}" for reason, count in reasons.items())
        return (
            f"{self.chips} chips in {self.out} ({self.template} template, {self.size}x{self.size}): "
            f"{self.written} made, {self.kept} already there{why}; "
            f"{len(self.unlabelled)} source files without usable labels"
        )


def chip_name(relative: Path) -> Path:
    """The chip's path in OUT: the photo's relative path, ending in .jpg (a.png -> a.png.jpg, so a
    photo a.png beside a.jpg keeps a chip of its own)."""
    return relative if relative.suffix.lower() in (".jpg", ".jpeg") else relative.with_name(relative.name + ".jpg")


def source_label_rows(source: Path, samples: list[FaceSample]) -> dict[Path, dict[str, str]]:
    """Each sample's labels as labels.csv columns: the source's own row where it has a labels.csv
    (every column kept), else the labels read from the UTKFace file name."""
    csv_path = source / LABELS_FILE
    if csv_path.is_file():
        with csv_path.open(newline="", encoding="utf-8-sig") as handle:
            rows = {source / Path((row.get("filename") or "").strip()): row for row in csv.DictReader(handle)}
        return {s.path: dict(rows[s.path]) for s in samples}
    return {s.path: _utkface_row(s) for s in samples}


def _utkface_row(sample: FaceSample) -> dict[str, str]:
    return {
        "filename": sample.path.name,
        "age": f"{sample.age:g}" if sample.age is not None else "",
        "gender": GENDER_NAMES[sample.gender] if sample.gender is not None else "",
        "race": RACE_NAMES[sample.race] if sample.race is not None else "",
    }


def face_chip(rgb: np.ndarray, detector: FaceDetector, template_name: str, size: int) -> np.ndarray | str:
    """The aligned chip of the largest face (size x size x 3 uint8), or why there is none."""
    face = largest_detection(detector.detect(rgb))
    if face is None:
        return "no face found"
    if usable_keypoints(face.keypoints, rgb.shape[1], rgb.shape[0]) is None:
        return "no usable keypoints"
    # align_face is what data.align.crop_face runs for an aligned crop; called directly for --size
    template = dataclasses.replace(get_template(template_name), size=size)
    return align_face(rgb, face.keypoints, template)


def save_chip(chip: np.ndarray, path: Path) -> None:
    buffer = io.BytesIO()
    Image.fromarray(chip).save(buffer, "JPEG", quality=CHIP_QUALITY)
    write_atomically(path, lambda temporary: Path(temporary).write_bytes(buffer.getvalue()))


def crop_folder(
    source: Path,
    out: Path,
    detector: FaceDetector,
    *,
    template: str = "utkface",
    size: int | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> CropRun:
    """Chips of the labelled photos in `source` written to `out` (see the module docstring).
    `progress(1, photos_in_all)` is called after each photo."""
    source, out = Path(source), Path(out)
    size = size or get_template(template).size
    if out.resolve() == source.resolve() or source.resolve() in out.resolve().parents:
        raise DataError(f"{out}: the chips need a folder of their own, outside the source folder {source}")
    read = read_folder(source)
    check_settings(out, template, size)
    rows = source_label_rows(source, read.samples)
    labelled, skipped, written = [], [], 0
    for sample in read.samples:
        relative = chip_name(sample.path.relative_to(source))
        outcome = _make_chip(sample, out / relative, detector, template, size)
        if isinstance(outcome, str):
            skipped.append(Skipped(str(sample.path), outcome))
        else:
            written += outcome
            labelled.append({**rows[sample.path], "filename": relative.as_posix(), SOURCE_COLUMN: str(sample.path)})
        if progress:
            progress(1, len(read.samples))
    write_tables(out, labelled, skipped)
    return CropRun(out, written, len(labelled) - written, skipped, read.skipped, template, size)


def check_settings(out: Path, template: str, size: int) -> None:
    """OUT/crop.json records the template and size; chips kept from an earlier run must match them."""
    settings = {"template": template, "size": size}
    path = out / SETTINGS_FILE
    if path.is_file():
        try:
            earlier = json.loads(path.read_text())
        except (OSError, ValueError) as error:
            raise DataError(f"{path}: cannot read ({error}); remove it or use a new --out") from error
        if earlier != settings:
            raise DataError(f"{out}: holds chips made with {earlier}, not {settings}; use a new --out")
        return
    write_atomically(path, lambda temporary: Path(temporary).write_text(json.dumps(settings)))


def _make_chip(sample: FaceSample, path: Path, detector: FaceDetector, template: str, size: int) -> bool | str:
    """True: chip written; False: already there; text: why the photo has no chip."""
    if path.is_file():
        return False
    try:
        rgb = load_rgb(sample.path)
    except ImageLoadError as error:
        return f"unreadable ({error.reason})"
    chip = face_chip(rgb, detector, template, size)
    if isinstance(chip, str):
        return chip
    save_chip(chip, path)
    return True


def write_tables(out: Path, labelled: list[dict[str, str]], skipped: list[Skipped]) -> None:
    """OUT/labels.csv (the chips' labels) and OUT/skipped.csv (photos without a chip, and why)."""
    columns = list(dict.fromkeys(key for row in labelled for key in row)) or ["filename", SOURCE_COLUMN]
    columns.remove("filename")
    _write_csv(out / LABELS_FILE, ["filename", *columns], labelled)
    _write_csv(out / SKIPPED_FILE, ["file", "reason"], [{"file": s.path, "reason": s.reason} for s in skipped])


def _write_csv(path: Path, columns: list[str], rows: list[dict[str, str]]) -> None:
    text = io.StringIO()
    writer = csv.DictWriter(text, columns, restval="")
    writer.writeheader()
    writer.writerows(rows)
    write_atomically(path, lambda temporary: Path(temporary).write_text(text.getvalue(), encoding="utf-8"))
