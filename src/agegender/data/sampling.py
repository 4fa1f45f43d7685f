"""data.sampling: how often each training image is drawn, so that a small dataset or a rare group (973
children among 30,000 adults) is not drowned by the rest.

Each term is KEY=WEIGHT; an image's weight is the product of the weights of every term it matches (1 where
none does), and each epoch draws as many images as the training split holds, with replacement, in
proportion to those weights. KEY is one of

    NAME           a data folder of the run, by its name (the last part of its path) or its path as given
    age:LOW-HIGH   exact ages from LOW to HIGH years inclusive (an age_group label counts when its whole
    age:LOW+       range lies inside); e.g. age:0-12, age:70+
    gender:male    or gender:female

e.g. `--set 'data.sampling=[aaf=2, age:0-12=3]'`. No terms: every image once per epoch, as before.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from agegender.config import ConfigError
from agegender.data.samples import GENDER_NAMES

_AGE_BAND = re.compile(r"^age:(\d{1,3})(?:-(\d{1,3})|(\+))$")
MAX_WEIGHT = 1000.0


@dataclass(frozen=True)
class SamplingTerm:
    text: str
    weight: float
    folder: str | None = None  # the folder as given in data.path
    age_low: float | None = None
    age_high: float | None = None
    gender: int | None = None


def _weight(text: str, raw: str) -> float:
    try:
        weight = float(raw)
    except ValueError:
        raise ConfigError(f"data.sampling: '{text}': weight '{raw}' is not a number") from None
    if not (math.isfinite(weight) and 0 <= weight <= MAX_WEIGHT):
        raise ConfigError(f"data.sampling: '{text}': weight must be in [0, {MAX_WEIGHT:g}]")
    return weight


def _folder_named(key: str, folders: Sequence[str], text: str) -> str:
    matches = [folder for folder in folders if key in (folder, Path(folder).name)]
    if not matches:
        names = ", ".join(Path(folder).name for folder in folders) or "none"
        raise ConfigError(f"data.sampling: '{text}': '{key}' is not a data folder of this run (folders: {names});"
                          " other keys are age:LOW-HIGH, age:LOW+ and gender:male|female")  # fmt: skip
    if len(matches) > 1:
        raise ConfigError(f"data.sampling: '{text}': '{key}' names {len(matches)} folders; give the path")
    return matches[0]


def parse_term(text: str, folders: Sequence[str]) -> SamplingTerm:
    """One KEY=WEIGHT term, checked against the run's folders; a bad term is one ConfigError line."""
    key, sep, raw = str(text).rpartition("=")
    key = key.strip()
    if not sep or not key:
        raise ConfigError(f"data.sampling: '{text}' must look like KEY=WEIGHT (e.g. aaf=2, age:0-12=3, gender:female=1)")
    weight = _weight(text, raw.strip())
    if key.startswith("age:"):
        band = _AGE_BAND.match(key)
        if not band:
            raise ConfigError(f"data.sampling: '{text}': age bands look like age:0-12 or age:70+")
        low, high = float(band[1]), math.inf if band[3] else float(band[2])
        if high < low:
            raise ConfigError(f"data.sampling: '{text}': the band's end is below its start")
        return SamplingTerm(text, weight, age_low=low, age_high=high)
    if key.startswith("gender:"):
        name = key.removeprefix("gender:").lower()
        if name not in GENDER_NAMES:
            raise ConfigError(f"data.sampling: '{text}': gender is male or female")
        return SamplingTerm(text, weight, gender=GENDER_NAMES.index(name))
    return SamplingTerm(text, weight, folder=_folder_named(key, folders, text))


def parse_sampling(terms: Sequence[str], folders: Sequence[str]) -> tuple[SamplingTerm, ...]:
    return tuple(parse_term(term, folders) for term in terms)


def _matches(term: SamplingTerm, folder_of: np.ndarray, age_range: np.ndarray, gender: np.ndarray) -> np.ndarray:
    if term.folder is not None:
        return folder_of == term.folder
    if term.gender is not None:
        return gender == term.gender
    with np.errstate(invalid="ignore"):  # NaN (no age label) matches no band
        return (age_range[:, 0] >= term.age_low) & (age_range[:, 1] <= term.age_high)


def sample_weights(terms: Sequence[SamplingTerm], folder_of: np.ndarray, age_range: np.ndarray,
                   gender: np.ndarray) -> np.ndarray | None:  # fmt: skip
    """(N,) float64 draw weights of the training images (None: no terms, uniform, every image once)."""
    if not terms:
        return None
    weights = np.ones(len(folder_of))
    for term in terms:
        weights[_matches(term, folder_of, age_range, gender)] *= term.weight
    if not (weights > 0).any():
        raise ConfigError("data.sampling: every training image has weight 0")
    return weights
