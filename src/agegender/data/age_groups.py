"""Age groups: interval labels (Adience "25-32", FairFace "70+") and schemes of groups to predict.

A group label is read as inclusive whole years, e.g. "25-32" holds every age from 25 to 32 and "60+"
every age from 60 up. Training sees it as an interval of continuous years, [low - 0.5, high + 0.5]
(`group_interval`): ages are rounded to whole years to pick a group, so a prediction of 32.4 lies inside
"25-32". An exact age is the degenerate interval [age, age], so one loss serves both kinds of label.

A scheme is an ordered set of non-overlapping groups. Schemes may leave gaps (Adience has no 3, 7, 14,
21-24, 33-37, 44-47 or 54-59): an age in a gap belongs to the nearer neighbour, cut at the midpoint of
the gap, the older group taking an age exactly on the cut (3 -> "4-6", 35 -> "38-43", 34 -> "25-32").
The same rule places a true age, a predicted age and each 1-year bin of an age distribution.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import numpy as np

from agegender.data.samples import MAX_AGE
from agegender.errors import UserInputError


class AgeGroupError(UserInputError):
    """An age group or a scheme of groups cannot be used (unparseable, overlapping, unknown name)."""


_NUMBER = r"(\d+(?:\.\d+)?)"
_RANGE = re.compile(rf"^\(?\s*{_NUMBER}\s*(?:-|,|to)\s*{_NUMBER}\s*\)?$")
_OPEN_ENDED = re.compile(rf"^(?:{_NUMBER}\s*\+|(?:more than|over|>=?)\s*{_NUMBER})$")
_SINGLE = re.compile(rf"^\(?\s*{_NUMBER}\s*\)?$")


def parse_age_group(text: str) -> tuple[float, float]:
    """Inclusive (low, high) years of an Adience/FairFace-style age group label.

    Accepts "20-29", "(25, 32)", "0-2", "70+", "more than 70" and a lone "35";
    open-ended groups get high = inf.
    """
    cleaned = text.strip().lower()
    if match := _RANGE.match(cleaned):
        low, high = float(match.group(1)), float(match.group(2))
        if low > high:
            raise AgeGroupError(f"age group has low > high: {text!r}")
    elif match := _OPEN_ENDED.match(cleaned):
        low, high = float(match.group(1) or match.group(2)), math.inf
    elif match := _SINGLE.match(cleaned):
        low = high = float(match.group(1))
    else:
        raise AgeGroupError(f"unparseable age group: {text!r} (expected e.g. '25-32', '(25, 32)' or '60+')")
    if low > MAX_AGE:
        raise AgeGroupError(f"age group {text!r} starts above the oldest age the models predict ({MAX_AGE})")
    return low, high


def group_interval(text: str) -> tuple[float, float]:
    """[low, high] in continuous years that a group label allows (see the module docstring)."""
    low, high = parse_age_group(text)
    return low - 0.5, high + 0.5


@dataclass(frozen=True)
class AgeGroup:
    name: str
    low: float  # inclusive whole years
    high: float  # inclusive whole years; inf for an open group such as "60+"


@dataclass(frozen=True)
class AgeGroupScheme:
    """Ordered, non-overlapping groups (youngest first); see the module docstring for gaps."""

    name: str
    groups: tuple[AgeGroup, ...]

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(g.name for g in self.groups)

    def cuts(self) -> np.ndarray:
        """(G - 1,) years where one group hands over to the next: the midpoint of each gap."""
        return np.array([(a.high + b.low) / 2 for a, b in zip(self.groups, self.groups[1:])], dtype=np.float64)

    def index_of_ages(self, ages: np.ndarray) -> np.ndarray:
        """(N,) group index of each age, rounded to whole years first (nearer group inside a gap)."""
        whole_years = np.floor(np.asarray(ages, dtype=np.float64) + 0.5)
        return np.searchsorted(self.cuts(), whole_years, side="right")

    def index_of_label(self, label: str) -> int | None:
        """The group that holds every age a label allows ("(25, 32)" -> "25-32"); None when none does."""
        low, high = parse_age_group(label)
        for index, group in enumerate(self.groups):
            if group.low <= low and high <= group.high:
                return index
        return None

    def bin_groups(self, n_bins: int = MAX_AGE + 1) -> np.ndarray:
        """(n_bins,) group index of each 1-year age bin 0..n_bins-1."""
        return self.index_of_ages(np.arange(n_bins))

    def probabilities(self, age_probs: np.ndarray) -> np.ndarray:
        """(N, G) probability of each group from (N, K) probabilities over 1-year age bins."""
        age_probs = np.asarray(age_probs, dtype=np.float64)
        one_hot = np.eye(len(self.groups))[self.bin_groups(age_probs.shape[1])]  # (K, G)
        return age_probs @ one_hot


def _create_scheme(name: str, labels: list[str]) -> AgeGroupScheme:
    """A scheme from group labels; overlapping or repeated groups are an error."""
    groups = sorted((AgeGroup(label.strip(), *parse_age_group(label)) for label in labels), key=lambda g: g.low)
    if not groups:
        raise AgeGroupError(f"age-group scheme '{name}' has no groups")
    for first, second in zip(groups, groups[1:]):
        if second.low <= first.high:
            raise AgeGroupError(f"age groups '{first.name}' and '{second.name}' overlap in scheme '{name}'")
    return AgeGroupScheme(name, tuple(groups))


ADIENCE_GROUPS = ["0-2", "4-6", "8-13", "15-20", "25-32", "38-43", "48-53", "60+"]
FAIRFACE_GROUPS = ["0-2", "3-9", "10-19", "20-29", "30-39", "40-49", "50-59", "60-69", "70+"]
SCHEMES = {"adience": ADIENCE_GROUPS, "fairface": FAIRFACE_GROUPS}


def resolve_age_groups(text: str) -> AgeGroupScheme:
    """`--age-groups`: a scheme name (adience, fairface) or comma-separated groups ("0-12,13-19,20+")."""
    text = text.strip()
    if text.lower() in SCHEMES:
        return _create_scheme(text.lower(), SCHEMES[text.lower()])
    if "," not in text and not any(ch.isdigit() for ch in text):
        raise AgeGroupError(
            f"unknown age-group scheme '{text}'; choose {', '.join(SCHEMES)} or list groups like '0-12,13-19,20+'"
        )
    return _create_scheme(text, [part for part in text.split(",") if part.strip()])


def group_probabilities(scheme: AgeGroupScheme, age: np.ndarray, age_probs: np.ndarray | None) -> np.ndarray:
    """(N, G) group probabilities from a model's age distribution. A model without one (a regression
    head, an ONNX export) gets probability 1 for the group holding its predicted age."""
    if age_probs is not None:
        return scheme.probabilities(age_probs)
    return np.eye(len(scheme.groups))[scheme.index_of_ages(age)]
