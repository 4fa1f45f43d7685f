"""Age-group metrics of a scheme (Adience, FairFace, custom): exact and 1-off group accuracy, per gender
and per true group, and the confusion matrix.

The predicted group is the most probable group of the model's age distribution (group_probabilities);
a model without one is scored on the group of its predicted age. The true group is the scheme group
holding the sample's exact age (an age in a gap goes to the nearer group) or, without one, the group
holding its age_group label ("(25, 32)" scores as "25-32"); a label no group holds is left unscored.
1-off accuracy counts a prediction one group away as right, as the Adience benchmark does.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from agegender.data.age_groups import AgeGroupScheme
from agegender.data.samples import GENDER_NAMES, FaceSample

UNSCORED = -1


@dataclass(frozen=True)
class GroupAccuracy:
    n: int  # scored samples
    accuracy: float | None  # exact group
    one_off: float | None  # predicted group at most one away


@dataclass(frozen=True)
class AgeGroupReport:
    scheme: str
    groups: tuple[str, ...]
    from_distribution: bool  # False: groups of the predicted age (the model has no age distribution)
    overall: GroupAccuracy
    per_gender: dict[str, GroupAccuracy]
    per_group: dict[str, GroupAccuracy]  # by true group
    confusion: tuple[tuple[int, ...], ...]  # [true group][predicted group] counts
    unscored: int  # samples without an age or with a group label the scheme cannot hold


def true_group_indices(samples: Sequence[FaceSample], scheme: AgeGroupScheme) -> np.ndarray:
    """(N,) index of each sample's true group in `scheme`, UNSCORED where there is none."""
    indices = np.full(len(samples), UNSCORED, dtype=np.int64)
    for row, sample in enumerate(samples):
        if sample.age is not None:
            indices[row] = int(scheme.index_of_ages(np.array([sample.age]))[0])
        elif sample.age_group is not None:
            found = scheme.index_of_label(sample.age_group)
            indices[row] = UNSCORED if found is None else found
    return indices


def group_accuracy(true: np.ndarray, predicted: np.ndarray) -> GroupAccuracy:
    scored = true != UNSCORED
    if not scored.any():
        return GroupAccuracy(0, None, None)
    distance = np.abs(true[scored] - predicted[scored])
    return GroupAccuracy(int(scored.sum()), float(np.mean(distance == 0)), float(np.mean(distance <= 1)))


def confusion_matrix(true: np.ndarray, predicted: np.ndarray, n_groups: int) -> tuple[tuple[int, ...], ...]:
    counts = np.zeros((n_groups, n_groups), dtype=np.int64)
    scored = true != UNSCORED
    np.add.at(counts, (true[scored], predicted[scored]), 1)
    return tuple(tuple(int(c) for c in row) for row in counts)


def score_age_groups(
    samples: Sequence[FaceSample], group_probs: np.ndarray, scheme: AgeGroupScheme, from_distribution: bool
) -> AgeGroupReport:
    """Group metrics of (N, G) predicted group probabilities against the samples' labels."""
    if group_probs.shape != (len(samples), len(scheme.groups)):
        raise ValueError(f"need ({len(samples)}, {len(scheme.groups)}) group probabilities, got {group_probs.shape}")
    true, predicted = true_group_indices(samples, scheme), group_probs.argmax(axis=1)
    genders = np.array([UNSCORED if s.gender is None else s.gender for s in samples])
    per_gender = {
        name: group_accuracy(true[genders == g], predicted[genders == g]) for g, name in enumerate(GENDER_NAMES)
    }
    per_group = {name: group_accuracy(true[true == g], predicted[true == g]) for g, name in enumerate(scheme.names)}
    return AgeGroupReport(
        scheme=scheme.name,
        groups=scheme.names,
        from_distribution=from_distribution,
        overall=group_accuracy(true, predicted),
        per_gender={k: v for k, v in per_gender.items() if v.n},
        per_group={k: v for k, v in per_group.items() if v.n},
        confusion=confusion_matrix(true, predicted, len(scheme.groups)),
        unscored=int((true == UNSCORED).sum()),
    )
