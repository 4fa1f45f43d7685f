"""The labelled face sample every reader produces."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

RACE_NAMES = ("White", "Black", "Asian", "Indian", "Others")
GENDER_NAMES = ("male", "female")
SPLIT_NAMES = ("train", "val", "test")
MAX_AGE = 116


@dataclass(frozen=True)
class FaceSample:
    """One labelled face image. Missing labels are None, never a sentinel."""

    path: Path
    age: float | None = None
    gender: int | None = None  # 0 = male, 1 = female
    race: int | None = None  # index into RACE_NAMES
    age_group: str | None = None  # e.g. "20-29" or "70+" (Adience-style)
    # The person shown (labels.csv's identity column): splits keep every photo of a person on one side.
    identity: str | None = None
    # The split a labels.csv's split column assigns (train / val / test); None: the seeded split decides.
    split: str | None = None
