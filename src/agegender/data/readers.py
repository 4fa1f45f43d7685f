"""Read labelled face folders into FaceSample lists: UTKFace file names or a labels.csv.

Malformed entries are skipped and reported, never fatal: UTKFace itself has a few bad names.
So are files that cannot be read (a symlink loop, a broken link, a FIFO) and labels.csv rows
whose path leaves the data folder (absolute, or with ".."): every sample a reader returns is a
regular file inside the folder, so splitting, hashing and caching never meet an unreadable one.
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from agegender.data.age_groups import parse_age_group
from agegender.data.images import list_image_files, unreadable_reason
from agegender.data.samples import GENDER_NAMES, MAX_AGE, RACE_NAMES, SPLIT_NAMES, FaceSample
from agegender.errors import UserInputError

# [age]_[gender]_[race]_[datetime].jpg, optionally with the aligned-crop suffix .chip.jpg
UTKFACE_NAME = re.compile(r"^(\d{1,3})_([01])_([0-4])_(\d+)\.jpg(\.chip\.jpg)?$", re.IGNORECASE)
UTKFACE_LOOSE = re.compile(r"^\d{1,3}_\d")  # what makes a file look like it meant to be UTKFace
LABELS_FILE = "labels.csv"
LABEL_COLUMNS = ("age", "gender", "age_group", "race")


class DataError(UserInputError):
    """A data folder cannot be used at all (missing, empty, no labels)."""


@dataclass(frozen=True)
class Skipped:
    path: str
    reason: str


@dataclass(frozen=True)
class ReadResult:
    samples: list[FaceSample]
    skipped: list[Skipped] = field(default_factory=list)
    format: str = "utkface"
    # Several folders read together (read_folders): each folder's own result, in the order given.
    parts: tuple[tuple[str, "ReadResult"], ...] = ()

    def summary_line(self) -> str:
        if self.parts:
            return self._folders_line()
        line = f"{len(self.samples)} labelled images ({self.format})"
        if not self.skipped:
            return line + ", none skipped"
        shown = "; ".join(f"{Path(s.path).name}: {s.reason}" for s in self.skipped[:5])
        more = f"; ... {len(self.skipped) - 5} more" if len(self.skipped) > 5 else ""
        return f"{line}, {len(self.skipped)} skipped ({shown}{more})"

    def label_counts(self) -> str:
        """How many samples carry each label, e.g. "age 1,000, gender 1,000, race 990"."""
        counts = {name: sum(getattr(s, name) is not None for s in self.samples) for name in (*LABEL_COLUMNS, "identity")}
        return ", ".join(f"{name} {count:,}" for name, count in counts.items() if count)

    def _folders_line(self) -> str:
        each = " | ".join(f"{folder}: {part.summary_line()}; labels: {part.label_counts()}" for folder, part in self.parts)
        return f"{len(self.samples)} labelled images from {len(self.parts)} folders: {each}"


def parse_utkface_name(name: str) -> tuple[int, int, int] | str:
    """(age, gender, race) from a UTKFace file name, or the reason it cannot be parsed."""
    match = UTKFACE_NAME.match(name)
    if not match:
        return "malformed UTKFace name (expected age_gender_race_datetime.jpg)"
    age, gender, race = (int(g) for g in match.groups()[:3])
    if age > MAX_AGE:
        return f"age {age} outside 0-{MAX_AGE}"
    return age, gender, race


class _BadRow(Exception):
    """Why one labels.csv row (or one UTKFace file) is skipped."""


def read_utkface(folder: Path) -> ReadResult:
    samples, skipped = [], []
    for path in list_image_files(folder):
        parsed = unreadable_reason(path) or parse_utkface_name(path.name)
        if isinstance(parsed, str):
            skipped.append(Skipped(str(path), parsed))
        else:
            age, gender, race = parsed
            samples.append(FaceSample(path=path, age=float(age), gender=gender, race=race))
    return ReadResult(samples, skipped, "utkface")


def _parse_gender(text: str) -> int | None:
    value = text.strip().lower()
    if value == "":
        return None
    table = {"0": 0, "m": 0, "male": 0, "man": 0, "1": 1, "f": 1, "female": 1, "woman": 1}
    if value not in table:
        raise _BadRow(f"gender '{text}' is not one of 0/1/male/female")
    return table[value]


def _parse_race(text: str) -> int | None:
    value = text.strip()
    if value == "":
        return None
    if value.isdigit() and int(value) < len(RACE_NAMES):
        return int(value)
    lowered = [name.lower() for name in RACE_NAMES]
    if value.lower() in lowered:
        return lowered.index(value.lower())
    raise _BadRow(f"race '{text}' is not 0-{len(RACE_NAMES) - 1} or one of {', '.join(RACE_NAMES)}")


def _parse_age(text: str) -> float | None:
    value = text.strip()
    if value == "":
        return None
    try:
        age = float(value)
    except ValueError:
        raise _BadRow(f"age '{value}' is not a number") from None
    if not 0 <= age <= MAX_AGE:  # NaN fails too
        raise _BadRow(f"age {value} outside 0-{MAX_AGE}")
    return age


def _parse_age_group(text: str) -> str | None:
    """The label as written, once the metrics can read it as a range ("20-29", "(25, 32)", "70+")."""
    value = text.strip()
    if value == "":
        return None
    try:
        parse_age_group(value)
    except ValueError as error:  # parse_age_group's only failure: an unreadable label
        raise _BadRow(str(error)) from None
    return value


def _parse_split(text: str) -> str | None:
    value = text.strip().lower()
    if value == "":
        return None
    if value not in SPLIT_NAMES:
        raise _BadRow(f"split '{text}' is not one of {', '.join(SPLIT_NAMES)}")
    return value


def _path_in_folder(folder: Path, name: str) -> Path:
    """folder / name, for a name that stays inside the folder (labels.csv paths are relative to it)."""
    relative = Path(name)
    if relative.is_absolute() or ".." in relative.parts:
        raise _BadRow(f"path '{name}' leaves the data folder (absolute or with '..'); list files inside {folder}")
    return folder / relative


def _row_to_sample(row: dict[str, str], folder: Path) -> FaceSample:
    name = (row.get("filename") or "").strip()
    if not name:
        raise _BadRow("empty filename")
    path = _path_in_folder(folder, name)
    reason = unreadable_reason(path)
    if reason == "file not found":
        raise _BadRow("file listed in labels.csv not found")
    if reason is not None:
        raise _BadRow(f"file listed in labels.csv is unusable: {reason}")
    sample = FaceSample(
        path=path,
        age=_parse_age(row.get("age") or ""),
        gender=_parse_gender(row.get("gender") or ""),
        race=_parse_race(row.get("race") or ""),
        age_group=_parse_age_group(row.get("age_group") or ""),
        identity=(row.get("identity") or "").strip() or None,
        split=_parse_split(row.get("split") or ""),
    )
    if sample.age is None and sample.gender is None and sample.age_group is None:
        raise _BadRow("no age, gender or age_group label")
    return sample


def read_labels_csv(folder: Path) -> ReadResult:
    csv_path = folder / LABELS_FILE
    try:
        with csv_path.open(newline="", encoding="utf-8-sig") as handle:
            return _read_label_rows(csv.DictReader(handle), folder, csv_path)
    except (OSError, UnicodeDecodeError, csv.Error) as error:  # binary, NUL bytes, a huge field, unreadable
        raise DataError(f"{csv_path}: cannot read as CSV text ({error})") from error


def _read_label_rows(reader: csv.DictReader, folder: Path, csv_path: Path) -> ReadResult:
    columns = set(reader.fieldnames or ())
    if "filename" not in columns or not columns & set(LABEL_COLUMNS):
        raise DataError(
            f"{csv_path}: needs a 'filename' column and at least one of {', '.join(LABEL_COLUMNS)}"
            f" (found: {', '.join(sorted(columns)) or 'no header'})"
        )
    samples, skipped = [], []
    first_line: dict[Path, int] = {}  # a file listed twice is one sample: its first row's labels
    for line_number, row in enumerate(reader, start=2):
        try:
            sample = _row_to_sample(row, folder)
            if sample.path in first_line:
                raise _BadRow(f"{sample.path.name} is listed again (first at line {first_line[sample.path]})")
            first_line[sample.path] = line_number
            samples.append(sample)
        except _BadRow as error:
            label = row.get("filename") or f"{LABELS_FILE} line {line_number}"
            skipped.append(Skipped(str(folder / label), f"line {line_number}: {error}"))
    return ReadResult(samples, skipped, "labels.csv")


def read_folder(folder: Path | str) -> ReadResult:
    """Auto-detect the folder's format and read its labelled samples."""
    folder = Path(folder)
    if not folder.exists():
        raise DataError(f"{folder}: data folder not found")
    if not folder.is_dir():
        raise DataError(f"{folder}: not a folder")
    if (folder / LABELS_FILE).is_file():
        result = read_labels_csv(folder)
    else:
        files = list_image_files(folder)
        if not files:
            raise DataError(f"{folder}: no image files found")
        if not any(UTKFACE_LOOSE.match(p.name) for p in files):
            raise DataError(
                f"{folder}: no parseable labels: file names are not UTKFace "
                f"(age_gender_race_datetime.jpg) and there is no {LABELS_FILE}"
            )
        result = read_utkface(folder)
    if not result.samples:
        raise DataError(f"{folder}: no usable labelled images ({len(result.skipped)} skipped)")
    return result


def as_folders(data: Path | str | Sequence[Path | str]) -> list[Path]:
    """One folder or several -> a list of folders (for functions that take either)."""
    return [Path(data)] if isinstance(data, (str, Path)) else [Path(folder) for folder in data]


def read_folders(folders: Sequence[Path | str]) -> ReadResult:
    """Several labelled folders, each read by its own reader (read_folder), as one sample list.

    A label a folder lacks stays None on its samples (LFW has no ages): losses and metrics then leave
    those samples out of that task only. One folder gives exactly read_folder's result.
    """
    if not folders:
        raise DataError("no data folder given")
    if len(folders) == 1:
        return read_folder(folders[0])
    resolved = [Path(folder).resolve() for folder in folders]
    twice = next((str(f) for f, r in zip(folders, resolved) if resolved.count(r) > 1), None)
    if twice is not None:
        raise DataError(f"{twice}: data folder given twice")
    parts = tuple((str(folder), read_folder(folder)) for folder in folders)
    samples = [sample for _, part in parts for sample in part.samples]
    skipped = [skip for _, part in parts for skip in part.skipped]
    return ReadResult(samples, skipped, " + ".join(part.format for _, part in parts), parts)


def gender_name(gender: int | None) -> str | None:
    return None if gender is None else GENDER_NAMES[gender]
